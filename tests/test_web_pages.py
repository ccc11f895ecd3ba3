"""Every console page renders, and the edit forms of destinations and routes save, refuse
with a message, and delete (the browser test covers the flow; this covers every page)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from dicom_node.config import Settings
from dicom_node.store.database import Database
from dicom_node.web.app import create_app


@pytest.fixture
def client(tmp_path):
    settings = Settings.model_validate(
        {
            "node": {"data_dir": str(tmp_path / "data")},
            "allow": [{"ae_title": "PACS", "host": "127.0.0.1"}],
            "destinations": [
                {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242},
                {"name": "web", "kind": "stow", "url": "http://127.0.0.1:8042/dicom-web"},
            ],
            "routes": [{"name": "ct", "modality": ["CT"], "destinations": ["pacs"]}],
        }
    )
    db = Database.from_settings(settings)
    db.create_or_migrate()
    yield TestClient(create_app(settings, lambda *a, **k: 0, db), client=("127.0.0.1", 1))
    db.close()


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


@pytest.mark.parametrize(
    "path",
    ["/", "/jobs", "/jobs?state=done&modality=CT", "/aets", "/destinations",
     "/destinations/pacs", "/destinations/web", "/routes", "/routes/ct", "/audit",
     "/audit?kind=destination", "/login", "/docs"],
)  # fmt: skip
def test_every_page_renders(client, path):
    r = client.get(path)
    assert r.status_code == 200 and "<html" in r.text.lower()


@pytest.mark.parametrize(
    ("path", "code"),
    [("/destinations/nope", 404), ("/routes/nope", 404), ("/jobs/12", 404),
     ("/jobs/99999999999999999999", 404), ("/jobs/1/preview/other.png", 404),
     ("/jobs?study_date_from=yesterday", 422), ("/jobs?state=exploded", 422)],
)  # fmt: skip
def test_pages_answer_bad_input_with_4xx(client, path, code):
    assert client.get(path, headers={"Accept": "text/html"}).status_code == code


def test_destination_and_route_edit_forms(client):
    token = _csrf(client.get("/destinations/pacs").text)
    form = {"csrf": token, "name": "pacs", "kind": "dimse", "ae_title": "ORTHANC",
            "host": "127.0.0.1", "port": "4343", "max_attempts": "8"}  # fmt: skip
    r = client.post("/destinations/pacs", data=form)
    assert r.status_code == 200 and "destination pacs saved" in r.text
    assert client.get("/api/destinations/pacs").json()["port"] == 4343
    r = client.post("/destinations/pacs", data={**form, "port": "many"})
    assert r.status_code == 422 and "port: &#39;many&#39; is not a number" in r.text
    r = client.post("/destinations/pacs/delete", data={"csrf": token})
    assert r.status_code == 409 and "route(s) ct" in r.text
    route = {"csrf": token, "name": "ct", "action": "enhance", "modality": "CT, mr",
             "destinations": ["pacs", "web"]}  # fmt: skip
    r = client.post("/routes/ct", data=route)
    assert r.status_code == 200 and "route ct saved" in r.text
    saved = client.get("/api/routes/ct").json()
    assert saved["modality"] == ["CT", "MR"] and saved["destinations"] == ["pacs", "web"]
    r = client.post("/routes/ct", data={**route, "series_description": "(("})
    assert r.status_code == 422 and "regular expression" in r.text
    r = client.post("/routes/dry-run", data={"csrf": token, "modality": "MR"})
    assert "by route ct" in r.text
    assert "route ct deleted" in client.post("/routes/ct/delete", data={"csrf": token}).text
    assert (
        "destination pacs deleted"
        in client.post("/destinations/pacs/delete", data={"csrf": token}).text
    )
