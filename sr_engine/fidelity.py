"""The fidelity gate: a reduced-precision path against the fp32 reference, on real slices.

Each candidate runs the whole engine (intensity map, tiles, data consistency) on the
calibration slices shipped in ``models/calibration`` (real CT and MR from permissively
licensed sources, see the README there); the reference is ONNX Runtime in fp32. The error
is ``|candidate - reference|`` in stored units over every pixel of every slice, as its
99.9th percentile and its maximum, against the card's ``fidelity`` block (or the
defaults, :meth:`ModelCard.fidelity_gate`). A path over either limit is never used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sr_engine.meta import PixelMeta
from sr_engine.model_card import Fidelity, ModelCard

if TYPE_CHECKING:
    from sr_engine.backends import Backend

CALIBRATION_DIR = Path(__file__).resolve().parent / "models" / "calibration"


@dataclass(frozen=True)
class CalibrationSlice:
    name: str
    pixels: np.ndarray
    meta: PixelMeta

    @property
    def stored_range(self) -> float:
        """The BitsStored range of the slice (4095 for 12 bits)."""
        return float(self.meta.stored_max - self.meta.stored_min)


@lru_cache(maxsize=1)
def _all_slices() -> tuple[CalibrationSlice, ...]:
    index = json.loads((CALIBRATION_DIR / "tiles.json").read_text())
    with np.load(CALIBRATION_DIR / "tiles.npz") as arrays:
        out = []
        for item in index:
            meta = PixelMeta(
                modality=item["modality"],
                bits_stored=item["bits_stored"],
                pixel_representation=item["pixel_representation"],
                rescale_slope=item["rescale_slope"],
                rescale_intercept=item["rescale_intercept"],
            )
            out.append(CalibrationSlice(item["name"], arrays[item["name"]].copy(), meta))
    return tuple(out)


def calibration_slices(card: ModelCard) -> list[CalibrationSlice]:
    """The slices of the card's modalities (CT for a ``ct_hu`` card); all of them for a
    card serving neither CT nor MR (no real radiograph ships with a permissive licence)."""
    slices = _all_slices()
    if card.is_ct:
        return [s for s in slices if s.meta.modality == "CT"]
    wanted = {m.upper() for m in card.modalities} & {s.meta.modality for s in slices}
    return [s for s in slices if s.meta.modality in wanted] or list(slices)


@dataclass(frozen=True)
class FidelityResult:
    """Error of a path against fp32, in the gate's unit (stored units or range fraction)."""

    p999: float
    max: float
    gate: Fidelity

    @property
    def passed(self) -> bool:
        return self.p999 <= self.gate.p999 and self.max <= self.gate.max

    def describe(self) -> str:
        if self.gate.unit == "range":
            return f"p99.9 {100 * self.p999:.3f} % / max {100 * self.max:.3f} % of range"
        return f"p99.9 {self.p999:.2f} / max {self.max:.2f} stored units"


def enhance_slices(
    card: ModelCard, card_path: Path, backend: Backend, slices: list[CalibrationSlice]
) -> list[np.ndarray]:
    """Each slice through the whole engine on ``backend``, with data consistency and the
    network's detail in full: the self-check is off, since a frame it sends to the floor
    would hide the backend's error from the gate."""
    from sr_engine.engine import Engine

    engine = Engine(card, card_path, backend)
    results = engine.enhance_many([(s.pixels, s.meta) for s in slices], self_check=False)
    return [r.pixels for r in results]


def compare(
    card: ModelCard,
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    slices: list[CalibrationSlice],
) -> FidelityResult:
    """p99.9 and max of ``|candidate - reference|`` over all pixels, in the gate's unit."""
    gate = card.fidelity_gate()
    errs = []
    for ref, out, s in zip(reference, candidate, slices, strict=True):
        d = np.abs(out.astype(np.float64) - ref.astype(np.float64)).ravel()
        errs.append(d / s.stored_range if gate.unit == "range" else d)
    e = np.concatenate(errs)
    return FidelityResult(float(np.percentile(e, 99.9)), float(e.max()), gate)
