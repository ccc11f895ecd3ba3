"""The man-made parts drawn into the radiograph-like training images (DRRs): collimation,
lead markers, burned-in text, electronic shutters."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.overlays import (
    Overlays,
    attenuate,
    burn_in,
    field_mask,
    glyph_mask,
    random_overlays,
)


def test_glyph_mask_draws_the_letter_at_its_size_with_partial_edges() -> None:
    m = glyph_mask("L", 40.0, (100, 100), (50.0, 50.0))
    rows = np.flatnonzero(m.max(1) > 0.5)
    assert 36 <= rows.max() - rows.min() + 1 <= 42  # 40 pixels tall
    assert abs((rows.max() + rows.min()) / 2 - 50) <= 2
    # an L: its foot (bottom rows) is wider than its stem (top rows)
    assert (m[rows.max()] > 0.5).sum() > 2 * (m[rows.min() + 2] > 0.5).sum()
    assert ((m > 0.05) & (m < 0.95)).any()  # anti-aliased edges
    mirrored = glyph_mask("L", 40.0, (100, 100), (50.0, 50.0), mirror=True)
    assert np.abs(mirrored[:, ::-1][:, 1:] - m[:, :-1]).mean() < np.abs(mirrored - m).mean()
    assert glyph_mask("R", 30.0, (50, 50), (-100.0, -100.0)).sum() == 0  # off the image


def test_collimation_attenuates_outside_the_field_with_a_soft_edge() -> None:
    field = field_mask((80, 120), (0.1, 0.2, 0.25, 0.0), 0.0, 1.5)
    assert field[40, 60] == pytest.approx(1.0) and field[2, 60] < 1e-3
    assert field[40, 5] < 1e-3 and field[40, 118] > 0.4
    assert 0.2 < field[8, 60] < 0.8  # the penumbra at the top blade
    proj = np.full((80, 120), 0.5)
    ov = Overlays(collimation=(0.1, 0.2, 0.25, 0.0), blade_attenuation=5.0,
                  markers=(("R", 20.0, 0.5, 0.5, 0.0, False),))  # fmt: skip
    out = attenuate(proj, ov)
    assert out[2, 60] == pytest.approx(5.5, abs=1e-3)  # blades
    assert out[40, 60] > 4.0  # the lead marker at the centre
    assert out[30, 40] == pytest.approx(0.5, abs=1e-3)  # open field, no marker


def test_burned_in_text_and_shutter_are_exact_stored_values() -> None:
    stored = np.full((80, 120), 700, np.uint16)
    ov = Overlays(collimation=(0.2, 0.2, 0.2, 0.2), shutter="bottom",
                  text=(("AP", 14.0, 0.5, 0.5),), text_value="top")  # fmt: skip
    out = burn_in(stored, ov, 1023)
    assert out.dtype == np.uint16 and (out[:10] == 0).all()  # the shutter
    assert (out == 1023).sum() > 20  # the text's fully covered pixels
    assert set(np.unique(out)) - {0, 700, 1023}  # and its anti-aliased edge


def test_random_overlays_vary_and_record_themselves() -> None:
    rng = np.random.default_rng(0)
    draws = [random_overlays(rng) for _ in range(50)]
    assert 25 < sum(d.collimation is not None for d in draws) < 50
    assert 25 < sum(bool(d.markers) for d in draws) < 50
    assert any(d.text for d in draws) and any(d.shutter for d in draws)
    assert set(draws[0].as_dict()) == {"collimation", "collimation_angle", "penumbra_px",
                                       "markers", "text", "shutter"}  # fmt: skip
