"""A job with two destinations whose export fails for one of them: each destination has
its own outcome, the job says ``exported 1/2`` (log, API, console, `srnode status`), and it
is retried for the failed destination alone (the other one gets nothing twice). Real
database, real dcmtk storescp on both sides."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicom_node.config import Settings
from dicom_node.jobs.stability import tick
from dicom_node.jobs.worker import Worker
from dicom_node.receive.series_header import SeriesHeader
from dicom_node.store.database import Database
from dicom_node.store.schema import Export, Job
from dicom_node.store.states import ExportState, JobState
from dicom_node.web.app import create_app
from tests.node_helpers import SRNODE, STORESCP, free_port, received, start_storescp

pytestmark = pytest.mark.skipif(not shutil.which(STORESCP), reason="dcmtk storescp missing")


def _settings(tmp_path: Path, up: int, down: int) -> Settings:
    dest = {"ae_title": "DEST", "host": "127.0.0.1", "backoff_initial": 0.01,
            "backoff_max": 0.05, "retry_for_hours": 0.5 / 3600}  # fmt: skip
    return Settings.model_validate(
        {
            "node": {"data_dir": str(tmp_path / "data")},
            "scheduler": {"tick": 0.1},
            "destinations": [
                {"name": "archive", "port": up, **dest},
                {"name": "research", "port": down, **dest},
            ],
            "routes": [],
        }
    )


def _exporting_job(db: Database, tmp_path: Path, settings: Settings) -> int:
    """A job in ``exporting`` with two derived files pending for both destinations."""
    sid = db.ensure_series(
        study_uid=generate_uid(), series_uid=generate_uid(),
        header=SeriesHeader(modality="CT", calling_ae="PACS", derived_by_srnode=False),
        via="dimse", now=time.time() - 60,
    )  # fmt: skip
    db.record_instance(
        series_id=sid, sop_uid=generate_uid(), sop_class_uid="1.2", transfer_syntax="1.2",
        instance_number=1, path="/nonexistent", size=1, calling_ae="PACS", via="dimse",
        now=time.time() - 60,
    )  # fmt: skip
    tick(db, settings)
    files = []
    for _ in range(2):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        f = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(f, enforce_file_format=True)
        files.append(str(f))
    with db.session() as ss:
        j = ss.query(Job).filter_by(series_id=sid).one()
        j.state = JobState.EXPORTING
        for name in ("archive", "research"):
            ss.add(
                Export(job_id=j.id, destination=name, state=ExportState.PENDING, attempts=0,
                       sent_count=0, pending=json.dumps(files), updated_at=time.time())
            )  # fmt: skip
        return j.id


def _run_until_settled(w: Worker, db: Database, job_id: int, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        w.run_once()
        with db.session() as ss:
            state = ss.get(Job, job_id).state
        if state in (JobState.DONE, JobState.FAILED) or time.monotonic() > deadline:
            return state
        time.sleep(0.02)


def test_one_destination_failing_is_exported_1_of_2_and_retried_alone(tmp_path, caplog):
    up, down = free_port(), free_port()
    s = _settings(tmp_path, up, down)
    db = Database.from_settings(s)
    db.create_or_migrate()
    archive = start_storescp(tmp_path / "archive", up, tmp_path / "archive.log")
    research = None
    try:
        job_id = _exporting_job(db, tmp_path, s)
        w = Worker(db, s, "w1")
        assert _run_until_settled(w, db, job_id) == JobState.FAILED
        assert len(received(tmp_path / "archive")) == 2
        said = [r.getMessage() for r in caplog.records if f"job {job_id} failed" in r.getMessage()]
        assert said and said[-1].startswith(f"job {job_id} failed: exported 1/2; research: ")

        c = TestClient(create_app(s, lambda *a, **k: 0, db), client=("127.0.0.1", 1))
        job = c.get(f"/api/jobs/{job_id}").json()
        assert job["last_error"].startswith("exported 1/2; research: gave up after")
        states = {e["destination"]: e["state"] for e in job["exports"]}
        assert states == {"archive": "done", "research": "failed"}
        page = c.get(f"/jobs/{job_id}").text
        assert "exported 1/2" in page and "Retry to research" in page
        assert "Retry to archive" not in page

        cfg = tmp_path / "srnode.toml"
        cfg.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n')
        r = subprocess.run([SRNODE, "status", "--json", "--config", str(cfg)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        (mine,) = [j for j in json.loads(r.stdout)["jobs"] if j["id"] == job_id]
        assert mine["exported"] == "1/2" and mine["state"] == "failed"
        # srnode jobs list / show
        r = subprocess.run([SRNODE, "jobs", "list", "--state", "failed", "--config", str(cfg)],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "COLUMNS": "200"})  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "jobs (1 of 1)" in r.stdout and "exported 1/2" in r.stdout
        r = subprocess.run([SRNODE, "jobs", "show", str(job_id), "--config", str(cfg)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"job {job_id}: failed, exported 1/2\n")
        assert "  export archive: done, 1 attempts, 2 sent" in r.stdout
        assert "  export research: failed, " in r.stdout
        r = subprocess.run([SRNODE, "jobs", "show", "999", "--config", str(cfg)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 2 and r.stderr.strip() == "no job 999"

        # the done destination cannot be "retried"; the failed one alone is sent again
        r = c.post(f"/api/jobs/{job_id}/retry?destination=archive")
        assert r.status_code == 409 and "no failed export to 'archive'" in r.json()["error"]
        research = start_storescp(tmp_path / "research", down, tmp_path / "research.log")
        r = c.post(f"/api/jobs/{job_id}/retry?destination=research")
        assert r.status_code == 200 and r.json()["state"] == JobState.EXPORTING
        assert _run_until_settled(w, db, job_id) == JobState.DONE
        assert len(received(tmp_path / "research")) == 2
        assert len(received(tmp_path / "archive")) == 2  # nothing sent twice
        audit = c.get("/api/audit?kind=job.retried").json()["items"]
        assert audit and "research" in json.dumps(audit[0])
    finally:
        archive.close()
        if research is not None:
            research.close()
        db.close()
