"""Tile planning and feathered blending."""

import numpy as np
import pytest

from sr_engine.tiling import Blender, TilePlan, _ramps, cut, pad_reflect, plan_axis


@pytest.mark.parametrize("length", [16, 17, 63, 100, 128, 129, 255, 512, 513, 1000, 2048])
@pytest.mark.parametrize("edge,overlap", [(64, 8), (128, 16), (288, 16)])
def test_axis_plan_covers_evenly_with_shared_bands(length, edge, overlap):
    p = plan_axis(length, edge, overlap, align=4)
    assert p.edge % 4 == 0 and p.edge <= max(edge, p.padded)
    assert p.padded % 4 == 0 and p.padded >= length
    assert p.starts[0] == 0 and p.starts[-1] + p.edge == p.padded
    steps = np.diff(p.starts)
    assert all(p.edge - d >= overlap for d in steps)  # neighbours share >= overlap
    if len(steps):
        assert steps.max() - steps.min() <= 1  # evenly spread
    # fewest tiles: one fewer could not cover with the required overlap
    n = len(p.starts)
    if n > 1:
        assert (n - 1) * edge - (n - 2) * overlap < p.padded


def test_fixed_plan_has_the_engine_tile_shape():
    p = plan_axis(300, 128, 16, align=4, fixed=True)
    assert p.edge == 128 and p.starts[-1] + 128 == p.padded == 300
    small = plan_axis(40, 128, 16, fixed=True)
    assert small.edge == 128 and small.padded == 128 and small.starts == (0,)


def test_tiling_overhead_for_a_512_slice_is_small():
    # the tile size the benchmark and the bundled CPU cards use
    assert TilePlan.make(512, 512, 288, 16, 4).overhead <= 0.10
    assert TilePlan.make(512, 512, 512, 16, 4).overhead == 0


@pytest.mark.parametrize("scale", [2, 4])
def test_ramps_sum_to_one(scale):
    p = plan_axis(300, 96, 16, align=4)
    total = np.zeros(p.padded * scale)
    for s, w in zip(p.starts, _ramps(p, scale), strict=True):
        assert w.min() >= 0 and w.max() <= 1
        total[s * scale : (s + p.edge) * scale] += w
    np.testing.assert_allclose(total, 1, atol=1e-6)


@pytest.mark.parametrize("shape", [(100, 150), (64, 64), (17, 200), (257, 129)])
@pytest.mark.parametrize("scale", [2, 4])
def test_cut_and_blend_reproduce_a_pointwise_network(shape, scale):
    img = np.random.default_rng(1).random(shape).astype(np.float32)
    plan = TilePlan.make(*shape, 64, 16, 4)
    b = Blender(plan, scale)
    tiles = list(cut(img, plan))
    assert len(tiles) == plan.count and all(t.shape == plan.shape for t in tiles)
    for k, t in enumerate(tiles):
        b.add(k, np.kron(t, np.ones((scale, scale), np.float32)))
    out = b.result()
    np.testing.assert_allclose(out, np.kron(img, np.ones((scale, scale))), atol=1e-6)


def test_pad_reflect_mirrors_without_repeating_the_edge():
    a = np.arange(4.0).reshape(1, 4)
    np.testing.assert_array_equal(pad_reflect(np.vstack([a, a]), 2, 6)[0], [0, 1, 2, 3, 2, 1])
