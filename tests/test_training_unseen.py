"""The unseen benchmark's definitions (PSNR range, floor), DRR synthesis, packaged sources."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")

from sr_engine import consistency as dc  # noqa: E402
from sr_engine.meta import PixelMeta  # noqa: E402
from training.data.drr import DrrParams, expose, line_integrals  # noqa: E402
from training.data.readers import Volume  # noqa: E402
from training.data.sources import deb_members, split_mosaic  # noqa: E402
from training.evaluate.unseen import (  # noqa: E402
    UnseenImage,
    area_lr,
    interpolate,
    own_resolution,
    score,
    summarize,
    unseen_images,
)


def _img(seed: int = 0) -> UnseenImage:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    hr = 1000 + 800 * ((xx - 30) ** 2 + (yy - 34) ** 2 < 400) + rng.normal(0, 20, (64, 64))
    return UnseenImage("t.dcm", "CT", np.rint(hr).astype(np.int16), PixelMeta("CT", 16, 1))


def test_psnr_uses_the_range_of_the_truth():
    img = _img()
    pred = img.hr.astype(np.float64) + 10.0  # RMSE exactly 10
    rng = float(img.hr.max()) - float(img.hr.min())
    assert score(pred, img.hr)["psnr"] == pytest.approx(20 * np.log10(rng / 10.0), abs=1e-9)
    assert score(img.hr.astype(np.float64), img.hr)["ssim"] == pytest.approx(1.0)


def test_floor_is_bicubic_projected_onto_the_input():
    img = _img()
    lr = area_lr(img)
    assert lr.dtype == img.hr.dtype and lr.shape == (32, 32)
    bic = interpolate("bicubic", lr, img.meta)
    floor = interpolate("floor", lr, img.meta)
    assert np.array_equal(floor, np.rint(floor))  # stored integers
    assert np.abs(dc.area_down(floor, 2) - lr).max() <= 0.5  # consistent with the input
    assert not np.abs(dc.area_down(bic, 2) - lr).max() <= 0.5
    # the floor is the nearest consistent image to bicubic: it beats bicubic on the truth
    assert score(floor, img.hr)["psnr"] > score(bic, img.hr)["psnr"]
    near = interpolate("nearest", lr, img.meta)
    assert np.array_equal(near[::2, ::2], lr)


def test_summary_counts_images_below_the_floor():
    rows = [
        {"group": "CT", "methods": {"bicubic": {"psnr": 30.0, "ssim": 0.9},
                                    "floor": {"psnr": 30.5, "ssim": 0.9},
                                    "m": {"psnr": p, "ssim": 0.9}}}
        for p in (30.2, 32.0, 33.0)
    ]  # fmt: skip
    s = {x["method"]: x for x in summarize(rows)}
    assert s["m"]["below_floor"] == 1 and s["bicubic"]["below_floor"] is None
    assert s["m"]["gain_mean"] == pytest.approx((0.2 + 2 + 3) / 3)
    assert s["m"]["gain_median"] == pytest.approx(2.0) and s["m"]["gain_min"] == pytest.approx(0.2)


@pytest.mark.slow
def test_benchmark_images_are_real_and_deduplicated():
    pytest.importorskip("data_store")
    images, _ = unseen_images()
    groups = {i.group for i in images}
    assert groups == {"CT", "MR", "CR/DX/MG"}
    assert all(min(i.hr.shape) >= 128 and i.hr.shape[0] % 2 == 0 for i in images)
    names = [i.name for i in images] + [a for i in images for a in i.aliases]
    assert len(names) == len(set(names))
    byname = {i.name: i for i in images}
    assert any("693_UNCR.dcm" in [n, *byname[n].aliases] for n in byname)
    assert byname["RG1_J2KR.dcm"].meta.photometric == "MONOCHROME1"
    # eCT_Supplemental's frames are stored as 2x2 pixel replicas: benchmarked at 256x256
    ect = byname["eCT_Supplemental.dcm[0]"]
    assert ect.hr.shape == (256, 256) and "pixel replicas" in ect.note


def test_own_resolution_undoes_pixel_replication_only():
    rng = np.random.default_rng(2)
    small = rng.integers(-1000, 1000, (40, 30)).astype(np.int16)
    rep = np.repeat(np.repeat(small, 2, 0), 2, 1)
    rep[7, 9] += 1  # replicas with a little noise (as eCT_Supplemental's) still count
    img, note = own_resolution(rep)
    assert img.shape == (40, 30) and np.abs(img.astype(int) - small).max() <= 1
    assert "40x30" in note
    natural = rng.integers(-1000, 1000, (80, 60)).astype(np.int16)
    img, note = own_resolution(natural)
    assert img is natural and note == ""


def test_drr_is_a_noisy_quantised_radiograph():
    # a water cylinder with a bone rod, 1 mm voxels
    z, y, x = np.mgrid[:8, :40, :40]
    hu = np.where((y - 20) ** 2 + (x - 20) ** 2 < 225, 0.0, -1000.0)
    hu[(y - 20) ** 2 + (x - 14) ** 2 < 9] = 1000.0
    vol = Volume(np.rint(hu).astype(np.int16), (2.0, 1.0, 1.0), PixelMeta("CT", 16, 1), "c")
    proj = line_integrals(hu.astype(np.float32), vol.spacing, 0.0)
    assert proj.shape == (16, 40)  # slices resampled to the in-plane pixel size
    # water path through the centre: 30 mm x 0.02 /mm (+ the rod); air outside
    assert proj[8, 20] == pytest.approx(0.6, rel=0.05) and proj[8, 1] < 1e-3
    assert proj[8, 14] > proj[8, 26]  # the bone rod attenuates more
    rng = np.random.default_rng(0)
    for bits, mono1 in ((12, False), (15, True)):
        img, meta = expose(proj, DrrParams(photons=1e4, bits=bits, monochrome1=mono1), rng)
        assert img.dtype == np.uint16 and img.max() <= (1 << bits) - 1
        assert meta.bits_stored == bits and meta.photometric == (
            "MONOCHROME1" if mono1 else "MONOCHROME2"
        )
        dense, air = float(img[8, 14]), float(img[8, 1])
        assert (dense < air) if mono1 else (dense > air)  # MONOCHROME1: dense is low
    # quantum noise: fewer photons, noisier flat region
    flat = np.full((64, 64), 1.0)
    lo_n, _ = expose(flat, DrrParams(photons=500, bits=14, blur_px=0), rng)
    hi_n, _ = expose(flat, DrrParams(photons=5e4, bits=14, blur_px=0), rng)
    assert lo_n.std() > 0 and hi_n.std() >= 0


def test_mosaic_split_and_deb_reader(tmp_path: Path):
    tiles = np.arange(9 * 6, dtype=np.uint16).reshape(9, 6)  # 3x3 tiles of 3x2
    out = split_mosaic(tiles, 7, (3, 2))
    assert out.shape == (7, 3, 2) and np.array_equal(out[4], tiles[3:6, 2:4])
    # a minimal Debian package: ar archive holding data.tar.gz with one file
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"DICM"
        info = tarfile.TarInfo("./usr/x/tests/data/b0dwiForFmap/a.dcm")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    payload = buf.getvalue()
    head = f"{'data.tar.gz':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(payload):<10}`\n".encode()
    deb = tmp_path / "x.deb"
    deb.write_bytes(b"!<arch>\n" + head + payload + (b"\n" if len(payload) % 2 else b""))
    assert deb_members(deb) == {"usr/x/tests/data/b0dwiForFmap/a.dcm": b"DICM"}


@pytest.mark.slow
def test_benchmark_command_compares_the_bundled_baseline_and_updates_the_card(tmp_path: Path):
    """`srnode train benchmark` on one CT image: the bundled SRCNN baseline is in the
    table by default, and --update-cards records the model's numbers in its card."""
    import json
    import shutil

    from typer.testing import CliRunner

    from sr_engine.registry import bundled_model_dir
    from training.cli import train_app

    for ext in (".json", ".onnx"):
        shutil.copy(bundled_model_dir() / f"ct-x2{ext}", tmp_path / f"ct-x2{ext}")
    card = tmp_path / "ct-x2.json"
    out = str(tmp_path / "rep")
    args = ["benchmark", "--model", str(card), "--only", "CT_small.dcm",
            "--no-noise", "--update-cards", "--threads", "1", "--out", out]  # fmt: skip
    res = CliRunner().invoke(train_app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = (tmp_path / "rep" / "unseen.md").read_text()
    assert "| CT | SRCNN (srcnn-ct-x2) | 1 |" in report
    unseen = json.loads(card.read_text())["metrics"]["unseen_benchmark"]
    assert unseen["per_modality"]["CT"]["n"] == 1 and unseen["report"] == "rep/unseen.md"
    assert unseen["per_modality"]["CT"]["below_floor"] == 0
