"""Retention against a real database and real files: what ``srnode gc`` shows, what it
and the node delete, and what they leave alone (jobs still running, recent files)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from dicom_node.config import Settings
from dicom_node.jobs import retention
from dicom_node.jobs.stability import tick
from dicom_node.receive.series_header import SeriesHeader
from dicom_node.store import database as dbm
from dicom_node.store.database import Database
from dicom_node.store.jobs import Jobs
from dicom_node.store.schema import Instance, Job
from dicom_node.store.states import JobState
from tests.node_helpers import SRNODE

CT = Path(get_testdata_file("CT_small.dcm"))
HOUR = 3600.0


def _settings(data: Path, **kw) -> Settings:
    raw = {"node": {"data_dir": str(data)}, "scheduler": {"stable_age": 1.0}}
    raw.update(kw)
    return Settings.model_validate(raw)


@pytest.fixture
def data(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    db = Database(dbm.default_url(d))
    db.create_or_migrate()
    db.close()
    return d


def _series(db: Database, data: Path, uid: str, state: JobState, ended: float, n: int = 2):
    """A series of ``n`` spool files and ``n`` derived files whose job is in ``state``
    since ``ended``; returns (spool files, derived files)."""
    study = "1.2.3"
    received = ended - 100
    sid = db.ensure_series(
        study_uid=study,
        series_uid=uid,
        header=SeriesHeader(
            modality="CT", series_description="axial", calling_ae="PACS", derived_by_srnode=False
        ),
        via="dimse",
        now=received,
    )
    spool, derived = [], []
    for i in range(n):
        p = data / "spool" / study / uid / f"{uid}.{i}.dcm"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(CT.read_bytes())
        spool.append(p)
        db.record_instance(
            series_id=sid,
            sop_uid=f"{uid}.{i}",
            sop_class_uid="1.2",
            transfer_syntax="1.2",
            instance_number=i,
            path=str(p),
            size=p.stat().st_size,
            calling_ae="PACS",
            via="dimse",
            now=received,
        )
        q = data / "derived" / uid / f"2.25.{i}{uid.replace('.', '')}.dcm"
        q.parent.mkdir(parents=True, exist_ok=True)
        q.write_bytes(CT.read_bytes())
        derived.append(q)
    tick(db, _settings(data, routes=[]))  # a job for the series
    with db.session() as ss:
        job = ss.query(Job).filter_by(series_id=sid).one()
        job.state = str(state)
        job.finished_at = ended
        job.updated_at = ended
    return spool, derived


def _age_folders(root: Path, seconds: float) -> None:
    old = time.time() - seconds
    for d, _, _ in os.walk(root):
        os.utime(d, (old, old))


def test_plan_follows_each_setting_and_apply_deletes_only_that(data) -> None:
    now = time.time()
    db = Database(dbm.default_url(data))
    try:
        done_old = _series(db, data, "1.2.3.1", JobState.DONE, now - 100 * HOUR)
        done_new = _series(db, data, "1.2.3.2", JobState.DONE, now - 1 * HOUR)
        skipped = _series(db, data, "1.2.3.3", JobState.SKIPPED, now - 30 * HOUR)
        failed = _series(db, data, "1.2.3.4", JobState.FAILED, now - 30 * HOUR)
        running = _series(db, data, "1.2.3.5", JobState.PROCESSING, now - 300 * HOUR)

        # derived.keep with 72 h: only the old done series' derived files; spool kept
        # after export for 24 h; skipped after 24 h; failed kept for 168 h
        s = _settings(
            data,
            derived={"keep": True, "retention_hours": 72},
            spool={"keep_after_export": True, "retention_hours": 24},
        )
        p = retention.plan(db, s, now)
        files = {b.label: set(b.files) for b in p.buckets}
        assert files["derived, sent to every destination"] == set(done_old[1])
        assert files["received, exported"] == set(done_old[0])
        assert files["received, not enhanced (skipped)"] == set(skipped[0])
        assert files["received, of failed jobs"] == set()
        assert files["derived, of failed jobs"] == set()
        assert p.size == sum(f.stat().st_size for f in [*done_old[0], *done_old[1], *skipped[0]])

        n, freed = retention.apply(db, p)
        assert n == 6 and freed == p.size
        gone = [*done_old[0], *done_old[1], *skipped[0]]
        assert not any(f.exists() for f in gone)
        kept = [*done_new[0], *done_new[1], *skipped[1], *failed[0], *failed[1], *running[0]]
        assert all(f.exists() for f in kept + running[1])
        # the emptied series and derived folders went with their files
        assert not (data / "spool" / "1.2.3" / "1.2.3.1").exists()
        assert not (data / "derived" / "1.2.3.1").exists()
        with db.session() as ss:
            removed = {i.path for i in ss.query(Instance).filter_by(removed=True)}
        assert removed == {str(f) for f in [*done_old[0], *skipped[0]]}

        # defaults: nothing kept after export, failed after 168 h -> not yet
        p = retention.plan(db, _settings(data), now)
        files = {b.label: set(b.files) for b in p.buckets}
        assert files["derived, sent to every destination"] == set(done_new[1])
        assert files["received, exported"] == set(done_new[0])
        assert files["received, of failed jobs"] == set()
        # 0 hours keeps for good
        s = _settings(data, spool={"failed_retention_hours": 0, "skipped_retention_hours": 0})
        assert {b.label: b.count for b in retention.plan(db, s, now + 1000 * HOUR).buckets}[
            "received, of failed jobs"
        ] == 0
        # and 200 h later the failed job's files may go
        p = retention.plan(db, _settings(data), now + 200 * HOUR)
        files = {b.label: set(b.files) for b in p.buckets}
        assert files["received, of failed jobs"] == set(failed[0])
        assert files["derived, of failed jobs"] == set(failed[1])
    finally:
        db.close()


def test_empty_folders_go_once_they_are_old(data) -> None:
    (data / "spool" / "1.2.9" / "1.2.9.1").mkdir(parents=True)
    (data / "derived" / "1.2.9.2").mkdir(parents=True)
    keep = data / "spool" / "1.2.9" / "1.2.9.3" / "x.dcm"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"x")
    db = Database(dbm.default_url(data))
    try:
        assert retention.plan(db, _settings(data)).empty_folders == []  # just made
        _age_folders(data, 120)
        p = retention.plan(db, _settings(data))
        assert set(p.empty_folders) == {
            data / "spool" / "1.2.9" / "1.2.9.1",
            data / "derived" / "1.2.9.2",
        }
        retention.apply(db, p)
    finally:
        db.close()
    assert not (data / "spool" / "1.2.9" / "1.2.9.1").exists()
    assert not (data / "derived" / "1.2.9.2").exists()
    assert keep.exists() and (data / "spool").is_dir() and (data / "derived").is_dir()


def _gc(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SRNODE, "gc", "--data-dir", str(data), *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_srnode_gc_is_a_dry_run_unless_asked(data) -> None:
    db = Database(dbm.default_url(data))
    try:
        spool, derived = _series(db, data, "1.2.3.1", JobState.DONE, time.time() - 10)
    finally:
        db.close()
    r = _gc(data)
    assert r.returncode == 0, r.stderr
    assert "dry run, nothing is deleted (add --apply to delete)" in r.stdout
    assert "derived, sent to every destination" in r.stdout and "would free" in r.stdout
    assert all(f.exists() for f in spool + derived)
    r = _gc(data, "--dry-run")
    assert r.returncode == 0 and "dry run" in r.stdout
    r = _gc(data, "--apply")
    assert r.returncode == 0, r.stderr
    assert "freed" in r.stdout and "(4 files)" in r.stdout
    assert not any(f.exists() for f in spool + derived)


@pytest.mark.slow
def test_srnode_gc_never_creates_a_data_dir(tmp_path) -> None:
    r = _gc(tmp_path / "nowhere")
    assert r.returncode == 2
    assert r.stderr.strip().startswith(f"no srnode database in {tmp_path / 'nowhere'}")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("keep", [False, True])
def test_after_export_removes_a_done_jobs_files_unless_kept(data, keep) -> None:
    """What the export step calls when a job is done: the source and derived files go at
    once, unless ``spool.keep_after_export`` / ``derived.keep`` (then the plan does later)."""
    db = Database(dbm.default_url(data))
    try:
        spool, derived = _series(db, data, "1.2.3.7", JobState.DONE, time.time())
        with db.session() as ss:
            job = ss.query(Job).one()
            job.started_at = job.finished_at
            job_id = job.id
        s = _settings(data, derived={"keep": keep}, spool={"keep_after_export": keep})
        n = retention.after_export(Jobs(db), s, job_id, "1.2.3.7")
        assert n == (0 if keep else 4)
        assert all(f.exists() == keep for f in [*spool, *derived])
        assert (data / "spool" / "1.2.3").exists() == keep  # the emptied folders went too
        with db.session() as ss:
            removed = {i.path for i in ss.query(Instance).filter_by(removed=True)}
        assert removed == (set() if keep else {str(f) for f in spool})
    finally:
        db.close()


#: the only deletions outside dicom_node/jobs/retention.py: (module, function) that remove
#: files that were never acknowledged (temporary files, a spool file that does not parse)
_DELETES_ELSEWHERE = {
    ("dicom_node/spool.py", "atomic_write"),
    ("dicom_node/spool.py", "clean_temp"),
    ("dicom_node/receive/ingest.py", "reconcile"),
}


def test_only_retention_deletes_received_or_derived_files() -> None:
    """Every call that deletes a file or folder in dicom_node/ (unlink, rmtree, rmdir,
    os.remove) is in jobs/retention.py, or in one of the never-acknowledged cases above.
    (Before, the worker removed a done job's source files itself.)"""
    import ast

    root = Path(__file__).resolve().parents[1]
    found = set()
    for path in sorted((root / "dicom_node").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "dicom_node/jobs/retention.py":
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                if not call:
                    continue
                attr, owner = node.func.attr, node.func.value
                os_remove = attr == "remove" and isinstance(owner, ast.Name) and owner.id == "os"
                if attr in {"unlink", "rmtree", "rmdir", "removedirs"} or os_remove:
                    found.add((rel, fn.name))  # (list.remove is not a deletion)
    assert found <= _DELETES_ELSEWHERE, sorted(found - _DELETES_ELSEWHERE)
    assert ("dicom_node/spool.py", "atomic_write") in found  # the scan sees what it should
