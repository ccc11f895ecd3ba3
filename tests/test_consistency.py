"""Data consistency: the degradation of the output reproduces the input, within limits."""

import numpy as np
import pytest

from sr_engine.consistency import (
    area_down,
    axis_matrices,
    degrade,
    errors,
    project,
    project_area,
)

rng = np.random.default_rng(7)


@pytest.mark.parametrize("s", [2, 4])
def test_area_projection_is_exact_and_integer(s):
    x = rng.integers(0, 4096, (40, 56)).astype(np.uint16)
    z = np.kron(x, np.ones((s, s))) + rng.normal(0, 50, (40 * s, 56 * s))
    y = project_area(z, x, s, 0, 4095)
    assert np.array_equal(y, np.rint(y))
    assert errors(y, x, s) == (0.0, 0.0)
    # without clipping it is the orthogonal projection: block residual added to each pixel
    r = x - area_down(z, s)
    free = z + np.kron(r, np.ones((s, s)))
    inside = (free >= 0).all() and (free <= 4095).all()
    if inside:
        assert np.abs(y - free).max() < 1


def test_mr_background_at_zero_stays_consistent():
    """MR: the background is 0, the network undershoots; clipping after an unbounded
    projection would break consistency, the bounded one keeps it."""
    x = np.zeros((64, 64), np.uint16)
    x[16:48, 16:48] = rng.integers(200, 900, (32, 32))
    x[20:30, 40:44] = 1  # faint values next to the limit
    z = np.kron(x, np.ones((2, 2))) + rng.normal(0, 30, (128, 128))
    naive = np.clip(np.rint(z + np.kron(x - area_down(z, 2), np.ones((2, 2)))), 0, 4095)
    assert errors(naive, x, 2)[0] > 0.5  # what the bounded projection fixes
    y = project(z, x, 2, 0, 4095)
    assert y.min() >= 0
    rmse, worst = errors(y, x, 2)
    assert rmse <= 0.5 and worst == 0


def test_ct_at_stored_minimum_stays_consistent():
    """CT: air at -1024 HU is stored 0 (BitsStored 12, intercept -1024)."""
    x = np.zeros((48, 48), np.int16)
    x[10:40, 10:40] = rng.integers(900, 1200, (30, 30))
    z = np.kron(x, np.ones((4, 4))).astype(float) + rng.normal(0, 80, (192, 192))
    y = project(z, x, 4, 0, 4095)
    assert y.min() >= 0 and y.max() <= 4095
    assert errors(y, x, 4) == (0.0, 0.0)


def test_block_at_both_limits_and_out_of_range_input():
    x = np.array([[0, 4095], [4095, 0]], np.int64)
    z = rng.normal(2000, 3000, (4, 4))
    y = project(z, x, 2, 0, 4095)
    np.testing.assert_array_equal(area_down(y, 2), x)
    # an input outside the stored range cannot be reproduced: clipped, finite
    y = project(z, np.array([[-5, 10], [10, 5000]]), 2, 0, 4095)
    assert y.min() >= 0 and y.max() <= 4095


@pytest.mark.parametrize("op", ["bicubic", "kspace"])
def test_separable_operators_reach_the_bound(op):
    yy, xx = np.mgrid[0:128, 0:128]
    hr = 1000 + 500 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    x = np.rint(degrade(hr, 2, op)).astype(np.int64)
    z = hr + rng.normal(0, 40, hr.shape)
    y = project(z, x, 2, 0, 4095, op)
    assert errors(y, x, 2, op)[0] <= 0.5
    assert np.abs(y - hr).mean() < np.abs(z - hr).mean()  # it also helps


def test_kspace_is_the_magnitude_image_and_its_projection_keeps_the_truth():
    """MR with a zero background (Colin27, Debian mricron-data): truncating k-space rings
    below zero outside the skin; the scanner's magnitude image shows that ring folded up.
    The projection reproduces that input and leaves the true image where it is."""
    from pathlib import Path

    nib = pytest.importorskip("nibabel")
    path = Path("/usr/share/mricron/templates/ch2.nii.gz")
    if not path.is_file():
        pytest.skip(f"{path} (Debian mricron-data) is not installed")
    hr = np.rot90(np.asarray(nib.load(str(path)).dataobj)[:, :, 90]).astype(np.float64)
    hr = hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2]
    dr, _ = axis_matrices("kspace", hr.shape[0] // 2, 2)
    dc, _ = axis_matrices("kspace", hr.shape[1] // 2, 2)
    linear = dr @ hr @ dc.T
    assert linear.min() < -1  # the undershoot next to the zero background
    np.testing.assert_allclose(degrade(hr, 2, "kspace"), np.abs(linear))
    x = np.rint(degrade(hr, 2, "kspace"))
    y = project(hr, x, 2, 0, 255, "kspace")
    assert errors(y, x, 2, "kspace")[0] <= 0.5
    moved = np.abs(y - hr)  # by the rounding of x only (a real-part model moves it by 16)
    assert moved.mean() < 0.15 and moved.max() <= 2
    z = hr + rng.normal(0, 8, hr.shape)
    y = project(z, x, 2, 0, 255, "kspace")
    assert errors(y, x, 2, "kspace")[0] <= 0.5
    assert np.abs(y - hr).mean() < np.abs(z - hr).mean()
