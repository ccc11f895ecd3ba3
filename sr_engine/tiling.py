"""Cutting an image into overlapping tiles and blending the super-resolved tiles back.

Per axis we first choose the number of tiles, then their edge and stride, so the tiles
cover the image evenly with as little recomputed overlap as possible (see
:func:`plan_axis`). All tiles of one image have the same shape, so several of them go
to the backend in one call. Tile edges are multiples of ``align`` (at least the scale),
so networks that pixel-unshuffle their input get whole blocks. Images smaller than a
tile, or not a multiple of ``align``, are padded by reflection at the bottom/right and
the padding is cropped from the output.

Blending is feathered: across the band two neighbouring tiles share, the later tile's
weight is 0 over the band's first quarter (its own border, where the network's padding
shows), ramps linearly to 1 over the middle half and stays 1 over the last quarter; the
earlier tile gets one minus that, so the pair sums to one and seams vanish. Image
borders get full weight.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


@dataclass(frozen=True)
class AxisPlan:
    """Tiles along one axis: ``starts`` in the padded image, common ``edge``, ``padded`` length."""

    length: int
    padded: int
    edge: int
    starts: tuple[int, ...]

    @property
    def covered(self) -> int:
        """Input pixels the network computes along this axis (sum of tile edges)."""
        return self.edge * len(self.starts)


def plan_axis(
    length: int, max_edge: int, overlap: int, align: int = 2, fixed: bool = False
) -> AxisPlan:
    """Plan tiles along one axis of ``length`` pixels.

    ``fixed``: every tile is exactly ``max_edge`` (an engine built for one tile shape).
    Otherwise the fewest tiles ``n`` whose common edge ``ceil((length + (n-1)*overlap)/n)``
    (rounded up to ``align``) fits ``max_edge``; an image that fits one tile is one tile.
    Neighbouring tiles share at least ``overlap`` pixels. The axis is first padded to a
    multiple of ``align`` (to one tile if shorter), so a tiled and an untiled run see the
    same image borders.
    """
    if max_edge % align:
        raise ValueError(f"tile edge {max_edge} is not a multiple of {align}")
    padded = _round_up(length, align)
    if fixed:
        edge = max_edge
        if padded <= edge:
            return AxisPlan(length, edge, edge, (0,))
        n = math.ceil((padded - overlap) / (edge - overlap))
    else:
        if padded <= max_edge:
            return AxisPlan(length, padded, padded, (0,))
        n = 2
        while True:
            edge = _round_up(math.ceil((padded + (n - 1) * overlap) / n), align)
            if edge <= max_edge:
                break
            n += 1
    span = padded - edge
    starts = tuple((i * span) // (n - 1) for i in range(n))
    return AxisPlan(length, padded, edge, starts)


def _band_weight(ov_in: int, scale: int) -> np.ndarray:
    """Weight of the *later* tile across a shared band of ``ov_in`` input pixels.

    0 over the first quarter (the later tile's own border, where its padding shows), a
    linear ramp over the middle half, 1 over the last quarter; the earlier tile gets
    ``1 - w``, so the pair sums to one.
    """
    ov = ov_in * scale
    m = (ov_in // 4) * scale
    ramp = ov - 2 * m
    w = np.zeros(ov, np.float32)
    w[m : m + ramp] = (np.arange(ramp, dtype=np.float32) + 0.5) / ramp
    w[m + ramp :] = 1.0
    return w


def _ramps(plan: AxisPlan, scale: int) -> list[np.ndarray]:
    """1-D output-pixel weights of each tile along one axis."""
    e = plan.edge * scale
    out = []
    for i, s in enumerate(plan.starts):
        w = np.ones(e, np.float32)
        if i > 0:  # shared band with the previous tile
            ov = plan.starts[i - 1] + plan.edge - s
            if ov > 0:
                w[: ov * scale] = _band_weight(ov, scale)
        if i + 1 < len(plan.starts):
            ov = s + plan.edge - plan.starts[i + 1]
            if ov > 0:
                band = slice(e - ov * scale, e)
                w[band] = np.minimum(w[band], 1.0 - _band_weight(ov, scale))
        out.append(w)
    return out


@dataclass(frozen=True)
class TilePlan:
    rows: AxisPlan
    cols: AxisPlan

    @classmethod
    def make(
        cls,
        height: int,
        width: int,
        max_edge: int,
        overlap: int,
        align: int = 2,
        fixed: bool = False,
    ) -> TilePlan:
        return cls(
            plan_axis(height, max_edge, overlap, align, fixed),
            plan_axis(width, max_edge, overlap, align, fixed),
        )

    @property
    def shape(self) -> tuple[int, int]:
        """Input shape of one tile."""
        return self.rows.edge, self.cols.edge

    @property
    def count(self) -> int:
        return len(self.rows.starts) * len(self.cols.starts)

    @property
    def overhead(self) -> float:
        """Computed input pixels / image pixels - 1 (padding and overlaps)."""
        done = self.rows.covered * self.cols.covered
        return done / (self.rows.length * self.cols.length) - 1.0

    def origins(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.rows.starts for x in self.cols.starts]


def pad_reflect(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad (..., H, W) at the bottom/right by reflection to (..., height, width)."""
    ph, pw = height - image.shape[-2], width - image.shape[-1]
    if ph == 0 and pw == 0:
        return image
    pads = [(0, 0)] * (image.ndim - 2) + [(0, ph), (0, pw)]
    mode = "reflect" if min(image.shape[-2:]) > 1 else "edge"
    return np.pad(image, pads, mode=mode)


def cut(image: np.ndarray, plan: TilePlan) -> Iterator[np.ndarray]:
    """The tiles of a 2-D image, in :meth:`TilePlan.origins` order."""
    padded = pad_reflect(image, plan.rows.padded, plan.cols.padded)
    th, tw = plan.shape
    for y, x in plan.origins():
        yield padded[y : y + th, x : x + tw]


class Blender:
    """Accumulates super-resolved tiles with feathered weights into one output image."""

    def __init__(self, plan: TilePlan, scale: int) -> None:
        self.plan = plan
        self.scale = scale
        self._origins = plan.origins()
        self._wy = _ramps(plan.rows, scale)
        self._wx = _ramps(plan.cols, scale)
        ncols = len(plan.cols.starts)
        self._index = [(i // ncols, i % ncols) for i in range(plan.count)]
        shape = (plan.rows.padded * scale, plan.cols.padded * scale)
        self._acc = np.zeros(shape, np.float32)
        self._wsum = np.zeros(shape, np.float32) if plan.count > 1 else None

    def add(self, i: int, tile: np.ndarray) -> None:
        """Add the output of tile ``i`` (shape ``scale * plan.shape``)."""
        s = self.scale
        y, x = self._origins[i]
        th, tw = tile.shape
        if self._wsum is None:
            self._acc[:th, :tw] = tile
            return
        r, c = self._index[i]
        w = self._wy[r][:, None] * self._wx[c][None, :]
        self._acc[y * s : y * s + th, x * s : x * s + tw] += w * tile
        self._wsum[y * s : y * s + th, x * s : x * s + tw] += w

    def result(self) -> np.ndarray:
        s = self.scale
        h, w = self.plan.rows.length * s, self.plan.cols.length * s
        if self._wsum is None:
            out = self._acc
        else:
            out = self._acc / np.maximum(self._wsum, np.float32(1e-12))
        return out[:h, :w]
