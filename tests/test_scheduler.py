"""Stability (quiet for stable_age / expected count reached), routing of completed series,
restart survival, and the worker's export retry bookkeeping, against a real database and
a real storescp where a peer is needed."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from pydicom.data import get_testdata_file

from dicom_node.config import Settings
from dicom_node.jobs.scheduler import NodeScheduler
from dicom_node.jobs.stability import complete_stable_series, route_received_jobs, tick
from dicom_node.jobs.worker import Worker
from dicom_node.receive.series_header import SeriesHeader
from dicom_node.store import database as dbm
from dicom_node.store.database import Database
from dicom_node.store.jobs import Jobs
from dicom_node.store.schema import Export, Job, Series
from dicom_node.store.states import ExportState, JobState


@pytest.fixture
def database(tmp_path):
    d = Database(dbm.default_url(tmp_path))
    d.create_or_migrate()
    yield d
    d.close()


def _settings(tmp_path, **kw) -> Settings:
    raw = {
        "node": {"data_dir": str(tmp_path)},
        "scheduler": {"stable_age": 5.0, "tick": 0.1},
        "destinations": [
            {
                "name": "D",
                "ae_title": "D",
                "host": "127.0.0.1",
                "port": 9,
                "backoff_initial": 0.2,
                "backoff_max": 1.0,
                "max_attempts": 3,
            }
        ],
    }
    raw.update(kw)
    return Settings.model_validate(raw)


def _receive(
    d: Database, series: str, n: int, now: float, modality="CT", expected=None, derived=False
) -> int:
    sid = d.ensure_series(
        study_uid="1.2.3",
        series_uid=series,
        header=SeriesHeader(
            modality=modality,
            series_description="axial",
            calling_ae="PACS",
            derived_by_srnode=derived,
            expected_count=expected,
        ),
        via="dimse",
        now=now,
    )
    for i in range(n):
        d.record_instance(
            series_id=sid,
            sop_uid=f"{series}.{i}",
            sop_class_uid="1.2",
            transfer_syntax="1.2",
            instance_number=i,
            path="/nonexistent",
            size=1,
            calling_ae="PACS",
            via="dimse",
            now=now,
        )
    return sid


def test_series_completes_only_after_quiet_period(database):
    t0 = 1_000_000.0
    _receive(database, "1.2.3.1", 3, t0)
    assert complete_stable_series(database, 5.0, now=t0 + 4.9) == []
    _receive(database, "1.2.3.1", 0, t0)  # no-op
    (job,) = complete_stable_series(database, 5.0, now=t0 + 5.0)
    assert complete_stable_series(database, 5.0, now=t0 + 50) == []  # once only
    with database.session() as s:
        j = s.get(Job, job)
        assert j.state == JobState.RECEIVED and j.instance_count == 3


def test_a_late_instance_restarts_the_clock_and_makes_a_new_job(database):
    t0 = 1_000_000.0
    sid = _receive(database, "1.2.3.2", 2, t0)
    assert len(complete_stable_series(database, 5.0, now=t0 + 6)) == 1
    database.record_instance(
        series_id=sid,
        sop_uid="1.2.3.2.99",
        sop_class_uid="1.2",
        transfer_syntax="1.2",
        instance_number=99,
        path="/x",
        size=1,
        calling_ae="PACS",
        via="dimse",
        now=t0 + 7,
    )
    assert complete_stable_series(database, 5.0, now=t0 + 11) == []
    assert len(complete_stable_series(database, 5.0, now=t0 + 12)) == 1


def test_expected_count_completes_without_waiting(database):
    t0 = time.time()
    _receive(database, "1.2.3.3", 2, t0, expected=3)
    assert complete_stable_series(database, 60.0, now=t0) == []
    _receive(database, "1.2.3.3", 3, t0, expected=3)
    assert len(complete_stable_series(database, 60.0, now=t0)) == 1


def test_routing_queues_skips_and_never_reroutes_derived(database, tmp_path):
    s = _settings(
        tmp_path,
        routes=[
            {"name": "no-scouts", "series_description": "scout", "action": "ignore"},
            {"name": "ct", "modality": ["CT"], "model": "m.json"},
        ],
    )
    t0 = 1_000_000.0
    _receive(database, "1.2.3.4", 1, t0, modality="CT")
    _receive(database, "1.2.3.5", 1, t0, modality="US")
    _receive(database, "1.2.3.6", 1, t0, modality="CT", derived=True)
    complete_stable_series(database, 5.0, now=t0 + 10)
    queued = route_received_jobs(database, s)
    assert len(queued) == 1
    with database.session() as ss:
        jobs = {ss.get(Series, j.series_id).series_uid: j for j in ss.query(Job)}
    assert jobs["1.2.3.4"].state == JobState.QUEUED and jobs["1.2.3.4"].model == "m.json"
    assert json.loads(jobs["1.2.3.4"].destinations) == ["D"]
    assert (
        jobs["1.2.3.5"].state == JobState.SKIPPED and "no route matched" in jobs["1.2.3.5"].reason
    )
    assert (
        jobs["1.2.3.6"].state == JobState.SKIPPED and "derived by srnode" in jobs["1.2.3.6"].reason
    )


def test_completion_survives_a_restart(tmp_path):
    """Instances received before a stop are completed by the first tick after a start."""
    url = dbm.default_url(tmp_path)
    d1 = Database(url)
    d1.create_or_migrate()
    _receive(d1, "1.2.3.7", 2, time.time() - 30)
    d1.close()  # the node stops before the series went quiet long enough
    d2 = Database(url)
    d2.create_or_migrate()
    s = _settings(tmp_path)
    queued_seen: list[int] = []
    sched = NodeScheduler(d2, s, on_queued=queued_seen.extend)
    sched.start()
    try:
        deadline = time.time() + 10
        while not queued_seen and time.time() < deadline:
            time.sleep(0.05)
    finally:
        sched.stop()
        d2.close()
    assert len(queued_seen) == 1


@pytest.mark.slow
def test_export_retries_back_off_then_fail_at_the_limit(database, tmp_path):
    """Destination D (port 9, nothing listens): attempts counted, backoff, failed at 3."""
    s = _settings(tmp_path)
    sid = _receive(database, "1.2.3.8", 1, time.time() - 10)
    tick(database, s)
    f = tmp_path / "derived.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), f)
    now = time.time()
    with database.session() as ss:
        j = ss.query(Job).filter_by(series_id=sid).one()
        j.state = JobState.EXPORTING
        ss.add(
            Export(
                job_id=j.id,
                destination="D",
                state=ExportState.PENDING,
                attempts=0,
                sent_count=0,
                pending=json.dumps([str(f)]),
                updated_at=now,
            )
        )
        job_id = j.id
    w = Worker(database, s, "test-worker")
    seen_delays = []
    deadline = time.time() + 30
    while time.time() < deadline:
        w.run_once()
        (e,) = database.export_rows()
        if e["state"] != "pending":
            break
        if e["next_attempt_at"]:
            seen_delays.append(e["next_attempt_at"] - e["updated_at"])
        time.sleep(0.05)
    (e,) = database.export_rows()
    assert e["state"] == ExportState.FAILED and e["attempts"] == 3 and e["last_error"]
    assert all(0.09 <= dl <= 1.01 for dl in seen_delays) and seen_delays
    with database.session() as ss:
        j = ss.get(Job, job_id)
        assert j.state == JobState.FAILED and "D:" in j.last_error
    # srnode jobs retry puts it back with fresh attempts
    assert Jobs(database).retry(job_id)
    with database.session() as ss:
        assert ss.get(Job, job_id).state == JobState.QUEUED
