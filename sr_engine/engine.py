"""The engine: stored pixels in, super-resolved stored pixels out.

``Engine.load(model, backend)`` resolves a model card, verifies its weights and loads a
backend; ``Engine.enhance(pixels, meta)`` maps each frame to the network's range
(:mod:`.intensity`), runs it in feathered tiles, several per backend call
(:mod:`.tiling`), maps back, projects onto the data-consistent set (:mod:`.consistency`)
and returns integers of the input's dtype within the BitsStored range. Callers never see
floats in [0, 1].
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sr_engine import consistency as dc
from sr_engine import selfcheck
from sr_engine.backends import Backend, create_backend
from sr_engine.intensity import IntensityMap, check_input, stored_limits, to_stored
from sr_engine.meta import PixelMeta
from sr_engine.model_card import ModelCard, load_card
from sr_engine.padding import find_padding
from sr_engine.registry import resolve_model
from sr_engine.tiling import AxisPlan, Blender, TilePlan, cut, plan_axis

log = logging.getLogger(__name__)

ALIGN = 4  # tile edges are multiples of this: whole blocks for pixel-unshuffle (x2: 2, x1: 4)


@dataclass
class Enhanced:
    """The result of one :meth:`Engine.enhance` call.

    ``consistency_rmse``/``consistency_max_abs``: the degradation operator of the card
    applied to ``pixels`` versus the input, in stored units, for the worst frame.
    """

    pixels: np.ndarray
    consistency_rmse: float
    consistency_max_abs: float
    seconds: float


class Engine:
    def __init__(self, card: ModelCard, card_path: Path, backend: Backend) -> None:
        self.card = card
        self.card_path = card_path
        self.backend = backend

    @classmethod
    def load(
        cls,
        model: str | Path,
        backend: str = "auto",
        threads: int = 0,
        model_dirs: Sequence[Path] = (),
    ) -> Engine:
        """``model``: a model name (``ct-x2``) or the path of its card (``.json``).

        Raises ModelCardError (unknown model, bad card, sha256 mismatch) or
        BackendUnavailable (the named backend cannot run here).
        """
        card_path = resolve_model(model, model_dirs)
        card = load_card(card_path, verify=True)
        be = create_backend(backend, card, card.weights_path(card_path), threads)
        log.info(
            "engine: model %s %s (sha256 %s) on %s",
            card.name,
            card.version,
            card.short_sha,
            be.name,
        )
        return cls(card, card_path, be)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def scale(self) -> int:
        return self.card.scale

    def close(self) -> None:
        self.backend.close()

    # -- planning --------------------------------------------------------------------
    def plan(self, height: int, width: int, untiled: bool = False) -> TilePlan:
        """The tiles for one (height, width) frame."""
        t = self.card.tile
        fixed = self.backend.fixed_tile
        if fixed is not None:
            return TilePlan(*_axes(height, width, fixed, t.overlap, True))
        if untiled:
            edge = -(-max(height, width) // ALIGN) * ALIGN
            return TilePlan(*_axes(height, width, (edge, edge), 0, False, align=ALIGN))
        size = max(ALIGN, t.size - t.size % ALIGN)
        return TilePlan(*_axes(height, width, (size, size), t.overlap, False, align=ALIGN))

    def _batch(self) -> int:
        b = self.card.tile.batch
        if self.backend.max_batch is not None:
            b = min(b, self.backend.max_batch)
        return max(1, b)

    # -- inference -------------------------------------------------------------------
    def infer(self, x: np.ndarray, untiled: bool = False) -> np.ndarray:
        """Network range in, network range out: (F, H, W) float32 -> (F, sH, sW) float32.

        Tiles of all frames go to the backend ``card.tile.batch`` at a time.
        """
        f, h, w = x.shape
        s = self.scale
        plan = self.plan(h, w, untiled)
        batch = self._batch()
        out = np.empty((f, h * s, w * s), np.float32)
        per_group = max(1, math.ceil(batch / plan.count))
        for g0 in range(0, f, per_group):
            frames = range(g0, min(f, g0 + per_group))
            blenders = {i: Blender(plan, s) for i in frames}
            jobs = [(i, k, t) for i in frames for k, t in enumerate(cut(x[i], plan))]
            for j0 in range(0, len(jobs), batch):
                chunk = jobs[j0 : j0 + batch]
                inp = np.stack([t for _, _, t in chunk])[:, None]
                res = self.backend.run(inp)
                expected = (len(chunk), 1, inp.shape[2] * s, inp.shape[3] * s)
                if res.shape != expected:
                    raise RuntimeError(
                        f"model {self.card.name}: output shape {res.shape}, expected {expected} "
                        f"(card scale {s})"
                    )
                for (i, k, _), r in zip(chunk, res, strict=True):
                    blenders[i].add(k, r[0])
            for i in frames:
                out[i] = blenders[i].result()
        return out

    def enhance(
        self,
        pixels: np.ndarray,
        meta: PixelMeta,
        consistency: bool = True,
        *,
        untiled: bool = False,
        self_check: bool = True,
    ) -> Enhanced:
        """Super-resolve integer stored pixels (H, W) or (frames, H, W).

        Returns the same dtype, shape (sH, sW) or (frames, sH, sW), values within the
        BitsStored range. ``consistency`` projects each frame so that the card's
        degradation of the output reproduces the input. ``untiled`` runs each frame in
        one piece (for tests and benchmarks). ``self_check`` (with consistency) first
        enhances the frame's own downsampled copy to choose how much of the network's
        detail to keep (:mod:`.selfcheck`).
        """
        t0 = time.perf_counter()
        check_input(pixels, meta)
        frames = pixels if pixels.ndim == 3 else pixels[None]
        s = self.scale
        op = self.card.degradation.operator
        lo, hi = stored_limits(meta, pixels.dtype)
        out = np.empty((frames.shape[0], frames.shape[1] * s, frames.shape[2] * s), pixels.dtype)
        worst = (0.0, 0.0)
        weights = (  # how much network detail the image supports (sr_engine.selfcheck)
            selfcheck.detail_weights(
                lambda c: self.enhance(c, meta, consistency=False, untiled=untiled).pixels,
                frames, s, lo, hi, op,
            )
            if consistency and self_check
            else [1.0] * frames.shape[0]
        )  # fmt: skip
        # a few frames at a time (enough to fill one backend batch): bounded memory
        group = max(1, math.ceil(self._batch() / self.plan(*frames.shape[1:], untiled).count))
        for g0 in range(0, frames.shape[0], group):
            chunk = frames[g0 : g0 + group]
            pads = [find_padding(fr, meta) for fr in chunk]  # padding never seen as tissue
            seen = [f if p is None else p.fill_input(f) for p, f in zip(pads, chunk, strict=True)]
            maps = [IntensityMap.fit(self.card.intensity, meta, fr) for fr in seen]
            x = np.stack([m.forward(fr) for m, fr in zip(maps, seen, strict=True)])
            y = self.infer(x, untiled=untiled)
            for k, (m, fr) in enumerate(zip(maps, chunk, strict=True)):
                z = _pass_through_outside(m.inverse(y[k]), seen[k], m, s)
                z = selfcheck.blend(z, seen[k], weights[g0 + k], s)
                if pads[k] is not None:
                    z = pads[k].restore(z, fr, s)
                if consistency:
                    o = dc.project(z, fr, s, lo, hi, op).astype(pixels.dtype)
                else:
                    o = to_stored(z, meta, pixels.dtype)
                out[g0 + k] = o
                err = dc.errors(o, fr, s, op)
                worst = (max(worst[0], err[0]), max(worst[1], err[1]))
        res = Enhanced(
            pixels=out if pixels.ndim == 3 else out[0],
            consistency_rmse=worst[0],
            consistency_max_abs=worst[1],
            seconds=time.perf_counter() - t0,
        )
        log.debug(
            "enhance: %s -> %s with %s on %s in %.3f s, consistency RMSE %.3f max %.3f",
            pixels.shape,
            res.pixels.shape,
            self.card.name,
            self.backend_name,
            res.seconds,
            res.consistency_rmse,
            res.consistency_max_abs,
        )
        return res


def _pass_through_outside(z: np.ndarray, frame: np.ndarray, m: IntensityMap, s: int) -> np.ndarray:
    """Pixels the network could not see (outside a ct_hu window, where its input was
    clipped) keep their stored value, replicated over their s x s block: the network's
    output there is the window edge, not the image (e.g. padding at -3024 HU)."""
    mask = m.outside(frame)
    if mask is None:
        return z
    up = np.repeat(np.repeat(frame, s, axis=0), s, axis=1).astype(np.float64)
    return np.where(np.repeat(np.repeat(mask, s, axis=0), s, axis=1), up, z)


def _axes(
    height: int, width: int, edges: tuple[int, int], overlap: int, fixed: bool, align: int = ALIGN
) -> tuple[AxisPlan, AxisPlan]:
    return (
        plan_axis(height, edges[0], overlap, align if not fixed else 1, fixed),
        plan_axis(width, edges[1], overlap, align if not fixed else 1, fixed),
    )
