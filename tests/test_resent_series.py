"""A series sent again once its job ended: every instance arrives a second time (known SOP
Instance UIDs, so nothing new is counted). It is said in the log and the audit trail, and
``scheduler.resent_series`` decides: ``process`` (the default) makes a new job, ``ignore``
does not. Real database, instances through the node's STOW-RS intake."""

from __future__ import annotations

import logging
import time

import pytest
from fastapi.testclient import TestClient

from dicom_node.config import Settings
from dicom_node.jobs import resend
from dicom_node.jobs.stability import tick
from dicom_node.service import open_intake
from dicom_node.web.app import create_app
from tests import pacs_peers as peers
from tests.test_web_api import HEADERS, _multipart


def _node(tmp_path, mode: str | None):
    sched = {"stable_age": 0.01} | ({"resent_series": mode} if mode else {})
    settings = Settings.model_validate(
        {"node": {"data_dir": str(tmp_path / "data")}, "scheduler": sched, "routes": []}
    )
    intake = open_intake(settings)
    app = create_app(settings, intake.ingestor.store, intake.db)
    client = TestClient(app, client=("127.0.0.1", 50000))
    return settings, intake.db, client


def _send(client, files) -> None:
    r = client.post(
        "/dicom-web/studies", content=_multipart([p.read_bytes() for p in files]), headers=HEADERS
    )
    assert r.status_code == 200, r.text


def _jobs(client) -> list[dict]:
    return client.get("/api/jobs").json()["items"]


@pytest.mark.parametrize("mode", [None, "ignore"])
def test_a_series_sent_again_after_its_job_is_said_and_handled_as_configured(
    tmp_path, caplog, mode
):
    settings, db, client = _node(tmp_path, mode)
    try:
        files = peers.write_phantom_series(tmp_path / "series", "CT", n=3, size=32)
        _send(client, files)
        time.sleep(0.05)
        tick(db, settings)
        (job,) = _jobs(client)
        assert job["state"] == "skipped"  # no route: the job ended
        assert resend.check(db, settings) == 0  # nothing re-sent yet

        time.sleep(0.05)
        _send(client, files)  # the same instances again
        time.sleep(0.05)
        with caplog.at_level(logging.INFO, logger="dicom_node.jobs.resend"):
            assert resend.check(db, settings) == 1
            assert resend.check(db, settings) == 0  # said once
        said = [r.getMessage() for r in caplog.records if "re-sent" in r.getMessage()]
        assert len(said) == 1 and f"series={job['series_uid']}" in said[0]
        assert "instances=3" in said[0]
        audit = client.get("/api/audit?kind=series.resent").json()["items"]
        assert len(audit) == 1 and audit[0]["target"] == job["series_uid"]

        tick(db, settings)
        jobs = _jobs(client)
        if mode == "ignore":
            assert "ignored (scheduler.resent_series = ignore)" in said[0]
            assert len(jobs) == 1
        else:  # the default: processed again, as a new job of the same series
            assert "processed and exported again" in said[0]
            assert len(jobs) == 2 and {j["series_uid"] for j in jobs} == {job["series_uid"]}
        assert resend.check(db, settings) == 0
    finally:
        db.close()


def test_srnode_status_shows_a_re_sent_series(tmp_path):
    import subprocess

    from tests.node_helpers import SRNODE

    settings, db, client = _node(tmp_path, "ignore")
    try:
        files = peers.write_phantom_series(tmp_path / "series", "CT", n=2, size=32)
        _send(client, files)
        time.sleep(0.05)
        tick(db, settings)
        time.sleep(0.05)
        _send(client, files)
        time.sleep(0.05)
        assert resend.check(db, settings) == 1
        series = _jobs(client)[0]["series_uid"]
    finally:
        db.close()
    cfg = tmp_path / "srnode.toml"
    cfg.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n')
    r = subprocess.run([SRNODE, "status", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"re-sent series {series}" in r.stdout and "2 instances received again: ignored" in (
        r.stdout
    )
