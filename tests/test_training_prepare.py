"""`srnode train prepare --cache`: packaged sources read from the cache, split, DRRs; the
training images get the engine's padding fill."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

nrrd = pytest.importorskip("nrrd")
pytest.importorskip("scipy")

from sr_engine.meta import PixelMeta  # noqa: E402
from training.data.prepare import load_prepared, prepare_cached, write_prepared  # noqa: E402
from training.data.readers import Volume  # noqa: E402


def _nrrd_bytes(a: np.ndarray, spacing: tuple[float, float, float], tmp: Path) -> bytes:
    p = tmp / "x.nrrd"
    nrrd.write(str(p), a, {"space": "left-posterior-superior",
                           "space directions": np.diag(spacing)})  # fmt: skip
    return p.read_bytes()


def _fake_radiomics(cache: Path, tmp: Path) -> None:
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:12, :64, :64]
    body = ((yy - 32) ** 2 + (xx - 32) ** 2 < 600) & (zz >= 0)
    ct = np.where(body, 40 + rng.normal(0, 10, body.shape), -1000).astype(np.int16)
    mr = np.where(body, 800 + rng.normal(0, 30, body.shape), 0).astype(np.int16)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, a in (("lung1", ct), ("lung2", ct), ("brain1", mr), ("brain2", mr)):
            data = _nrrd_bytes(np.transpose(a, (2, 1, 0)), (0.8, 0.8, 2.5), tmp)
            info = tarfile.TarInfo(f"pyradiomics-3.0.1/data/{name}_image.nrrd")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (cache / "pyradiomics-3.0.1.tar.gz").write_bytes(buf.getvalue())


def test_prepare_cached_splits_sources_and_makes_drrs(tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "data"
    cache.mkdir()
    _fake_radiomics(cache, tmp_path)
    paths = prepare_cached(out, cache, cranium=tmp_path / "absent.inv3")
    names = {p.stem for p in paths}
    assert {"radiomics-lung1", "radiomics-brain2"} <= names
    docs = {d["name"]: d for d in load_prepared(out)}
    lung = docs["radiomics-lung1"]
    assert lung["volume"].shape == (12, 64, 64) and lung["volume"].dtype == np.int16
    assert lung["spacing_mm"] == pytest.approx([2.5, 0.8, 0.8])
    assert lung["meta"]["modality"] == "CT" and "BSD-3-Clause" in lung["license"]
    used = sorted(i for r in lung["slabs"].values() for a, b in r for i in range(a, b))
    assert len(used) == len(set(used)) and lung["slabs"]["val"] and lung["slabs"]["test"]
    drrs = [d for n, d in docs.items() if n.startswith("drr-")]
    assert len(drrs) == 24  # 12 angles x 2 CT subjects
    held = [d for d in drrs if d["name"].startswith("drr-radiomics-lung2")]
    assert all(not d["slabs"]["train"] for d in held)  # patient level: lung2's DRRs held out
    assert all(d["meta"]["bits_stored"] in range(10, 16) for d in drrs)
    assert {d["meta"]["photometric"] for d in drrs} == {"MONOCHROME1", "MONOCHROME2"}


def test_training_images_get_the_engines_padding_fill(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    del torch
    from training.data.dataset import split_images

    yy, xx = np.mgrid[:64, :64]
    inside = (yy - 32) ** 2 + (xx - 32) ** 2 < 28**2
    vol = np.where(inside, 1024 + 40, 1024 - 3024 + 1024)[None].repeat(3, 0)  # -3024 HU outside
    stored = (vol - 1024).astype(np.int16)  # signed HU, padding -3024 HU
    v = Volume(stored, (1.0, 1.0, 1.0), PixelMeta("CT", 16, 1), "p")
    write_prepared(tmp_path, "pad-ct", v, {"train": [(0, 3)], "val": [], "test": []})
    imgs = split_images(load_prepared(tmp_path), "train", {"model": "ct_hu",
                                                           "window": [-1024, 3071]})  # fmt: skip
    x = imgs[0]
    tissue = (40 + 1024) / 4095
    assert np.allclose(x[inside], tissue, atol=1e-6)
    assert np.allclose(x[~inside], tissue, atol=1e-3)  # padding filled, not clipped to 0
