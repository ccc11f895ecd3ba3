"""The job database on SQLite and PostgreSQL: schema, idempotent instances, atomic claims."""

from __future__ import annotations

import threading
import time

import pytest

from dicom_node.admin.errors import Actor
from dicom_node.receive.series_header import SeriesHeader
from dicom_node.store import audit, migrate
from dicom_node.store import database as dbm
from dicom_node.store.database import Database
from dicom_node.store.jobs import Jobs
from dicom_node.store.schema import Job, Series
from dicom_node.store.states import (
    JOB_MOVES,
    ExportState,
    IllegalMove,
    JobState,
    SeriesState,
    check_export,
    check_series,
    sources,
)
from tests.node_helpers import pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    if request.param == "sqlite":
        d = Database(dbm.default_url(tmp_path))
        d.create_or_migrate()
        yield d
        d.close()
        return
    url, drop = pg_database()
    if url is None:
        pytest.skip(drop)
    d = Database(url)
    d.create_or_migrate()
    yield d
    d.close()
    drop()


def _series(d: Database, uid: str = "1.2.3.4") -> int:
    return d.ensure_series(
        study_uid="1.2.3",
        series_uid=uid,
        header=SeriesHeader(
            modality="CT",
            series_description="s",
            study_description="study",
            calling_ae="PACS",
            derived_by_srnode=False,
        ),
        via="dimse",
    )


def _add_jobs(d: Database, n: int, series_id: int) -> list[int]:
    now = time.time()
    with d.session() as s:
        jobs = [
            Job(series_id=series_id, state=JobState.QUEUED, created_at=now, updated_at=now)
            for _ in range(n)
        ]
        s.add_all(jobs)
        s.flush()
        return [j.id for j in jobs]


def test_schema_is_created_once_and_reopened(database):
    assert database.create_or_migrate() == migrate.head()  # second start: no error


def test_instance_rows_are_idempotent(database):
    sid = _series(database)
    assert _series(database) == sid
    kw = dict(
        series_id=sid,
        sop_class_uid="1.2",
        transfer_syntax="1.2.840.10008.1.2.1",
        instance_number=1,
        path="/x",
        size=10,
        calling_ae="PACS",
        via="dimse",
    )
    assert database.record_instance(sop_uid="1.2.3.4.5", **kw) is True
    assert database.record_instance(sop_uid="1.2.3.4.5", **kw) is False
    assert database.record_instance(sop_uid="1.2.3.4.6", **kw) is True
    assert [u for u, _ in database.series_instances(sid)] == ["1.2.3.4.5", "1.2.3.4.6"]
    with database.session() as s:
        assert s.get(Series, sid).instance_count == 2


def test_claim_takes_queued_then_nothing(database):
    sid = _series(database)
    (jid,) = _add_jobs(database, 1, sid)
    c = Jobs(database).claim("w1", lease=60)
    assert c is not None and c.id == jid and c.state == JobState.PROCESSING and c.attempts == 1
    assert Jobs(database).claim("w2", lease=60) is None
    # an expired lease makes it claimable again (a dead worker's job resumes)
    assert Jobs(database).claim("w2", lease=60, now=time.time() + 120).id == jid


def test_release_claims_of_a_restarted_node(database):
    sid = _series(database)
    _add_jobs(database, 2, sid)
    assert Jobs(database).claim("host:serve:1", lease=600)
    assert Jobs(database).claim("host:serve:1", lease=600)
    assert Jobs(database).claim("host:serve:2", lease=600) is None
    assert Jobs(database).release_claims("host:serve:") == 2
    assert Jobs(database).claim("host:serve:2", lease=600).state == JobState.PROCESSING


def test_two_concurrent_claimers_never_take_the_same_job(database):
    sid = _series(database)
    ids = _add_jobs(database, 60, sid)
    other = Database(database.url)  # a second engine, as a second process would have
    taken: dict[str, list[int]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def claimer(name: str, d: Database) -> None:
        start.wait()
        while True:
            c = Jobs(d).claim(name, lease=600)
            if c is None:
                return
            taken[name].append(c.id)

    threads = [
        threading.Thread(target=claimer, args=("a", database)),
        threading.Thread(target=claimer, args=("b", other)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    other.close()
    all_taken = taken["a"] + taken["b"]
    assert sorted(all_taken) == sorted(ids)
    assert len(set(all_taken)) == len(all_taken)
    with database.session() as s:
        owners = {j.id: j.claimed_by for j in s.query(Job)}
    assert all(owners[i] == "a" for i in taken["a"])
    assert all(owners[i] == "b" for i in taken["b"])


def test_ae_titles_and_audit(database):
    assert database.add_ae_title("PACS", "127.0.0.1")
    assert not database.add_ae_title("PACS", "127.0.0.1")
    assert database.add_ae_title("MOD")
    assert database.list_ae_titles() == [("MOD", ""), ("PACS", "127.0.0.1")]
    assert database.remove_ae_title("MOD") == 1
    database.audit("association_rejected", ae_title="X", host="127.0.0.1", detail="unknown")
    total, (row,) = audit.query(database.engine)
    assert total == 1
    assert (row["kind"], row["target"], row["host"]) == ("association_rejected", "X", "127.0.0.1")
    assert (row["user"], row["detail"]) == (None, "unknown")


def test_moves_follow_the_transition_table(database):
    sid = _series(database)
    (jid,) = _add_jobs(database, 1, sid)
    jobs = Jobs(database)
    # queued may not jump to exporting or done: the row is left as it was
    assert not jobs.move(jid, JobState.EXPORTING)
    assert not jobs.move(jid, JobState.DONE)
    # naming a move the table lacks is a bug, said at once
    with pytest.raises(IllegalMove):
        jobs.move(jid, JobState.DONE, frm=[JobState.QUEUED])
    c = jobs.claim("w1", lease=60)
    assert c.state == JobState.PROCESSING
    # only the holder moves it
    assert not jobs.move(jid, JobState.SKIPPED, "w2")
    assert jobs.finish(jid, JobState.SKIPPED, "w1", reason="r")
    with database.session() as s:
        j = s.get(Job, jid)
        assert j.state == JobState.SKIPPED and j.claimed_by is None and j.finished_at
    # final states go nowhere, except by the admin retry
    assert not any(JOB_MOVES[s] for s in (JobState.DONE, JobState.FAILED, JobState.SKIPPED))
    assert not jobs.move(jid, JobState.QUEUED)
    with pytest.raises(IllegalMove):
        jobs.retry(jid, expect=JobState.PROCESSING)
    assert jobs.retry(jid)
    assert not jobs.retry(jid)  # queued: nothing to retry
    with database.session() as s:
        assert s.get(Job, jid).state == JobState.QUEUED
    assert str(JobState.RECEIVED) in sources(JobState.QUEUED)
    check_export(ExportState.PENDING, ExportState.DONE)
    with pytest.raises(IllegalMove):
        check_export(ExportState.DONE, ExportState.PENDING)
    check_series(SeriesState.COMPLETE, SeriesState.RECEIVING)
    with pytest.raises(IllegalMove):
        check_series(SeriesState.COMPLETE, SeriesState.COMPLETE)


def test_series_complete_then_reopened_by_a_late_instance(database):
    sid = _series(database)
    kw = dict(sop_class_uid="1.2", transfer_syntax=None, instance_number=1, size=1)
    kw.update(calling_ae="PACS", via="dimse", series_id=sid)
    assert database.record_instance(sop_uid="1.2.3.4.7", path="/a", now=100.0, **kw)
    jobs = Jobs(database)
    (job,) = jobs.complete_stable_series(stable_age=10, now=200.0)
    assert jobs.complete_stable_series(stable_age=10, now=300.0) == []  # complete: done once
    with database.session() as s:
        assert s.get(Series, sid).state == SeriesState.COMPLETE
    assert database.record_instance(sop_uid="1.2.3.4.8", path="/b", now=400.0, **kw)
    with database.session() as s:
        row = s.get(Series, sid)
        assert (row.state, row.instance_count) == (SeriesState.RECEIVING, 2)
    (again,) = jobs.complete_stable_series(stable_age=10, now=500.0)
    assert again != job


def test_admin_moves_write_their_audit_row_in_the_same_transaction(database):
    sid = _series(database)
    (jid,) = _add_jobs(database, 1, sid)
    jobs = Jobs(database)
    actor = Actor("alice", "admin", "10.0.0.9")
    assert jobs.cancel(jid, "cancelled by alice", expect=JobState.QUEUED, actor=actor)
    assert not jobs.cancel(jid, "again", actor=actor)  # skipped now: no change, no row
    assert jobs.retry(jid, expect=JobState.SKIPPED, actor=actor)
    _, rows = audit.query(database.engine, user="alice")
    assert [(r["kind"], r["before"], r["after"]) for r in rows] == [
        ("job.retried", {"state": "skipped"}, {"state": "queued"}),
        ("job.cancelled", {"state": "queued"}, {"state": "skipped"}),
    ]
    assert {r["host"] for r in rows} == {"10.0.0.9"}
