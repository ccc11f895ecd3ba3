"""One validation for every way the configuration changes: the config file (`srnode config
check`, `serve`), the REST API, the console's forms and `srnode config export` refuse the same
setups with the same one line naming the key; a live change `serve` would refuse after a
restart is refused, and an entry stored before these checks is left out, said in the log."""

from __future__ import annotations

import html
import logging
import re
import subprocess

import pytest
from fastapi.testclient import TestClient

from dicom_node.admin.live_config import LiveConfig
from dicom_node.config import Settings
from dicom_node.store.database import Database
from dicom_node.web.app import create_app
from tests.node_helpers import SRNODE

BAD_ROUTE = {"name": "skip-x", "modality": ["CT"], "model": "ct-x9"}


def _raw(tmp_path) -> dict:
    return {
        "node": {"data_dir": str(tmp_path / "data")},
        "destinations": [
            {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}
        ],
        "routes": [{"name": "ct", "modality": ["CT"], "destinations": ["pacs"]}],
    }


@pytest.fixture
def client(tmp_path):
    settings = Settings.model_validate(_raw(tmp_path))
    db = Database.from_settings(settings)
    db.create_or_migrate()
    live = LiveConfig(db, settings)
    live.seed(settings)
    c = TestClient(create_app(settings, lambda *a, **k: 0, db, live), client=("127.0.0.1", 1))
    c.db, c.live, c.settings = db, live, settings
    yield c
    db.close()


def _srnode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SRNODE, *args], capture_output=True, text=True, timeout=120)


def _file_message(tmp_path) -> str:
    """What `srnode config check` says of a file with the bad route."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\n'
        '[[routes]]\nname = "skip-x"\nmodality = ["CT"]\nmodel = "ct-x9"\n'
    )
    r = _srnode("config", "check", "--config", str(cfg))
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_a_model_that_does_not_exist_is_refused_the_same_way_everywhere(client, tmp_path):
    line = _file_message(tmp_path)
    assert line.startswith("config: routes.skip-x.model: model 'ct-x9' not found; available:")

    r = client.post("/api/routes", json=BAD_ROUTE)
    assert r.status_code == 422 and r.json()["error"] == line

    page = client.get("/routes").text
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    form = {"csrf": token, "name": "skip-x", "action": "enhance", "modality": "CT",
            "model": "ct-x9"}  # fmt: skip
    r = client.post("/routes", data=form)
    assert r.status_code == 422
    # the form again, with the error and what was typed
    assert html.escape(line).replace("&#x27;", "&#39;") in r.text
    assert 'value="ct-x9"' in r.text and 'value="skip-x"' in r.text

    r = client.put("/api/routes/ct", json={"name": "ct", "modality": ["CT"], "model": "ct-x9"})
    assert r.status_code == 422 and r.json()["error"] == line.replace("skip-x", "ct")
    assert [x["name"] for x in client.get("/api/routes").json()] == ["ct"]
    assert [x.name for x in client.settings.routes] == ["ct"]
    # a model that exists is taken
    r = client.post("/api/routes", json={**BAD_ROUTE, "model": "ct-x2"})
    assert r.status_code == 201


def test_a_destination_tls_file_serve_cannot_read_is_refused(client, tmp_path):
    body = {"name": "secure", "ae_title": "PACS2", "host": "127.0.0.1", "port": 2762,
            "tls": True, "tls_ca": str(tmp_path / "missing-ca.pem")}  # fmt: skip
    r = client.post("/api/destinations", json=body)
    assert r.status_code == 422
    assert r.json()["error"].startswith("config: destinations.secure.tls_ca: cannot read ")


def _store_bad_route(live: LiveConfig) -> None:
    """A route with a missing model as a release without these checks stored it."""
    with live.engine.begin() as conn:
        live._put(conn, "route", dict(BAD_ROUTE), None)
        live._bump(conn)


def test_a_stored_route_with_a_missing_model_is_left_out_and_said(client, caplog):
    with caplog.at_level(logging.ERROR, logger="dicom_node.admin.live_config"):
        _store_bad_route(client.live)
        client.live.reload()
    assert [r.name for r in client.settings.routes] == ["ct"]
    said = [r.getMessage() for r in caplog.records if "skip-x" in r.getMessage()]
    assert said and "routes.skip-x.model: model 'ct-x9' not found" in said[0]
    # fixing it through the API works (the change replaces the bad entry)
    r = client.put("/api/routes/skip-x", json={**BAD_ROUTE, "model": "ct-x2"})
    assert r.status_code == 200
    assert [r.name for r in client.settings.routes] == ["ct", "skip-x"]


def test_config_export_refuses_to_write_what_serve_refuses(client, tmp_path):
    _store_bad_route(client.live)
    cfg = tmp_path / "srnode.toml"
    cfg.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n')
    out = tmp_path / "live.toml"
    r = _srnode("config", "export", "--config", str(cfg), "--out", str(out))
    assert r.returncode == 2 and not out.exists()
    last = r.stderr.strip().splitlines()[-1]  # after the log lines of the seeding
    assert last.startswith("config: routes.skip-x.model: model 'ct-x9' not found")


def test_routes_are_moved_through_the_api_and_the_dry_run_follows(client):
    r = client.post("/api/routes", json={"name": "skip-scouts", "series_description": "scout",
                                         "action": "ignore"})  # fmt: skip
    assert r.status_code == 201
    facts = {"modality": "CT", "series_description": "Scout AP"}
    assert client.post("/api/routes/dry-run", json=facts).json()["route"] == "ct"
    r = client.post("/api/routes/skip-scouts/move", json={"position": 0})
    assert r.status_code == 200 and r.json() == ["skip-scouts", "ct"]
    assert [x.name for x in client.settings.routes] == ["skip-scouts", "ct"]
    d = client.post("/api/routes/dry-run", json=facts).json()
    assert d["route"] == "skip-scouts" and d["action"] == "ignore"
    assert client.post("/api/routes/nope/move", json={"position": 0}).status_code == 404
    assert client.post("/api/routes/ct/move", json={"position": -1}).status_code == 422
    moved = client.get("/api/audit?kind=route.moved").json()["items"]
    assert moved and moved[0]["target"] == "skip-scouts"
