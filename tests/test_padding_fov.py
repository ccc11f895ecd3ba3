"""The edge of a CT's field of view where it crosses an object: padding comes back
bit-exact and nothing is invented next to it.

Real CTs with truncated fields of view: pydicom-data's 693_UNCR (a scan circle padded
with PixelPaddingValue) and slices of the InVesalius Cranium volume (Debian's
invesalius-examples) with a scan circle cut in at -3024 HU through the skull and the
head holder, with and without a PixelPaddingValue tag. They go through the engine with a
real ONNX graph and the derive path. A block at the edge (a tissue pixel with padding in
its 3x3 neighbourhood) may only hold values within [min, max] of the tissue (non-padding)
values of that neighbourhood, widened by three times the image's noise: no padding value
inside it, nothing well above the local maximum (the dotted chain that read as
calcification), no ringing below the minimum.
"""

from __future__ import annotations

import gzip
import io
import plistlib
import tarfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from dicom_node.derive.pixels import read_pixels
from dicom_node.derive.process import enhance_instance
from sr_engine.engine import Engine
from sr_engine.meta import PixelMeta
from sr_engine.padding import _noise_sigma, find_padding
from tests.onnx_models import write_test_model
from tests.test_intensity import data_store_file

CRANIUM = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
PAD_HU = -3024


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    card = write_test_model(
        tmp_path_factory.mktemp("models"),
        "ct-fov",
        intensity={"model": "ct_hu", "window": [-1024, 3071]},
        tile={"size": 64, "overlap": 8, "batch": 8},
    )
    eng = Engine.load(card, backend="onnxruntime", threads=1)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def cranium() -> np.ndarray:
    """The Cranium volume, (108, 256, 256) int16 HU."""
    if not CRANIUM.exists():
        pytest.skip("invesalius-examples not installed (tests/run.sh installs it)")
    with gzip.open(CRANIUM, "rb") as gz, tarfile.open(fileobj=io.BytesIO(gz.read())) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        plist = plistlib.loads(tar.extractfile(members["main.plist"]).read())
        mat = plist["matrix"]
        raw = tar.extractfile(members[mat["filename"]]).read()
    return np.frombuffer(raw, np.dtype(mat["dtype"]).newbyteorder("<")).reshape(mat["shape"])


def _truncated_ct(hu: np.ndarray, radius: float, tagged: bool) -> Dataset:
    """A CT instance (CT_small's header) holding ``hu`` with everything outside a scan
    circle of ``radius`` pixels set to -3024 HU, stored as HU + 1024."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    h, w = hu.shape
    yy, xx = np.mgrid[:h, :w] + 0.5
    cut = np.where(np.hypot(yy - h / 2, xx - w / 2) < radius, hu, PAD_HU)
    stored = (cut.astype(np.int32) + 1024).astype(np.int16)
    ds.Rows, ds.Columns = h, w
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    if tagged:
        ds.PixelPaddingValue = PAD_HU + 1024
    elif "PixelPaddingValue" in ds:
        del ds.PixelPaddingValue
    ds.PixelData = stored.tobytes()
    return ds


def _check_edge(lr: np.ndarray, meta: PixelMeta, out: np.ndarray, pad: int, s: int) -> int:
    """Assert the FOV-edge contract on one frame; return the number of edge blocks."""
    h, w = lr.shape
    blocks = out.reshape(h, s, w, s).transpose(0, 2, 1, 3).reshape(h, w, s * s)
    is_pad = lr == pad
    assert (blocks[is_pad] == pad).all(), "pure padding blocks are not bit-exact"
    x = lr.astype(np.float64)
    lo = np.full((h, w), np.inf)
    hi = np.full((h, w), -np.inf)
    near_pad = np.zeros((h, w), bool)
    xp = np.pad(x, 1, constant_values=np.nan)
    pp = np.pad(is_pad, 1, constant_values=False)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            v = xp[dy : dy + h, dx : dx + w]
            p = pp[dy : dy + h, dx : dx + w]
            tissue = ~p & ~np.isnan(v)
            lo = np.where(tissue, np.minimum(lo, v), lo)
            hi = np.where(tissue, np.maximum(hi, v), hi)
            near_pad |= p
    edge = near_pad & ~is_pad
    eb = blocks[edge]
    # the range may widen by three times the image's noise, as the node estimates it (a
    # few sub-pixels' mean is noisier than the block means): never by a calcification
    plan = find_padding(lr, meta)
    sigma = _noise_sigma(x, ~plan.region)
    assert sigma < 20, f"noise estimate {sigma:.1f} stored units: the tolerance says nothing"
    tol = 3 * sigma + 1.5  # and the rounding of the output
    below = eb < lo[edge][:, None] - tol
    above = eb > hi[edge][:, None] + tol
    bad = (below | above).any(-1)
    assert not bad.any(), (
        f"{int(bad.sum())} of {int(edge.sum())} edge blocks hold values outside their "
        f"neighbourhood's tissue range (worst above: "
        f"{float((eb - hi[edge][:, None]).max()):.0f}, "
        f"worst below: {float((lo[edge][:, None] - eb).max()):.0f} stored units)"
    )
    # and the block means are the input's (data consistency)
    assert np.abs(blocks.mean(-1) - x).max() <= 0.5
    return int(edge.sum())


@pytest.mark.parametrize("tagged", [False, True])
@pytest.mark.parametrize(
    ("z", "radius"),
    [(20, 100.0), (54, 104.0), (90, 80.0), (20, 120.0)],  # the last: through the holder
)
def test_cranium_scan_circle_through_the_skull(engine, cranium, z, radius, tagged) -> None:
    src = _truncated_ct(cranium[z], radius, tagged)
    lr = read_pixels(src)
    pad = PAD_HU + 1024
    # the circle cuts through the object: bone and soft tissue touch the padding
    yy, xx = np.mgrid[:256, :256] + 0.5
    rim = np.abs(np.hypot(yy - 128, xx - 128) - radius) < 1.5
    assert (lr[rim] > 1024 + 300).sum() > 10, "the circle does not cross bone"
    out, _ = enhance_instance(src, engine)
    pixels = read_pixels(out)
    assert pixels.shape == (512, 512)
    assert _check_edge(lr, PixelMeta.from_dataset(src), pixels, pad, 2) > 200


@pytest.mark.slow  # a 512x512 CT through the engine
def test_real_scan_circle_with_pixel_padding_value(engine) -> None:
    path = data_store_file("693_UNCR.dcm")
    if not path.exists():
        pytest.skip("693_UNCR.dcm not in pydicom-data")
    src = pydicom.dcmread(path)
    pad = int(src.PixelPaddingValue)
    lr = read_pixels(src)
    assert (lr == pad).mean() > 0.1  # a real truncated field of view
    out, _ = enhance_instance(src, engine)
    assert _check_edge(lr, PixelMeta.from_dataset(src), read_pixels(out), pad, 2) > 100


def test_floor_path_keeps_the_edge_too(engine, cranium, monkeypatch) -> None:
    """A frame the self-check gives the floor (cubic interpolation, no network) holds the
    same contract at the field-of-view edge."""
    from sr_engine import selfcheck

    monkeypatch.setattr(selfcheck, "detail_weights", lambda *a, **k: [0.0])
    src = _truncated_ct(cranium[54], 104.0, tagged=False)
    lr = read_pixels(src)
    out, _ = enhance_instance(src, engine)
    meta = PixelMeta.from_dataset(src)
    assert _check_edge(lr, meta, read_pixels(out), PAD_HU + 1024, 2) > 200


def test_scan_circle_edge_placed_to_the_sub_pixel(cranium) -> None:
    """A scan circle through noisy air (the head of Cranium in a 512² field), cut at the full
    resolution and area-downsampled: the floor puts the padding sub-pixels of the edge
    blocks where the circle put them (ordered by the bilinear padding fraction, 29 % of the
    blocks that hold padding were wrong; by the cubic, 2 %)."""
    from sr_engine.consistency import area_down
    from sr_engine.selfcheck import floor_frame

    hu = np.full((512, 512), -1000.0) + np.random.default_rng(0).normal(0.0, 15.0, (512, 512))
    hu[128:384, 128:384] = cranium[54]
    yy, xx = np.mgrid[:512, :512] + 0.5
    hr = np.where(np.hypot(yy - 257.3, xx - 254.6) < 247.7, np.clip(hu, -1024, None), PAD_HU)
    hr = np.rint(hr + 1024).astype(np.int16)
    lr = np.rint(area_down(hr.astype(np.float64), 2)).astype(np.int16)
    meta = PixelMeta(modality="CT", bits_stored=16, pixel_representation=1,
                     rescale_slope=1.0, rescale_intercept=-1024.0)  # fmt: skip
    pad = PAD_HU + 1024
    out = floor_frame(lr, meta, 2, -32768, 32767)
    hb = hr.reshape(256, 2, 256, 2).transpose(0, 2, 1, 3).reshape(256, 256, 4)
    ob = out.reshape(256, 2, 256, 2).transpose(0, 2, 1, 3).reshape(256, 256, 4)
    k = (hb == pad).sum(-1)
    mixed = (k > 0) & (k < 4)
    assert mixed.sum() > 400
    wrong = ((hb == pad) != (ob == pad)).any(-1) & mixed
    assert wrong.sum() <= 0.05 * mixed.sum(), f"{int(wrong.sum())} of {int(mixed.sum())}"
