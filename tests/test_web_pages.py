"""Every console page renders, and the edit forms of destinations and routes save, refuse
with a message, and delete (the browser test covers the flow; this covers every page)."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from dicom_node.config import Settings
from dicom_node.receive.series_header import SeriesHeader
from dicom_node.store.database import Database
from dicom_node.store.jobs import Jobs
from dicom_node.store.states import ExportState, JobState
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
    c = TestClient(create_app(settings, lambda *a, **k: 0, db), client=("127.0.0.1", 1))
    c.db = db
    yield c
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


def test_job_page_shows_when_a_waiting_export_is_tried_next(client):
    db = client.db
    db.ensure_series(
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        header=SeriesHeader(modality="CT", calling_ae="PACS", derived_by_srnode=False),
        via="dimse",
        now=1.0,
    )  # fmt: skip
    jobs = Jobs(db)
    (job_id,) = jobs.complete_stable_series(stable_age=1, now=10.0)
    assert jobs.route(job_id, JobState.QUEUED, "r", "ct", "m", ["pacs", "web"])
    jobs.claim("w", lease=60)
    jobs.to_exporting(
        job_id, "w", model="m", written=["/d/1.dcm"], derived_series=None, notes=[],
        destinations=["pacs", "web"], now=time.time(),
    )  # fmt: skip
    done, waiting = sorted(jobs.pending_exports(job_id), key=lambda r: r.destination)
    jobs.record_export(done.id, state=ExportState.DONE, attempts=1)
    jobs.record_export(waiting.id, attempts=1, next_attempt_at=time.time() + 3600)
    page = client.get(f"/jobs/{job_id}").text
    rows = [
        re.findall(r"<td[^>]*>(.*?)</td>", tr)
        for tr in re.findall(r"<tr[^>]*><td>(?:pacs|web)</td>.*?</tr>", page)
    ]
    # destination, state, attempts, sent, next attempt: only a waiting export has one
    assert [r[:2] for r in rows] == [["pacs", "done"], ["web", "pending"]]
    assert rows[0][4] == "-" and rows[1][4].startswith("in ")


def test_console_labels(client):
    """The login page offers no navigation and no 'anonymous' user; a study description is
    labelled as one; an ignore route shows no model; the dry run asks for a study
    description too."""
    client.post("/api/routes", json={"name": "skip", "action": "ignore", "series_description": "x"})
    login = client.get("/login").text
    header = login[login.index("<header>") : login.index("</header>")]
    assert "<nav>" not in header and "anonymous" not in header
    assert 'href="/jobs"' in client.get("/").text  # other pages keep their navigation
    routes = client.get("/routes").text
    row = re.search(r'<tr id="route-\d+" data-route="skip".*?</tr>', routes, re.S).group(0)
    assert "by modality" not in row and "ct-x2" not in row
    assert 'name="study_description"' in routes[routes.index('id="dry-run"') :]
