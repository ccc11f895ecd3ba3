"""Every output transfer syntax, sent with C-STORE to dcmtk's storescp: the file it
writes is in the syntax asked for and decodes to exactly the derived pixels. A peer that
refuses a compressed syntax gets explicit VR little endian, with the same pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from dicom_node.config_routing import DimseDestination
from dicom_node.derive.process import enhance_instance, save_derived
from dicom_node.export.send import send
from sr_engine.model_card import load_card
from tests.node_helpers import STORESCP, Proc, free_port, received, wait_port
from tests.onnx_models import write_test_model
from tests.test_derive import NearestEngine

pytestmark = pytest.mark.integration

SYNTAXES = {
    "explicit-vr-little-endian": ExplicitVRLittleEndian,
    "jpeg2000-lossless": JPEG2000Lossless,
    "jpegls-lossless": JPEGLSLossless,
    "rle-lossless": RLELossless,
    "deflated": DeflatedExplicitVRLittleEndian,
}

# a signed 16-bit CT, an unsigned 16-bit MR stored JPEG 2000 lossless, an 8-bit MR in
# JPEG-LS lossless, a big endian multi-frame US-free MR
SOURCES = ["CT_small.dcm", "MR_small_jp2klossless.dcm", "emri_small_jpeg_ls_lossless.dcm"]


@pytest.fixture(scope="module")
def derived(tmp_path_factory) -> dict[str, Path]:
    """Derived files of real sources, as the worker stores them."""
    engine = NearestEngine(load_card(write_test_model(tmp_path_factory.mktemp("models"))))
    out_dir = tmp_path_factory.mktemp("derived")
    files = {}
    for name in SOURCES:
        src = pydicom.dcmread(get_testdata_file(name))
        out, _ = enhance_instance(src, engine)
        files[name] = save_derived(out, out_dir / f"{out.SOPInstanceUID}.dcm")
    return files


def _storescp(tmp_path: Path, *accept: str) -> tuple[Proc, int, Path]:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    p = Proc([STORESCP, "-aet", "DEST", "-od", str(out), *accept, str(port)], tmp_path / "scp.log")
    wait_port(port, 20, p)
    return p, port, out


def _dest(port: int, syntax: str | None) -> DimseDestination:
    return DimseDestination(
        name="dest", ae_title="DEST", host="127.0.0.1", port=port, transfer_syntax=syntax
    )


def _same_pixels(files: dict[str, Path], got: dict[str, pydicom.Dataset]) -> None:
    assert len(got) == len(files)
    for path in files.values():
        want = pydicom.dcmread(path)
        back = got[str(want.SOPInstanceUID)]
        assert np.array_equal(back.pixel_array, want.pixel_array)
        assert back.pixel_array.dtype == want.pixel_array.dtype


@pytest.mark.parametrize("name", list(SYNTAXES))
def test_every_syntax_decodes_to_the_same_pixels(derived, tmp_path, name) -> None:
    scp, port, out = _storescp(tmp_path, "+xa")
    try:
        res = send(_dest(port, name), list(derived.values()), "SRNODE")
    finally:
        scp.close()
    assert res.all_ok, res.failed
    got = received(out)
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in got.values()} == {SYNTAXES[name]}
    _same_pixels(derived, got)


def test_a_syntax_by_uid(derived, tmp_path) -> None:
    scp, port, out = _storescp(tmp_path, "+xa")
    try:
        res = send(_dest(port, str(RLELossless)), [derived["CT_small.dcm"]], "SRNODE")
    finally:
        scp.close()
    assert res.all_ok, res.failed
    (ds,) = received(out).values()
    assert ds.file_meta.TransferSyntaxUID == RLELossless


def test_default_follows_the_source(derived, tmp_path) -> None:
    """No transfer_syntax: JPEG 2000 lossless for sources that came compressed
    losslessly, explicit VR little endian for an uncompressed source."""
    assert pydicom.dcmread(derived["CT_small.dcm"]).file_meta.TransferSyntaxUID == (
        ExplicitVRLittleEndian
    )
    scp, port, out = _storescp(tmp_path, "+xa")
    try:
        res = send(_dest(port, None), list(derived.values()), "SRNODE")
    finally:
        scp.close()
    assert res.all_ok, res.failed
    got = received(out)
    by_source = {
        name: got[str(pydicom.dcmread(p).SOPInstanceUID)].file_meta.TransferSyntaxUID
        for name, p in derived.items()
    }
    assert by_source == {
        "CT_small.dcm": ExplicitVRLittleEndian,
        "MR_small_jp2klossless.dcm": JPEG2000Lossless,
        "emri_small_jpeg_ls_lossless.dcm": JPEG2000Lossless,
    }
    _same_pixels(derived, got)


@pytest.mark.parametrize("name", ["jpeg2000-lossless", "jpegls-lossless", "deflated"])
def test_peer_that_refuses_gets_little_endian(derived, tmp_path, name) -> None:
    """storescp without +xa accepts uncompressed syntaxes only."""
    scp, port, out = _storescp(tmp_path)
    try:
        res = send(_dest(port, name), list(derived.values()), "SRNODE")
    finally:
        scp.close()
    assert res.all_ok, res.failed
    got = received(out)
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in got.values()} <= {
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    }
    _same_pixels(derived, got)


@pytest.mark.parametrize("name", ["jpegls-lossless", "rle-lossless"])
def test_stow_sends_the_syntax_asked_for(derived, tmp_path, name) -> None:
    """STOW-RS to Orthanc, which stores what it receives as it came."""
    import io

    from dicom_node.config_routing import StowDestination
    from tests import pacs_peers as peers

    if not peers.have_orthanc():
        pytest.skip("Orthanc with the DICOMweb plugin is not installed")
    with peers.orthanc(tmp_path / "orthanc", autoroute=False) as o:
        dest = StowDestination(name="web", kind="stow", url=o.dicomweb, transfer_syntax=name)
        res = send(dest, list(derived.values()), "SRNODE")
        assert res.all_ok, res.failed
        client = o.client()
        got = {}
        for i in client.get_instances():
            ds = pydicom.dcmread(io.BytesIO(client.get_instances_id_file(i)))
            got[str(ds.SOPInstanceUID)] = ds
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in got.values()} == {SYNTAXES[name]}
    _same_pixels(derived, got)
