"""`srnode pull` against a real Orthanc: QIDO/WADO-RS, C-GET and C-MOVE, into the real ingest."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

from dicom_node.config import Settings
from dicom_node.config_routing import DimseDestination, StowDestination
from dicom_node.receive.ingest import Ingestor
from dicom_node.receive.pull import PullError, pull
from dicom_node.spool import Spool
from dicom_node.store.database import Database
from tests import pacs_peers as peers
from tests.node_helpers import SRNODE, write_config
from tests.onnx_models import write_test_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (peers.have_orthanc() and peers.have_dcmtk()), reason="needs Orthanc + plugins, dcmtk"
    ),
]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc holding one study (CT 3 slices + MR 2 slices), SRNODE -> a storescp."""
    t = tmp_path_factory.mktemp("pull")
    ct = peers.write_phantom_series(t / "ct", "CT", n=3, size=64)
    study = str(pydicom.dcmread(ct[0]).StudyInstanceUID)
    mr = peers.write_phantom_series(t / "mr", "MR", n=2, study_uid=study)
    with (
        peers.storescp(t / "moved", aet="SRNODE") as scp,
        peers.orthanc(t / "orthanc", srnode=f"127.0.0.1:{scp.port}", autoroute=False) as o,
    ):
        client = o.client()
        for p in ct + mr:
            client.post_instances(p.read_bytes())
        yield {"orthanc": o, "scp": scp, "study": study, "ct": ct, "mr": mr, "t": t}


def sops(paths) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


@pytest.fixture
def node(tmp_path):
    settings = Settings.model_validate({"node": {"data_dir": str(tmp_path / "data")}})
    db = Database.from_settings(settings)
    db.create_or_migrate()
    spool = Spool(tmp_path / "data" / "spool")
    yield Ingestor(db, spool), spool
    db.close()


def spooled(spool: Spool) -> set[str]:
    return sops(p for p in Path(spool.root).rglob("*.dcm"))


def test_pull_by_wado_rs(pacs, node):
    ingestor, spool = node
    dest = StowDestination(name="WEB", kind="stow", url=pacs["orthanc"].dicomweb)
    result = pull(dest, pacs["study"], ingestor.store)
    assert (result.method, result.series, result.stored, result.failed) == ("wado", 2, 5, [])
    assert spooled(spool) == sops(pacs["ct"] + pacs["mr"])
    mr_series = str(pydicom.dcmread(pacs["mr"][0]).SeriesInstanceUID)
    again = pull(dest, pacs["study"], ingestor.store, series_uids=[mr_series])
    assert (again.series, again.stored) == (1, 2)  # re-pulling is idempotent


def test_pull_by_c_get(pacs, node):
    ingestor, spool = node
    o = pacs["orthanc"]
    dest = DimseDestination(name="PACS", ae_title="ORTHANC", host="127.0.0.1", port=o.dicom_port)
    result = pull(dest, pacs["study"], ingestor.store, calling_ae="SRNODE")
    assert (result.method, result.stored, result.failed) == ("cget", 5, [])
    assert spooled(spool) == sops(pacs["ct"] + pacs["mr"])


def test_pull_by_c_move_to_our_ae(pacs):
    o = pacs["orthanc"]
    dest = DimseDestination(name="PACS", ae_title="ORTHANC", host="127.0.0.1", port=o.dicom_port)
    ct_series = str(pydicom.dcmread(pacs["ct"][0]).SeriesInstanceUID)
    result = pull(
        dest, pacs["study"], lambda *a, **k: 0, series_uids=[ct_series], method="move",
        calling_ae="SRNODE",
    )  # fmt: skip
    assert (result.method, result.stored, result.failed) == ("cmove", 3, [])
    assert sops(pacs["scp"].wait_for(3)) == sops(pacs["ct"])


def test_unknown_study_and_unreachable_peer(pacs, node):
    ingestor, _ = node
    o = pacs["orthanc"]
    with pytest.raises(PullError, match="no matching series"):
        pull(StowDestination(name="W", kind="stow", url=o.dicomweb), "1.2.3.4.5", ingestor.store)
    dimse = DimseDestination(name="P", ae_title="ORTHANC", host="127.0.0.1", port=o.dicom_port)
    with pytest.raises(PullError, match="not found|refused"):
        pull(dimse, "1.2.3.4.5", ingestor.store, calling_ae="SRNODE")
    down = DimseDestination(name="D", ae_title="X", host="127.0.0.1", port=peers.free_port())
    with pytest.raises(PullError):
        pull(down, pacs["study"], ingestor.store)


def test_cli_pull(pacs, tmp_path):
    card = write_test_model(tmp_path / "models")
    o = pacs["orthanc"]
    cfg = write_config(
        tmp_path / "srnode.toml",
        data_dir=tmp_path / "data",
        port=peers.free_port(),
        model_card=card,
        destinations=[
            {"name": "ORTHANC", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": o.dicom_port},
            {"name": "ORTHANC-WEB", "kind": "stow", "url": o.dicomweb},
        ],
    )
    for source in ("ORTHANC-WEB", "ORTHANC"):
        r = subprocess.run(
            [SRNODE, "pull", pacs["study"], "--from", source, "--config", str(cfg)],
            capture_output=True, text=True, timeout=120, env=peers.nodelay_env(),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        assert "5 instances stored, 0 failed" in r.stdout
    assert spooled(Spool(tmp_path / "data" / "spool")) == sops(pacs["ct"] + pacs["mr"])
    r = subprocess.run(
        [SRNODE, "pull", pacs["study"], "--from", "NOWHERE", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "not a configured destination" in r.stderr
