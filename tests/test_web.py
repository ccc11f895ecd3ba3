"""STOW-RS receive into the real ingest (spool + database) and the admin console.

One test runs the app under uvicorn and stores with dicomweb-client, the way a PACS or a
script would; the others use FastAPI's TestClient for the protocol's edge cases."""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from dicom_node.config import Settings
from dicom_node.receive.stow import split_multipart
from dicom_node.service import open_intake
from dicom_node.web.app import create_app
from tests import pacs_peers as peers

BOUNDARY = "srnode-test-boundary"


def local_client(app) -> TestClient:
    """A client on loopback: with no user and no token, the console trusts loopback only."""
    return TestClient(app, client=("127.0.0.1", 50000))


@pytest.fixture
def node(tmp_path):
    settings = Settings.model_validate(
        {
            "node": {"data_dir": str(tmp_path / "data")},
            "destinations": [
                {"name": "ORTHANC", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242},
                {"name": "WEB", "kind": "stow", "url": "http://127.0.0.1:8042/dicom-web"},
            ],
        }
    )
    intake = open_intake(settings)  # database, spool and ingest wired as the node does
    db, spool = intake.db, intake.spool
    app = create_app(settings, intake.ingestor.store, db)
    yield {"app": app, "db": db, "spool": spool, "settings": settings, "t": tmp_path}
    db.close()


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> list[Path]:
    return peers.write_phantom_series(tmp_path_factory.mktemp("s"), "CT", n=3, size=64)


def multipart(parts: list[bytes], ctype: str = "application/dicom") -> bytes:
    out = b""
    for p in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {ctype}\r\n\r\n".encode() + p + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


HEADERS = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}


def response(r) -> Dataset:
    assert r.headers["content-type"].startswith("application/dicom+json")
    return Dataset.from_json(r.json())


def stored_sops(node) -> set[str]:
    found = set()
    for p in Path(node["spool"].root).rglob("*"):
        if p.is_file():
            ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
            found.add(str(ds.get("SOPInstanceUID", "")))
    return found


def test_split_multipart_keeps_binary_bodies_exact():
    payloads = [b"\r\n--not-a-boundary\r\n\x00\xff", b"", b"plain"]
    parts = split_multipart(multipart(payloads), BOUNDARY)
    assert [p.body for p in parts] == payloads
    assert all(p.headers["content-type"] == "application/dicom" for p in parts)


def test_stow_with_dicomweb_client_over_http(node, series):
    """uvicorn on a free port, dicomweb-client as the STOW-RS client."""
    import uvicorn
    from dicomweb_client.api import DICOMwebClient

    port = peers.free_port()
    server = uvicorn.Server(
        uvicorn.Config(node["app"], host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        peers.wait_port(port, 20)
        client = DICOMwebClient(url=f"http://127.0.0.1:{port}/dicom-web")
        result = client.store_instances([pydicom.dcmread(p) for p in series])
        assert len(result.ReferencedSOPSequence) == len(series)
        assert len(result.get("FailedSOPSequence", [])) == 0
    finally:
        server.should_exit = True
        thread.join(10)
    assert {str(pydicom.dcmread(p).SOPInstanceUID) for p in series} <= stored_sops(node)
    assert node["db"].queue_counts() is not None


def test_stow_partial_failure_is_202(node, series):
    client = local_client(node["app"])
    truncated = series[0].read_bytes()[:-5000]  # pixel data cut short
    r = client.post("/dicom-web/studies", content=multipart([series[1].read_bytes(), truncated]),
                    headers=HEADERS)  # fmt: skip
    assert r.status_code == 202
    ds = response(r)
    assert [str(i.ReferencedSOPInstanceUID) for i in ds.ReferencedSOPSequence] == [
        str(pydicom.dcmread(series[1]).SOPInstanceUID)
    ]
    (failed,) = ds.FailedSOPSequence
    assert 0xC000 <= int(failed.FailureReason) <= 0xC0FF
    assert str(failed.ReferencedSOPInstanceUID) == str(pydicom.dcmread(series[0]).SOPInstanceUID)


def test_stow_all_failed_is_409(node):
    client = local_client(node["app"])
    r = client.post("/dicom-web/studies", content=multipart([b"junk" * 50]), headers=HEADERS)
    assert r.status_code == 409
    ds = response(r)
    assert len(ds.ReferencedSOPSequence) == 0 and len(ds.FailedSOPSequence) == 1


def test_stow_to_a_study_refuses_other_studies(node, series, tmp_path):
    other = peers.write_phantom_series(tmp_path / "other", "CT", n=1, size=64)[0]
    study = str(pydicom.dcmread(series[2]).StudyInstanceUID)
    client = local_client(node["app"])
    body = multipart([series[2].read_bytes(), other.read_bytes()])
    r = client.post(f"/dicom-web/studies/{study}", content=body, headers=HEADERS)
    assert r.status_code == 202
    ds = response(r)
    assert int(ds.FailedSOPSequence[0].FailureReason) == 0xA900
    assert str(ds.FailedSOPSequence[0].ReferencedSOPInstanceUID) == str(
        pydicom.dcmread(other).SOPInstanceUID
    )


def test_stow_media_types(node, series):
    client = local_client(node["app"])
    body = multipart([series[0].read_bytes()])
    r = client.post(
        "/dicom-web/studies", content=body, headers={"Content-Type": "application/dicom"}
    )
    assert r.status_code == 415
    bad_type = {
        "Content-Type": f"multipart/related; type=application/dicom+xml; boundary={BOUNDARY}"
    }
    assert client.post("/dicom-web/studies", content=body, headers=bad_type).status_code == 415
    no_boundary = {"Content-Type": 'multipart/related; type="application/dicom"'}
    assert client.post("/dicom-web/studies", content=body, headers=no_boundary).status_code == 400
    r = client.post("/dicom-web/studies", content=b"no delimiters here", headers=HEADERS)
    assert r.status_code == 400


def test_stow_over_the_size_limit_is_413_and_stores_nothing(node, series):
    settings = node["settings"].model_copy(deep=True)
    settings.web.max_request_mb = 0.01  # ~10 KiB: one 64x64 slice fits, three do not
    app = create_app(settings, lambda *a, **k: pytest.fail("must not store"), node["db"])
    client = local_client(app)
    body = multipart([p.read_bytes() for p in series] * 2)
    r = client.post("/dicom-web/studies", content=body, headers=HEADERS)
    assert r.status_code == 413 and "max_request_mb" in r.text

    def chunks():  # no Content-Length: refused while it streams in
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    r = client.post("/dicom-web/studies", content=chunks(), headers=HEADERS)
    assert r.status_code == 413


def test_console_and_status(node, series):
    client = local_client(node["app"])
    client.post("/dicom-web/studies", content=multipart([series[0].read_bytes()]), headers=HEADERS)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for text in ("Queue", "Destinations", "ORTHANC@127.0.0.1:4242", "Recent jobs", "<table"):
        assert text in page.text
    status = client.get("/api/status").json()
    assert [d["name"] for d in status["destinations"]] == ["ORTHANC", "WEB"]
    assert isinstance(status["queue"], dict)
    assert client.get("/healthz").text == "ok\n"
    assert b"srnode_instances_received_total" in client.get("/metrics").content


def test_console_without_database(tmp_path):
    app = create_app(Settings(), store=lambda *a, **k: 0, db=None)
    page = local_client(app).get("/")
    assert page.status_code == 200 and "none configured" in page.text


def test_token_guards_every_route_but_healthz(node, series):
    import base64

    settings = node["settings"].model_copy(deep=True)
    settings.web.token = "s3cret-token-for-tests"
    stored = []
    app = create_app(settings, lambda data, ae, via="stow": stored.append(data) or 0, node["db"])
    client = local_client(app)
    body = multipart([series[0].read_bytes()])
    for method, path in (("get", "/"), ("get", "/api/status"), ("get", "/metrics")):
        r = getattr(client, method)(path)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert client.post("/dicom-web/studies", content=body, headers=HEADERS).status_code == 401
    assert stored == []
    wrong = {"Authorization": "Bearer not-the-token"}
    assert client.get("/", headers=wrong).status_code == 401
    assert client.get("/healthz").status_code == 200
    bearer = {"Authorization": "Bearer s3cret-token-for-tests"}
    assert client.get("/api/status", headers=bearer).status_code == 200
    basic = base64.b64encode(b"ORTHANC:s3cret-token-for-tests").decode()
    r = client.post(
        "/dicom-web/studies", content=body, headers={**HEADERS, "Authorization": f"Basic {basic}"}
    )
    assert r.status_code == 200 and len(stored) == 1
    assert client.get("/", headers={"Authorization": "Basic !!notbase64"}).status_code == 401
