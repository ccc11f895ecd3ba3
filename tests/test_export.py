"""Export against real peers: dcmtk storescp (C-STORE, TLS, refusals, aborts, a destination
that comes up late) and Orthanc's DICOMweb plugin (STOW-RS)."""

from __future__ import annotations

import random
import shutil
import ssl
import subprocess
from pathlib import Path

import pydicom
import pytest

from dicom_node.config_routing import DimseDestination, StowDestination
from dicom_node.export.send import next_retry_delay, send
from tests import pacs_peers as peers

pytestmark = pytest.mark.integration


def dimse(port: int, ae: str = "STORESCP", **kw) -> DimseDestination:
    return DimseDestination(name="PACS", ae_title=ae, host="127.0.0.1", port=port, **kw)


def uids(paths) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> list[Path]:
    """3 CT slices (128²) and 2 MR slices in one study: two SOP classes in one batch."""
    d = tmp_path_factory.mktemp("series")
    ct = peers.write_phantom_series(d / "ct", "CT", n=3, size=128)
    study = str(pydicom.dcmread(ct[0], stop_before_pixels=True).StudyInstanceUID)
    mr = peers.write_phantom_series(d / "mr", "MR", n=2, study_uid=study)
    return ct + mr


# --- backoff -----------------------------------------------------------------------------


def test_next_retry_delay_grows_with_jitter_and_is_capped():
    dest = dimse(104, backoff_initial=2.0, backoff_max=60.0)
    rng = random.Random(1)
    for attempt in range(1, 12):
        base = min(60.0, 2.0 * 2 ** (attempt - 1))
        delays = [next_retry_delay(attempt, dest, rng) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays)
        assert max(delays) - min(delays) > 0.05 * base  # jitter, not lock-step
    assert next_retry_delay(10_000, dest, rng) <= 60.0
    assert next_retry_delay(0, dest, rng) <= 2.0  # treated as the first attempt
    a = [next_retry_delay(3, dest, random.Random(7)) for _ in range(2)]
    assert a[0] == a[1]  # reproducible with a seeded generator


# --- DIMSE --------------------------------------------------------------------------------


@pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk storescp not installed")
def test_cstore_two_sop_classes_one_association(tmp_path, series):
    with peers.storescp(tmp_path / "in") as scp:
        result = send(dimse(scp.port), series, calling_ae="SRNODE")
        assert result.failed == [] and sorted(result.ok) == sorted(map(str, series))
        got = scp.wait_for(len(series))
        assert uids(got) == uids(series)


@pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk storescp not installed")
def test_destination_down_fails_every_file_without_raising(series):
    port = peers.free_port()
    result = send(dimse(port), series)
    assert result.ok == [] and len(result.failed) == len(series)
    assert all("connect" in why or "association" in why for _, why in result.failed)
    assert result.permanent == []  # worth retrying


@pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk storescp not installed")
def test_destination_up_later_gets_the_failed_files(tmp_path, series):
    port = peers.free_port()
    first = send(dimse(port), series)
    assert len(first.failed) == len(series)
    with peers.storescp(tmp_path / "in", port=port) as scp:
        again = send(dimse(port), [p for p, _ in first.failed])
        assert again.all_ok
        assert uids(scp.wait_for(len(series))) == uids(series)


@pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk storescp not installed")
def test_refused_association(tmp_path, series):
    with peers.storescp(tmp_path / "in", extra=["--refuse"]) as scp:
        result = send(dimse(scp.port), series[:2])
    assert result.ok == [] and len(result.failed) == 2
    # dcmtk sends A-ASSOCIATE-RJ and closes at once; we may see the close first
    assert all("rejected" in why or "aborted" in why for _, why in result.failed)


@pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk storescp not installed")
def test_peer_aborts_mid_batch(tmp_path, series):
    with peers.storescp(tmp_path / "in", extra=["--abort-after"]) as scp:
        result = send(dimse(scp.port), series)
    assert result.ok == [] and len(result.failed) == len(series)
    assert result.permanent == []


@pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk storescp not installed")
def test_unreadable_file_fails_alone(tmp_path, series):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 10)
    with peers.storescp(tmp_path / "in") as scp:
        result = send(dimse(scp.port), [series[0], junk, series[1]])
        assert sorted(result.ok) == sorted(map(str, series[:2]))
        assert [p for p, _ in result.failed] == [str(junk)] and result.permanent == [str(junk)]
        scp.wait_for(2)


@pytest.mark.skipif(
    not (peers.have_dcmtk() and shutil.which("openssl")), reason="dcmtk or openssl missing"
)
def test_cstore_over_tls(tmp_path, series):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    ctx = ssl.create_default_context(cafile=str(cert))
    extra = ["+tls", str(key), str(cert), "-ic"]
    with peers.storescp(tmp_path / "in", extra=extra) as scp:
        result = send(dimse(scp.port, tls=True), series[:2], ssl_context=ctx)
        assert result.all_ok, result.failed
        assert uids(scp.wait_for(2)) == uids(series[:2])
        # The same destination without trusting its certificate must not send anything.
        untrusted = send(dimse(scp.port, tls=True), series[2:3])
        assert untrusted.ok == [] and len(untrusted.failed) == 1


# --- STOW-RS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def orthanc_peer(tmp_path_factory):
    if not peers.have_orthanc():
        pytest.skip("Orthanc with the DICOMweb and Python plugins is not installed")
    with peers.orthanc(tmp_path_factory.mktemp("orthanc"), autoroute=False) as o:
        yield o


def stow(url: str) -> StowDestination:
    return StowDestination(name="ORTHANC-WEB", kind="stow", url=url)


def test_stow_to_orthanc(orthanc_peer, series):
    result = send(stow(orthanc_peer.dicomweb), series)
    assert result.all_ok and sorted(result.ok) == sorted(map(str, series))
    client = orthanc_peer.client()
    stored = {
        client.get_instances_id(i)["MainDicomTags"]["SOPInstanceUID"]
        for i in client.get_instances()
    }
    assert uids(series) <= stored
    again = send(stow(orthanc_peer.dicomweb), series[:2])  # a re-run sends the same UIDs
    assert again.all_ok


def test_stow_bad_file_and_good_files(orthanc_peer, series, tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 300)
    result = send(stow(orthanc_peer.dicomweb), [junk, series[3]])
    assert result.ok == [str(series[3])]
    assert result.permanent == [str(junk)]


def test_stow_server_down_is_transient(series):
    url = f"http://127.0.0.1:{peers.free_port()}/dicom-web"
    result = send(stow(url), series[:2], timeout=5)
    assert result.ok == [] and len(result.failed) == 2 and result.permanent == []
    assert all("cannot reach" in why for _, why in result.failed)


def test_stow_wrong_path_is_permanent(orthanc_peer, series):
    result = send(stow(orthanc_peer.url + "/no-such-root"), series[:1])
    assert result.ok == [] and result.failed[0][1].startswith("HTTP 404")
    assert result.permanent == [str(series[0])]
