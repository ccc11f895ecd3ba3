"""Generators: shapes (odd sizes, x2/x4), parameter counts, registry, initialisation."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.archs import build_generator, count_params, generator_names  # noqa: E402
from training.archs.rrdbnet_arch import RRDBNet  # noqa: E402


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("skip", [None, "bilinear", "nearest"])
def test_rrdbnet_shapes(scale: int, skip: str | None) -> None:
    m = RRDBNet(1, 1, scale=scale, num_feat=8, num_block=1, num_grow_ch=4, global_skip=skip)
    y = m(torch.rand(2, 1, 13, 9))
    assert y.shape == (2, 1, 13 * scale, 9 * scale)


def test_rrdbnet_sizes_and_defaults() -> None:
    assert count_params(RRDBNet(1, 1, 2, 32, 6, 16)) == 1_108_353  # the bundled size
    assert count_params(RRDBNet()) > 16_000_000  # ESRGAN 64/23/32
    with pytest.raises(ValueError, match="scale"):
        RRDBNet(scale=3)


def test_rrdb_init_is_scaled() -> None:
    torch.manual_seed(0)
    m = RRDBNet(1, 1, 2, num_feat=16, num_block=1, num_grow_ch=8)
    conv = m.body[0].rdb1.conv1
    fan_in = conv.weight[0].numel()
    kaiming_std = (2.0 / fan_in) ** 0.5
    assert 0.05 * kaiming_std < float(conv.weight.detach().std()) < 0.2 * kaiming_std
    assert float(conv.bias.detach().abs().max()) == 0.0


def test_global_skip_is_interpolation_at_zero_trunk() -> None:
    m = RRDBNet(1, 1, 2, num_feat=8, num_block=1, num_grow_ch=4, global_skip="bilinear")
    torch.nn.init.zeros_(m.conv_last.weight)
    torch.nn.init.zeros_(m.conv_last.bias)
    x = torch.rand(1, 1, 10, 12)
    ref = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear")
    assert torch.allclose(m(x), ref, atol=1e-6)


@pytest.mark.parametrize("name", ["SRCNN", "SRResNet", "RRDBNet"])
def test_registry_builds_every_generator(name: str) -> None:
    kw = {"num_feat": 8, "num_block": 1} if name != "SRCNN" else {}
    m = build_generator(name, scale=2, **kw).eval()
    with torch.no_grad():
        assert m(torch.rand(1, 1, 11, 7)).shape == (1, 1, 22, 14)
    assert name in generator_names()


def test_registry_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown generator"):
        build_generator("NoSuchNet")
