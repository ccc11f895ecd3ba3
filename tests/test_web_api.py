"""The REST API against a real database and ingest: AE titles, destinations (with a C-ECHO
to a real dcmtk storescp), routes and their dry run, jobs search / retry / cancel, models,
the audit log, metrics, health, and the web layer's answers to bad input (4xx, never 5xx;
one log line per failure)."""

from __future__ import annotations

import logging

import pydicom
import pytest
from fastapi.testclient import TestClient

from dicom_node.admin import catalog
from dicom_node.config import Settings
from dicom_node.jobs.stability import tick
from dicom_node.service import open_intake
from dicom_node.web.app import create_app
from tests import node_helpers as nh
from tests import pacs_peers as peers

BOUNDARY = "srnode-api-test"
HEADERS = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}


def _multipart(parts: list[bytes]) -> bytes:
    out = b""
    for p in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def node(tmp_path):
    settings = Settings.model_validate(
        {
            "node": {"data_dir": str(tmp_path / "data")},
            "scheduler": {"stable_age": 0.01},
            "allow": [{"ae_title": "PACS"}],
            "destinations": [{"name": "pacs", "ae_title": "DEST", "host": "127.0.0.1", "port": 9}],
            "routes": [],  # the routes these tests add, not the embedded defaults
        }
    )
    intake = open_intake(settings)
    db, ingestor = intake.db, intake.ingestor
    app = create_app(settings, ingestor.store, db)
    client = TestClient(app, client=("127.0.0.1", 50000))
    yield {"app": app, "db": db, "settings": settings, "client": client, "t": tmp_path}
    db.close()


def _receive(node, modality: str, accession: str, date: str, description: str) -> str:
    files = peers.write_phantom_series(
        node["t"] / accession, modality, n=2, size=64, series_description=description
    )
    for p in files:
        ds = pydicom.dcmread(p)
        ds.AccessionNumber, ds.StudyDate = accession, date
        ds.save_as(p, enforce_file_format=True)
    r = node["client"].post(
        "/dicom-web/studies", content=_multipart([p.read_bytes() for p in files]), headers=HEADERS
    )
    assert r.status_code == 200, r.text
    return str(pydicom.dcmread(files[0]).SeriesInstanceUID)


def test_aets_add_list_edit_delete(node):
    c = node["client"]
    assert c.get("/api/aets").json()[0]["ae_title"] == "PACS"  # seeded from the config
    r = c.post("/api/aets", json={"ae_title": "CT_SCANNER", "host": "10.1.2.3"})
    assert r.status_code == 201 and r.json()["host"] == "10.1.2.3"
    assert (
        c.post("/api/aets", json={"ae_title": "CT_SCANNER", "host": "10.1.2.3"}).status_code == 409
    )
    r = c.post("/api/aets", json={"ae_title": "BAD\\AE"})
    assert r.status_code == 422 and "ae_title" in r.json()["error"]
    r = c.put("/api/aets/CT_SCANNER", json={"ae_title": "CT_SCANNER", "host": None})
    assert r.status_code == 200 and r.json()["host"] is None
    assert c.delete("/api/aets/CT_SCANNER").status_code == 204
    assert c.delete("/api/aets/CT_SCANNER").status_code == 404
    assert [a["ae_title"] for a in c.get("/api/aets").json()] == ["PACS"]


def test_destinations_crud_and_test_action_against_a_real_storescp(node, tmp_path):
    c = node["client"]
    port = nh.free_port()
    scp = nh.start_storescp(tmp_path / "scp", port, tmp_path / "scp.log", ae="DEST")
    try:
        body = {
            "name": "archive",
            "kind": "dimse",
            "ae_title": "DEST",
            "host": "127.0.0.1",
            "port": port,
        }
        assert c.post("/api/destinations", json=body).status_code == 201
        assert c.post("/api/destinations", json=body).status_code == 409
        r = c.post("/api/destinations/archive/test")
        assert r.status_code == 200 and r.json()["ok"] is True, r.json()
        assert "C-ECHO" in r.json()["detail"]
    finally:
        scp.close()
    r = c.post("/api/destinations/archive/test")
    assert r.status_code == 200 and r.json()["ok"] is False
    r = c.put("/api/destinations/archive", json={**body, "port": 70000})
    assert r.status_code == 422 and "port" in r.json()["error"]
    r = c.post("/api/destinations", json={"name": "web", "kind": "stow"})
    assert r.status_code == 422 and "url" in r.json()["error"]
    assert c.get("/api/destinations/archive").json()["port"] == port
    assert c.delete("/api/destinations/archive").status_code == 204
    assert c.get("/api/destinations/archive").status_code == 404
    assert [d.name for d in node["settings"].destinations] == ["pacs"]


def test_routes_and_dry_run(node):
    c = node["client"]
    r = c.post("/api/routes", json={"name": "ct", "modality": ["CT"], "destinations": ["pacs"]})
    assert r.status_code == 201
    r = c.post(
        "/api/routes?position=0",
        json={"name": "scouts", "series_description": "scout", "action": "ignore"},
    )
    assert r.status_code == 201
    assert [x["name"] for x in c.get("/api/routes").json()] == ["scouts", "ct"]
    d = c.post("/api/routes/dry-run", json={"modality": "CT", "series_description": "Scout"})
    assert d.json()["action"] == "ignore" and d.json()["route"] == "scouts"
    d = c.post("/api/routes/dry-run", json={"modality": "CT", "series_description": "Head"})
    assert d.json()["route"] == "ct" and d.json()["destinations"] == ["pacs"]
    series = _receive(node, "CT", "ACC1", "20260101", "Head 2.0")
    d = c.post("/api/routes/dry-run", json={"series_uid": series})
    assert d.json()["route"] == "ct" and d.json()["facts"]["modality"] == "CT"
    r = c.post("/api/routes", json={"name": "bad", "series_description": "("})
    assert r.status_code == 422 and "regular expression" in r.json()["error"]
    assert c.delete("/api/routes/scouts").status_code == 204


def test_jobs_search_retry_cancel(node):
    c = node["client"]
    _receive(node, "CT", "ACC100", "20250301", "Chest 1.0 lung")
    _receive(node, "MR", "ACC200", "20250415", "T1 axial brain")
    tick(node["db"], node["settings"], now=4e9)
    catalog.index_new_series(node["db"].engine)
    everything = c.get("/api/jobs").json()
    assert everything["total"] == 2
    assert [j["accession_number"] for j in c.get("/api/jobs?accession=ACC200").json()["items"]] == [
        "ACC200"
    ]
    assert c.get("/api/jobs?modality=ct").json()["total"] == 1
    assert c.get("/api/jobs?description=LUNG").json()["items"][0]["modality"] == "CT"
    dated = c.get("/api/jobs?study_date_from=20250401&study_date_to=20250430").json()
    assert [j["study_date"] for j in dated["items"]] == ["20250415"]
    job = everything["items"][0]
    assert job["state"] == "queued"
    r = c.post(f"/api/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "skipped"
    assert "cancelled by local" in r.json()["reason"]
    assert c.post(f"/api/jobs/{job['id']}/cancel").status_code == 409
    r = c.post(f"/api/jobs/{job['id']}/retry")
    assert r.status_code == 200 and r.json()["state"] == "queued"
    assert c.post("/api/jobs/999999/retry").status_code == 404
    kinds = [e["kind"] for e in c.get("/api/audit?kind=job").json()["items"]]
    assert kinds == ["job.retried", "job.cancelled"]


def test_models_audit_metrics_health(node):
    c = node["client"]
    m = c.get("/api/models").json()
    assert {"ct-x2", "mr-x2", "general-x2"} <= {x["name"] for x in m["models"]}
    assert m["default_for_modality"]["CT"] == "ct-x2" and m["backend"] == "auto"
    assert all("metrics" in x and "sha256" in x for x in m["models"])
    c.post("/api/aets", json={"ae_title": "NEWAE"})
    a = c.get("/api/audit?kind=ae&limit=1").json()
    assert a["items"][0]["user"] == "local" and a["items"][0]["after"]["ae_title"] == "NEWAE"
    metrics = c.get("/metrics").text
    families = {
        line.split()[2] for line in metrics.splitlines() if line.startswith("# TYPE srnode_")
    }
    assert not any(f.endswith("_created") for f in families)
    assert len(families) >= 8, families
    assert 'srnode_jobs{state="queued"}' in metrics and "srnode_spool_bytes" in metrics
    assert c.get("/healthz").text == "ok\n"
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"].startswith("ok")
    assert c.get("/openapi.json").json()["paths"]["/api/aets"]
    docs = c.get("/docs").text
    assert "swagger" in docs.lower() and "cdn" not in docs and "https://" not in docs
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/docs/assets/{asset}" in docs
        assert c.get(f"/docs/assets/{asset}").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/status?limit=99999999999999999999",
        "/api/jobs?limit=0",
        "/api/jobs?offset=-1",
        "/api/jobs/99999999999999999999",
        "/api/jobs?study_date_from=2025-01-01",
        "/api/jobs?state=exploded",
        "/api/audit?since=1e300",
        "/api/audit?kind=DROP%20TABLE",
    ],
)
def test_bad_parameters_are_4xx(node, path):
    r = node["client"].get(path)
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text)


def test_bodies_are_bounded_and_a_crash_is_one_line_with_an_error_id(node, caplog):
    c = node["client"]
    big = {"ae_title": "X", "host": "h" * (2 * 1024 * 1024)}
    assert c.post("/api/aets", json=big).status_code == 413
    assert (
        c.post(
            "/api/aets", content=b"{not json", headers={"Content-Type": "application/json"}
        ).status_code
        == 422
    )

    @node["app"].get("/api/boom")
    def boom() -> None:
        raise RuntimeError("secret value Probe^Secret")

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="dicom_node"):
        r = c.get("/api/boom")
    assert r.status_code == 500 and len(r.json()["error_id"]) == 12
    loud = [x for x in caplog.records if x.levelno >= logging.WARNING]
    assert len(loud) == 1 and r.json()["error_id"] in loud[0].getMessage()
    assert "Probe^Secret" not in loud[0].getMessage() and loud[0].exc_info is None


def test_warnings_of_one_request_are_logged_once(node, caplog):
    parts = [b"not dicom %d" % i for i in range(300)]
    with caplog.at_level(logging.WARNING):
        r = node["client"].post("/dicom-web/studies", content=_multipart(parts), headers=HEADERS)
    assert r.status_code == 409
    loud = [x for x in caplog.records if x.levelno == logging.WARNING]
    # two lines a part before (ingest and STOW each said why): one line now
    assert len(loud) == 1 and loud[0].getMessage().startswith("600 warnings while serving POST")


def test_readyz_is_503_below_the_disk_reserve(node, tmp_path):
    """Below storage.min_free_gb the receiver refuses instances (0xA700): /readyz says so."""
    from dicom_node.receive.reserve import GB, free_bytes

    free_gb = free_bytes(tmp_path) / GB
    settings = Settings.model_validate(
        {
            "node": {"data_dir": str(tmp_path / "data")},
            "storage": {"min_free_gb": round(free_gb * 2 + 1)},
            "routes": [],
        }
    )
    app = create_app(settings, lambda *a, **k: 0, node["db"])
    ready = TestClient(app, client=("127.0.0.1", 50000)).get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["disk"].startswith("low:")
    assert node["client"].get("/readyz").json()["checks"]["disk"].startswith("ok:")


def test_models_report_what_auto_chose_on_this_host(node):
    """/api/models lists the backend auto chose per model, from the node's own cache."""
    import json

    from dicom_node.jobs.engines import node_cache_dir
    from sr_engine.selection import CACHE_FILE

    c = node["client"]
    assert c.get("/api/models").json()["engines"] == []
    cache = node_cache_dir(node["settings"].node.data_dir)
    cache.mkdir(parents=True, exist_ok=True)
    entry = {
        "model": "ct-x2",
        "sha256": "ab" * 32,
        "chosen": "openvino-bf16-precise",
        "host": {"cpu": "Some CPU", "threads": 2},
        "tile": [288, 2],
        "measured_at": "2026-11-29 21:00:00 UTC",
    }
    (cache / CACHE_FILE).write_text(json.dumps({"key": entry}))
    engines = c.get("/api/models").json()["engines"]
    assert [(e["model"], e["backend"], e["tile"]) for e in engines] == [
        ("ct-x2", "openvino-bf16-precise", 288)
    ]
