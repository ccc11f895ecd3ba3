"""Exports through an outage: retried by a time budget (not a count), on schedule across
restarts, at once when the destination answers C-ECHO again; failures named for what
happened; error text without element values. Real database, real dcmtk storescp."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicom_node.config import Settings
from dicom_node.config_routing import DimseDestination
from dicom_node.error_text import describe, scrub
from dicom_node.export import dimse
from dicom_node.jobs.scheduler import NodeScheduler
from dicom_node.jobs.stability import tick
from dicom_node.jobs.worker import Worker
from dicom_node.receive.series_header import SeriesHeader
from dicom_node.store import database as dbm
from dicom_node.store.database import Database
from dicom_node.store.jobs import Jobs
from dicom_node.store.schema import Export, Job
from dicom_node.store.states import ExportState, JobState
from tests.node_helpers import STORESCP, free_port, received, start_storescp

needs_dcmtk = pytest.mark.skipif(not shutil.which(STORESCP), reason="dcmtk storescp missing")
SECRET = "Probe^Secret"


@pytest.fixture
def database(tmp_path):
    d = Database(dbm.default_url(tmp_path))
    d.create_or_migrate()
    yield d
    d.close()


def _settings(tmp_path: Path, port: int, **dest) -> Settings:
    d = {"name": "D", "ae_title": "DEST", "host": "127.0.0.1", "port": port}
    d.update(dest)
    return Settings.model_validate(
        {"node": {"data_dir": str(tmp_path)}, "scheduler": {"tick": 0.1}, "destinations": [d]}
    )


def _exporting_job(database: Database, tmp_path: Path, settings: Settings) -> tuple[int, str]:
    """A job in ``exporting`` with one derived file pending for destination D."""
    sid = database.ensure_series(
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        header=SeriesHeader(modality="CT", calling_ae="PACS", derived_by_srnode=False),
        via="dimse",
        now=time.time() - 60,
    )
    database.record_instance(
        series_id=sid,
        sop_uid=generate_uid(),
        sop_class_uid="1.2",
        transfer_syntax="1.2",
        instance_number=1,
        path="/nonexistent",
        size=1,
        calling_ae="PACS",
        via="dimse",
        now=time.time() - 60,
    )
    tick(database, settings)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    f = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(f, enforce_file_format=True)
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
                updated_at=time.time(),
            )
        )
        return j.id, str(ds.SOPInstanceUID)


def _run_until(w: Worker, database: Database, pred, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        w.run_once()
        (e,) = database.export_rows()
        if pred(e) or time.monotonic() > deadline:
            return e
        time.sleep(0.02)


@pytest.mark.slow
@needs_dcmtk
def test_a_destination_down_past_the_old_attempt_limit_still_gets_the_series(database, tmp_path):
    """The old default gave up after 8 attempts; the budget is time, so attempt 12 still
    waits, and once the destination is back the instance goes, exactly once."""
    port = free_port()
    s = _settings(tmp_path, port, backoff_initial=0.01, backoff_max=0.05)
    job_id, sop = _exporting_job(database, tmp_path, s)
    w = Worker(database, s, "w1")
    e = _run_until(w, database, lambda e: e["attempts"] >= 12 or e["state"] != "pending")
    assert e["state"] == "pending" and e["attempts"] >= 12, e
    assert e["first_failed_at"] and e["last_error"].startswith("connection refused by")
    scp = start_storescp(tmp_path / "out", port, tmp_path / "storescp.log")
    try:
        e = _run_until(w, database, lambda e: e["state"] != "pending")
    finally:
        scp.close()
    assert e["state"] == "done" and e["sent_count"] == 1
    assert list(received(tmp_path / "out")) == [sop]
    with database.session() as ss:
        assert ss.get(Job, job_id).state == JobState.DONE


@pytest.mark.slow
def test_past_the_retry_budget_the_export_fails_visibly_and_retry_failed_requeues(
    database, tmp_path
):
    s = _settings(tmp_path, free_port(), backoff_initial=0.01, backoff_max=0.05)
    s.destinations[0].retry_for_hours = 0.5 / 3600  # half a second
    from prometheus_client import REGISTRY

    def failed_metric() -> float:
        v = REGISTRY.get_sample_value("srnode_jobs_failed_total", {"stage": "export"})
        return v or 0.0

    before = failed_metric()
    job_id, _ = _exporting_job(database, tmp_path, s)
    e = _run_until(Worker(database, s, "w1"), database, lambda e: e["state"] != "pending")
    assert e["state"] == "failed" and "gave up after" in e["last_error"]
    assert "connection refused" in e["last_error"]
    assert database.queue_counts()["failed"] == 1
    assert failed_metric() == before + 1  # /metrics counts it
    assert Jobs(database).retry_failed() == [job_id]
    assert database.queue_counts()["failed"] == 0


def test_a_restart_keeps_the_schedule(tmp_path):
    url = dbm.default_url(tmp_path)
    d1 = Database(url)
    d1.create_or_migrate()
    s = _settings(tmp_path, free_port(), backoff_initial=30, backoff_max=60)
    _exporting_job(d1, tmp_path, s)
    Worker(d1, s, "w1").run_once()
    (before,) = d1.export_rows()
    d1.close()
    assert before["attempts"] == 1 and before["next_attempt_at"] > time.time() + 10
    d2 = Database(url)  # the node restarts
    d2.create_or_migrate()
    try:
        assert Worker(d2, s, "w2").run_once() is False  # not due yet: nothing to do
        (after,) = d2.export_rows()
    finally:
        d2.close()
    for key in ("attempts", "next_attempt_at", "first_failed_at", "state"):
        assert after[key] == before[key], key


@needs_dcmtk
def test_a_destination_that_answers_c_echo_again_is_retried_at_once(database, tmp_path, caplog):
    port = free_port()
    s = _settings(tmp_path, port, backoff_initial=600, backoff_max=600, probe_every=0.01)
    _exporting_job(database, tmp_path, s)
    w = Worker(database, s, "w1")
    w.run_once()
    (e,) = database.export_rows()
    assert e["state"] == "pending" and e["next_attempt_at"] > time.time() + 200
    sched = NodeScheduler(database, s)
    assert sched.probe_destinations() == 0  # still down
    scp = start_storescp(tmp_path / "out", port, tmp_path / "storescp.log")
    try:
        time.sleep(0.02)
        with caplog.at_level(logging.INFO):
            assert sched.probe_destinations() == 1
        assert "D answers again: 1 export(s) retried now" in caplog.text
        assert w.run_once() is True
    finally:
        scp.close()
    (e,) = database.export_rows()
    assert e["state"] == "done" and e["sent_count"] == 1


def _dest(port: int) -> DimseDestination:
    return DimseDestination(name="D", ae_title="DEST", host="127.0.0.1", port=port)


def _ct() -> list[str]:
    return [get_testdata_file("CT_small.dcm")]


@pytest.mark.slow
def test_export_failures_are_named_for_what_happened(tmp_path, caplog):
    # connection refused, with no ERROR lines of pynetdicom's own
    with caplog.at_level(logging.DEBUG):
        res = dimse.send(_dest(free_port()), _ct(), "SRNODE", timeout=1)
    assert res.failed[0][1].startswith("connection refused by 127.0.0.1:")
    assert not [r for r in caplog.records if r.name.startswith("pynetdicom")]
    # a peer that accepts the connection and never answers: timeout
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        res = dimse.send(_dest(silent.getsockname()[1]), _ct(), "SRNODE", timeout=1)
    assert res.failed[0][1] == "no answer to the association request within 1 s (timeout)"
    # a peer that closes the connection: aborted
    with socket.socket() as closing:
        closing.bind(("127.0.0.1", 0))
        closing.listen(4)

        def close_each() -> None:
            c, _ = closing.accept()
            c.recv(10)
            c.close()

        threading.Thread(target=close_each, daemon=True).start()
        res = dimse.send(_dest(closing.getsockname()[1]), _ct(), "SRNODE", timeout=5)
    assert res.failed[0][1] == "association aborted by DEST during negotiation"


def test_a_rejected_association_says_why(tmp_path):
    from dicom_node.receive.ingest import Ingestor
    from dicom_node.receive.scp import StorageSCP
    from dicom_node.spool import Spool

    d = Database(dbm.default_url(tmp_path))
    d.create_or_migrate()
    s = Settings.model_validate({"node": {"data_dir": str(tmp_path), "port": free_port()}})
    s.node.host = "127.0.0.1"
    scp = StorageSCP(s, Ingestor(d, Spool(tmp_path / "spool"), settings=s))
    _, port = scp.start()
    try:
        res = dimse.send(_dest(port), _ct(), "NOBODY", timeout=5)
    finally:
        scp.stop(drain=1)
        d.close()
    assert res.failed[0][1] == (
        "association rejected by DEST (permanent, service user: calling ae title not recognised)"
    )


def _wrong_vr_file(path: Path) -> str:
    """CT_small with PatientName encoded as FD (12 bytes): pydicom fails on reading it,
    with the value in its message."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    at = raw.index(b"\x10\x00\x10\x00PN")
    (length,) = struct.unpack_from("<H", raw, at + 6)
    elem = struct.pack("<HH2sH", 0x0010, 0x0010, b"FD", len(SECRET)) + SECRET.encode()
    path.write_bytes(raw[:at] + elem + raw[at + 8 + length :])
    return str(ds.SOPInstanceUID)


def _engine_settings(tmp_path: Path) -> Settings:
    from tests.onnx_models import write_test_model

    card = write_test_model(tmp_path / "models")
    return Settings.model_validate(
        {
            "node": {"data_dir": str(tmp_path)},
            "scheduler": {"tick": 0.1, "stable_age": 1, "job_retry_delay": 0},
            "engine": {"backend": "onnxruntime", "threads": 1, "model_dirs": [str(card.parent)]},
            "routes": [{"name": "all", "model": str(card)}],
            "destinations": [{"name": "D", "ae_title": "D", "host": "127.0.0.1", "port": 9}],
        }
    )


def test_a_failing_instance_records_type_tag_and_uid_never_the_value(database, tmp_path, caplog):
    """An instance stored before the receive checks existed (or by a peer path that skips
    them) fails in the worker: the job's error and the log lines name the exception type
    and the SOPInstanceUID, never the patient name pydicom quotes."""
    s = _engine_settings(tmp_path)
    sid = database.ensure_series(
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        header=SeriesHeader(modality="CT", calling_ae="PACS", derived_by_srnode=False),
        via="dimse",
        now=time.time() - 60,
    )
    f = tmp_path / "in.dcm"
    sop = _wrong_vr_file(f)
    database.record_instance(
        series_id=sid,
        sop_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1",
        instance_number=1,
        path=str(f),
        size=f.stat().st_size,
        calling_ae="PACS",
        via="dimse",
        now=time.time() - 60,
    )
    tick(database, s)
    w = Worker(database, s, "w1")
    with caplog.at_level(logging.DEBUG):
        for _ in range(6):
            w.run_once()
            with database.session() as ss:
                j = ss.query(Job).filter_by(series_id=sid).one()
                j.next_attempt_at = None
                state, error = j.state, j.last_error
            if state == JobState.FAILED:
                break
    assert state == JobState.FAILED, (state, error)
    assert f"sop={sop}" in error and "Exception" in error
    assert SECRET not in error and "Secret" not in caplog.text
    for path in tmp_path.glob("srnode.db*"):
        assert b"Secret" not in path.read_bytes()


def test_scrub_and_describe():
    msg = (
        "Expected total bytes to be an even multiple of bytes per value. Instead received "
        "b'Probe^Secret' with length 12 and struct format 'd' which corresponds to bytes "
        "per value of 8."
    )
    assert "Secret" not in scrub(msg) and "length 12" in scrub(msg)
    e = ValueError(f"{msg} (0010,0010)")
    assert describe(e, sop_uid="1.2.3") == "ValueError at (0010,0010) sop=1.2.3"
    assert describe(OSError(28, "No space left on device")).endswith("No space left on device")
