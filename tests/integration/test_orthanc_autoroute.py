"""orthanc/: Debian's Orthanc with our config and auto-routing plugin sends each original
series, once stable, to the SRNODE modality (here dcmtk storescp playing srnode), and never
a series srnode derived. Also: orthanc/run.sh starts and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tests import pacs_peers as peers

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (peers.have_orthanc() and peers.have_dcmtk()), reason="needs Orthanc + plugins, dcmtk"
    ),
]


def _derived_copy(src: list[Path], out: Path, *, equipment: bool, description: bool) -> list[Path]:
    """The series as srnode would send it back: new series/instance UIDs, DERIVED."""
    out.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    paths = []
    for i, p in enumerate(src):
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.SeriesDescription = f"{ds.SeriesDescription} [SR x2]"
        if description:
            ds.DerivationDescription = "srnode 0.1.0 super-resolution x2; model test-x2"
        if equipment:
            item = Dataset()
            item.Manufacturer = "srnode"
            item.ManufacturerModelName = "test-x2"
            ds.ContributingEquipmentSequence = Sequence([item])
        path = out / f"d{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _uids(paths) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def test_stable_series_go_to_srnode_and_derived_never_do(tmp_path):
    ct = peers.write_phantom_series(tmp_path / "ct", "CT", n=3, size=128)
    study = str(pydicom.dcmread(ct[0], stop_before_pixels=True).StudyInstanceUID)
    mr = peers.write_phantom_series(tmp_path / "mr", "MR", n=2, study_uid=study)
    with (
        peers.storescp(tmp_path / "srnode", aet="SRNODE") as srnode,
        peers.orthanc(tmp_path / "orthanc", stable_age=1, srnode=f"127.0.0.1:{srnode.port}") as o,
    ):
        peers.storescu(o.dicom_port, ct + mr, "MODALITY", called_ae="ORTHANC", check=True)
        got = srnode.wait_for(len(ct) + len(mr), timeout=60)
        assert _uids(got) == _uids(ct + mr)
        by_series = {}
        for ds in srnode.datasets():
            by_series.setdefault(str(ds.SeriesInstanceUID), set()).add(str(ds.SOPInstanceUID))
        assert sorted(map(len, by_series.values())) == [2, 3]  # whole series, each once

        # Three ways a derived series comes back; none may be routed again.
        tagged = _derived_copy(ct, tmp_path / "d1", equipment=True, description=True)
        by_desc = _derived_copy(mr, tmp_path / "d2", equipment=False, description=True)
        by_ae = _derived_copy(ct, tmp_path / "d3", equipment=False, description=False)
        peers.storescu(o.dicom_port, tagged, "SRNODE", called_ae="ORTHANC", check=True)
        peers.storescu(o.dicom_port, by_desc, "OTHER", called_ae="ORTHANC", check=True)
        peers.storescu(o.dicom_port, by_ae, "SRNODE", called_ae="ORTHANC", check=True)
        client = o.client()
        for p in tagged[:1]:  # and once over REST (no RemoteAET at all)
            fresh = pydicom.dcmread(p)
            fresh.SeriesInstanceUID = generate_uid()
            fresh.SOPInstanceUID = generate_uid()
            fresh.file_meta.MediaStorageSOPInstanceUID = fresh.SOPInstanceUID
            rest = tmp_path / "rest.dcm"
            fresh.save_as(rest, enforce_file_format=True)
            client.post_instances(rest.read_bytes())
            rest_series = str(fresh.SeriesInstanceUID)

        wanted = {
            peers.series_id(client, str(pydicom.dcmread(s[0]).SeriesInstanceUID))
            for s in (tagged, by_desc, by_ae)
        } | {peers.series_id(client, rest_series)}
        peers.wait_until(
            lambda: wanted <= peers.stable_series_ids(client), 60, what="derived series stable"
        )
        time.sleep(1.5)  # an (unwanted) store job would have started by now
        assert len(srnode.files()) == len(ct) + len(mr)
        assert "srnode autoroute: series" in o.log()  # the sends were logged
        errors = [ln for ln in o.log().splitlines() if ln.startswith("E") and "autoroute" in ln]
        assert errors == []


def test_run_sh_starts_and_stops(tmp_path):
    http, dicom = peers.free_port(), peers.free_port()
    env = peers.nodelay_env(
        {"ORTHANC_HTTP_PORT": str(http), "ORTHANC_DICOM_PORT": str(dicom), "ORTHANC_AUTOROUTE": "0"}
    )
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen(
            ["bash", str(peers.ROOT / "orthanc" / "run.sh")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        peers.wait_port(http, 60, proc)
        peers.wait_port(dicom, 30, proc)
        from pyorthanc import Orthanc

        client = Orthanc(f"http://127.0.0.1:{http}")
        peers.wait_until(lambda: client.get_system().get("DicomAet") == "ORTHANC", 30)
        assert sorted(client.get_plugins()) == ["dicom-web", "explorer.js", "python"]
        storage = (tmp_path / "run.log").read_text().split("storage ", 1)[1].split(",", 1)[0]
        assert os.path.isdir(storage)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, (tmp_path / "run.log").read_text()[-2000:]
    assert not os.path.exists(storage)  # the temporary storage is removed on exit


def test_send_job_is_retried_until_srnode_is_up(tmp_path):
    ct = peers.write_phantom_series(tmp_path / "ct", "CT", n=2, size=64)
    port = peers.free_port()  # nothing listens there yet
    retry = {"RetryDelay": 1, "RetryMaxDelay": 2, "RetryAttempts": 30}
    with peers.orthanc(
        tmp_path / "orthanc", stable_age=1, srnode=f"127.0.0.1:{port}", autoroute_settings=retry
    ) as o:
        peers.storescu(o.dicom_port, ct, "MODALITY", called_ae="ORTHANC", check=True)
        peers.wait_until(lambda: "failed, retry 1" in o.log(), 60, what="first failure")
        with peers.storescp(tmp_path / "srnode", aet="SRNODE", port=port) as srnode:
            got = srnode.wait_for(len(ct), timeout=60)
            assert _uids(got) == _uids(ct)
