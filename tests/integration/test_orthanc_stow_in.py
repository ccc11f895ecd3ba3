"""STOW-RS into a real `srnode serve`: Orthanc pushes a study to srnode's DICOMweb endpoint
(its DicomWeb "Servers" entry SRNODE, with srnode's web token as HTTP Basic password),
srnode processes it like a C-STORE'd study and sends the derived series back; the admin
console shows the job and refuses a request without the token."""

from __future__ import annotations

import httpx
import pydicom
import pytest

from tests import pacs_peers as peers
from tests.node_helpers import nodelay_env, start_node, write_config
from tests.onnx_models import write_test_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (peers.have_orthanc() and peers.have_dcmtk()), reason="needs Orthanc + plugins, dcmtk"
    ),
]


def test_orthanc_stows_a_study_to_srnode_and_gets_the_derived_series(tmp_path):
    card = write_test_model(tmp_path / "models")
    ct = peers.write_phantom_series(tmp_path / "ct", "CT", n=2, size=128)
    study = str(pydicom.dcmread(ct[0]).StudyInstanceUID)
    node_port, web_port = peers.free_port(), peers.free_port()
    stow_root = f"http://127.0.0.1:{web_port}/dicom-web/"
    token = "stow-in-test-token"
    with peers.orthanc(
        tmp_path / "orthanc", srnode_stow=stow_root, autoroute=False, srnode_token=token
    ) as o:
        cfg = write_config(
            tmp_path / "srnode.toml",
            data_dir=tmp_path / "data",
            port=node_port,
            model_card=card,
            destinations=[
                {
                    "name": "ORTHANC",
                    "ae_title": "ORTHANC",
                    "host": "127.0.0.1",
                    "port": o.dicom_port,
                }  # fmt: skip
            ],
            allow=[("ORTHANC", "127.0.0.1")],
        )
        env = nodelay_env()
        env.update(
            SRNODE_WEB__ENABLED="true", SRNODE_WEB__PORT=str(web_port), SRNODE_WEB__TOKEN=token
        )
        node = start_node(tmp_path / "node.log", "--config", str(cfg), env=env)
        try:
            peers.wait_port(web_port, 30)
            client = o.client()
            for p in ct:
                client.post_instances(p.read_bytes())
            (study_id,) = client.post_tools_find(
                json={"Level": "Study", "Query": {"StudyInstanceUID": study}}
            )
            # the DICOMweb plugin's client side: POST /dicom-web/servers/{name}/stow
            r = client.post(
                f"{o.url}/dicom-web/servers/SRNODE/stow", json={"Resources": [study_id]}
            )
            assert r.status_code == 200, r.text
            peers.wait_until(
                lambda: len(peers.find_series(client, study)) == 2, 120, what="derived series"
            )
            derived = [
                s
                for s in peers.find_series(client, study)
                if "SR x" in s["MainDicomTags"].get("SeriesDescription", "")
            ]
            assert len(derived) == 1
            peers.wait_until(lambda: len(client.get_series_id(derived[0]["ID"])["Instances"]) == 2,
                             60, what="all derived instances")  # fmt: skip
            console = f"http://127.0.0.1:{web_port}/"
            assert httpx.get(console, timeout=10).status_code == 401
            page = httpx.get(console, timeout=10, auth=("admin", token)).text
            assert "done" in page and "ORTHANC" in page
        finally:
            node.close()
    assert "Traceback" not in node.text()
