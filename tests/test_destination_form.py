"""The console's destination form has every field of a ``[[destinations]]`` entry with the
config file's defaults: a destination added with the form as it comes equals one written in
the file with the same address (retries for 24 hours, no attempt limit), and the transfer
syntax and retry window can be set there."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from dicom_node.config import Settings
from dicom_node.config_routing import DimseDestination, StowDestination
from dicom_node.store.database import Database
from dicom_node.web.app import create_app


@pytest.fixture
def client(tmp_path):
    settings = Settings.model_validate({"node": {"data_dir": str(tmp_path / "data")}, "routes": []})
    db = Database.from_settings(settings)
    db.create_or_migrate()
    c = TestClient(create_app(settings, lambda *a, **k: 0, db), client=("127.0.0.1", 1))
    yield c
    db.close()


def _inputs(page: str) -> dict[str, str]:
    """name -> value of the add form's inputs and selects, as a browser would post them."""
    form = page[page.index('id="add-destination"') :]
    form = form[: form.index("</form>")]
    out = {}
    for m in re.finditer(r"<input ([^>]*)>", form):
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if "name" not in attrs or (attrs.get("type") == "checkbox" and "checked" not in m[1]):
            continue
        out[attrs["name"]] = attrs.get("value", "")
    for m in re.finditer(r'<select name="(\w+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected', m.group(2))
        first = re.search(r'<option value="([^"]*)"', m.group(2))
        out[m.group(1)] = (chosen or first).group(1)
    return out


def test_the_form_has_every_field_of_the_file(client):
    page = client.get("/destinations").text
    form = page[page.index('id="add-destination"') :]
    names = set(re.findall(r'<(?:input|select)[^>]* name="(\w+)"', form[: form.index("</form>")]))
    for model in (DimseDestination, StowDestination):
        assert set(model.model_fields) - {"kind"} <= names | {"kind"}, model
    assert {"transfer_syntax", "retry_for_hours", "max_attempts"} <= names


def test_a_destination_added_as_the_form_comes_equals_the_files(client):
    data = _inputs(client.get("/destinations").text)
    data.update(name="archive", ae_title="ARCHIVE", host="127.0.0.1", port="104")
    r = client.post("/destinations", data=data)
    assert r.status_code == 200 and "destination archive added" in r.text, r.text[-800:]
    live = client.get("/api/destinations/archive").json()
    file = DimseDestination(name="archive", ae_title="ARCHIVE", host="127.0.0.1", port=104)
    assert live == file.model_dump(mode="json", exclude_none=True)
    assert "max_attempts" not in live and live["retry_for_hours"] == 24.0


def test_transfer_syntax_and_retry_window_are_set_in_the_form(client):
    data = _inputs(client.get("/destinations").text)
    data.update(name="web", kind="stow", url="http://127.0.0.1:8042/dicom-web",
                transfer_syntax="1.2.840.10008.1.2.4.80", retry_for_hours="2")  # fmt: skip
    r = client.post("/destinations", data=data)
    assert r.status_code == 200, r.text[-800:]
    live = client.get("/api/destinations/web").json()
    assert live["transfer_syntax"] == "1.2.840.10008.1.2.4.80"
    assert live["retry_for_hours"] == 2.0 and "ae_title" not in live
    page = client.get("/destinations/web").text
    assert re.search(r'<option value="1.2.840.10008.1.2.4.80" selected>jpegls-lossless', page)
    assert 'name="retry_for_hours"' in page and 'value="2.0"' in page
    r = client.post("/destinations/web", data={**data, "retry_for_hours": "soon"})
    assert r.status_code == 422 and "retry_for_hours: &#39;soon&#39; is not a number" in r.text
