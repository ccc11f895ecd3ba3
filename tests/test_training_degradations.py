"""Degradation operators: area is the block mean, float in and out, sane noise."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.data.degradations import (  # noqa: E402
    OPERATORS,
    area,
    bicubic,
    blur_noise,
    crop_to_multiple,
    degrade,
    degrade_np,
    kspace,
)


def test_area_is_block_mean_and_float() -> None:
    x = torch.rand(1, 1, 8, 6, dtype=torch.float64)
    y = area(x, 2)
    ref = x.reshape(1, 1, 4, 2, 3, 2).mean(dim=(3, 5))
    assert torch.allclose(y, ref)
    # 12/16-bit data stay exact: values 1/4096 apart are not rounded to 8 bits
    z = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) / 4096.0
    out = area(z, 2)
    assert len(torch.unique(out)) == 4
    assert out.dtype == torch.float32


@pytest.mark.parametrize("op", OPERATORS)
def test_every_operator_shape_and_mean(op: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 24) * 0.5 + 0.25
    y = degrade(x, op, 2)
    assert y.shape == (2, 1, 16, 12)
    assert y.is_floating_point()
    assert abs(float(y.mean()) - float(x.mean())) < 0.02


def test_kspace_keeps_constant_and_low_frequencies() -> None:
    x = torch.full((1, 1, 16, 16), 0.3)
    assert torch.allclose(kspace(x, 2), torch.full((1, 1, 8, 8), 0.3), atol=1e-6)


def test_blur_noise_noise_level() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.full((1, 1, 256, 256), 0.5)
    clean = blur_noise(x, 2, blur_sigma=0.8)
    noisy = blur_noise(x, 2, blur_sigma=0.8, photons=1e4, read_sigma=0.01, generator=g)
    std = float((noisy - clean).std())
    expected = (0.5 / 1e4 + 0.01**2) ** 0.5
    assert 0.8 * expected < std < 1.2 * expected


def test_bicubic_and_errors() -> None:
    assert bicubic(torch.rand(1, 1, 10, 10), 2).shape == (1, 1, 5, 5)
    with pytest.raises(ValueError, match="divisible"):
        area(torch.rand(1, 1, 9, 10), 2)
    with pytest.raises(TypeError):
        area(torch.zeros(1, 1, 4, 4, dtype=torch.int16), 2)
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(torch.rand(1, 1, 4, 4), "jpeg")
    assert crop_to_multiple(torch.rand(1, 1, 9, 11), 2).shape == (1, 1, 8, 10)
    out = degrade_np(np.random.default_rng(0).random((9, 11)), "area", 2)
    assert out.shape == (4, 5) and out.dtype == np.float32


# -- parity with the engine: training makes its inputs with the operator the node enforces --
COLIN27 = "/usr/share/mricron/templates/ch2.nii.gz"


def _real_unit_images() -> list[np.ndarray]:
    """Real slices in the network's [0, 1] space: Colin27 T1 MR (zero background, so
    k-space truncation rings below zero at the skin-air edge) and pydicom's CT."""
    from pathlib import Path

    import pydicom
    from pydicom.data import get_testdata_file

    from sr_engine.pixels import read_image
    from training.data.intensity import to_unit

    out = []
    if Path(COLIN27).is_file():
        from training.data.readers import read_nifti

        vol = read_nifti(COLIN27)
        for k in (vol.n_slices // 2, vol.n_slices // 3):
            out.append(to_unit(vol.array[k], {"model": "percentile"}, vol.meta))
    px, meta = read_image(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    out.append(to_unit(px, {"model": "ct_hu", "window": [-1024, 3071]}, meta))
    return [crop_to_multiple(torch.from_numpy(np.asarray(x, np.float64)), 2).numpy() for x in out]


@pytest.mark.parametrize("op", ["area", "bicubic", "kspace"])
def test_training_operators_equal_the_engines(op: str) -> None:
    """The LR a network is trained on is exactly ``sr_engine.consistency.degrade`` of its HR,
    so the engine's data-consistency step keeps the ground truth where it is."""
    from sr_engine import consistency

    images = _real_unit_images()
    assert len(images) >= 1
    for hr in images:
        want = consistency.degrade(hr, 2, op)
        got = degrade(torch.from_numpy(hr)[None, None], op, 2)[0, 0].numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
        got32 = degrade(torch.from_numpy(hr.astype(np.float32))[None, None], op, 2)[0, 0]
        assert got32.dtype == torch.float32
        np.testing.assert_allclose(got32.numpy(), want, rtol=0, atol=2e-6)
