"""Degradation operators: area is the block mean, float in and out, sane noise."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.degradations import (  # noqa: E402
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
