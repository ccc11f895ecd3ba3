"""The destination test action against a real Orthanc: C-ECHO for a DIMSE destination, a
QIDO-RS ping for a STOW-RS one; a peer that is down is a plain "not ok", never an error."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dicom_node.config import Settings
from dicom_node.store.database import Database
from dicom_node.web.app import create_app
from tests import pacs_peers as peers

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc not installed"),
]


def test_test_action_echoes_and_pings_a_real_orthanc(tmp_path):
    settings = Settings.model_validate({"node": {"data_dir": str(tmp_path / "data")}})
    db = Database.from_settings(settings)
    db.create_or_migrate()
    try:
        c = TestClient(create_app(settings, lambda *a, **k: 0, db), client=("127.0.0.1", 1))
        with peers.orthanc(tmp_path / "orthanc", autoroute=False) as pacs:
            dimse = {"name": "orthanc", "ae_title": "ORTHANC", "host": "127.0.0.1",
                     "port": pacs.dicom_port}  # fmt: skip
            stow = {"name": "orthanc-web", "kind": "stow", "url": pacs.dicomweb}
            assert c.post("/api/destinations", json=dimse).status_code == 201
            assert c.post("/api/destinations", json=stow).status_code == 201
            echo = c.post("/api/destinations/orthanc/test").json()
            qido = c.post("/api/destinations/orthanc-web/test").json()
            assert (echo["ok"], echo["detail"]) == (True, "C-ECHO succeeded")
            assert (qido["ok"], qido["detail"]) == (True, "QIDO-RS 200")
        down = c.post("/api/destinations/orthanc-web/test").json()
        assert down["ok"] is False and "ConnectionError" in down["detail"]
        assert c.post("/api/destinations/orthanc/test").json()["ok"] is False
    finally:
        db.close()
