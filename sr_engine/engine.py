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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sr_engine import consistency as dc
from sr_engine import selfcheck
from sr_engine.backends import Backend, create_backend
from sr_engine.errors import BackendUnavailable
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
    ``detail_weights``: per frame, the share of the network's detail the self-check kept
    (0: the frame is the floor, :func:`sr_engine.selfcheck.floor_frame`, bit for bit).
    """

    pixels: np.ndarray
    consistency_rmse: float
    consistency_max_abs: float
    seconds: float
    detail_weights: tuple[float, ...] = ()


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
        cache_dir: Path | None = None,
    ) -> Engine:
        """``model``: a model name (``ct-x2``) or the path of its card (``.json``).

        ``backend="auto"`` picks the fastest path on this host that passes the card's
        fidelity gate, measured at the first load and cached in ``cache_dir`` (default
        :func:`sr_engine.selection.default_cache_dir`); any other name forces that path
        (a reduced-precision CPU path still has to pass the gate). ``threads`` 0: one per
        usable physical core.

        Raises ModelCardError (unknown model, bad card, sha256 mismatch) or
        BackendUnavailable (the named backend cannot run here, or fails the gate).
        """
        from sr_engine.selection import check_gate, select_backend

        card_path = resolve_model(model, model_dirs)
        card = load_card(card_path, verify=True)
        if backend == "auto":
            be, _ = select_backend(card, card_path, threads, cache_dir)
        else:
            be = create_backend(backend, card, card.weights_path(card_path), threads)
            try:
                check_gate(backend, be, card, card_path, threads, cache_dir)
            except BackendUnavailable:
                be.close()
                raise
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
        """Network range in, network range out: (F, H, W) float32 -> (F, sH, sW) float32."""
        return np.stack(self.infer_frames(list(x), untiled))

    def infer_frames(self, frames: Sequence[np.ndarray], untiled: bool = False) -> list[np.ndarray]:
        """Network range in and out for frames of any shapes: (H, W) -> (sH, sW) float32.

        The tiles of all frames go to the backend ``card.tile.batch`` at a time, tiles of
        one shape per call (frames of one shape share a plan), in the frames' order.
        """
        s = self.scale
        batch = self._batch()
        plans = {fr.shape: self.plan(*fr.shape, untiled) for fr in frames}
        blenders = [Blender(plans[fr.shape], s) for fr in frames]
        by_shape: dict[tuple[int, int], list[tuple[int, int, np.ndarray]]] = {}
        for i, fr in enumerate(frames):
            for k, t in enumerate(cut(fr, plans[fr.shape])):
                by_shape.setdefault(t.shape, []).append((i, k, t))
        for jobs in by_shape.values():
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
        return [b.result() for b in blenders]

    def _detail_weights(
        self, pixels: np.ndarray, meta: PixelMeta, untiled: bool, check: bool
    ) -> list[float]:
        """How much of the network's detail each frame of one image supports
        (:mod:`.selfcheck`); all 1.0 without the check."""
        frames = pixels if pixels.ndim == 3 else pixels[None]
        if not check:
            return [1.0] * frames.shape[0]
        lo, hi = stored_limits(meta, pixels.dtype)
        return selfcheck.detail_weights(
            lambda c: self.enhance(c, meta, consistency=False, untiled=untiled).pixels,
            frames,
            self.scale,
            lo,
            hi,
            self.card.degradation.operator,
        )

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
        return self.enhance_many(
            [(pixels, meta)], consistency, untiled=untiled, self_check=self_check
        )[0]

    def enhance_many(
        self,
        items: Sequence[tuple[np.ndarray, PixelMeta]],
        consistency: bool = True,
        *,
        untiled: bool = False,
        self_check: bool = True,
    ) -> list[Enhanced]:
        """:meth:`enhance` for several images (the slices of a series) at once: one
        :class:`Enhanced` per item, in order, each the same as :meth:`enhance` of that
        item alone. The tiles of several slices share backend calls, so every call gets
        a full ``card.tile.batch``; each item's ``seconds`` is its share of the wall time
        (by frames). Every item is checked before any runs.
        """
        t0 = time.perf_counter()
        for pixels, meta in items:
            check_input(pixels, meta)
        s = self.scale
        op = self.card.degradation.operator
        # (item, frame index, frame) in order; outputs and worst errors per item
        frames = [
            (n, k, fr)
            for n, (pixels, _) in enumerate(items)
            for k, fr in enumerate(pixels if pixels.ndim == 3 else pixels[None])
        ]
        outs = [
            np.empty(
                ((p.shape[0],) if p.ndim == 3 else (1,)) + (p.shape[-2] * s, p.shape[-1] * s),
                p.dtype,
            )
            for p, _ in items
        ]
        worst = [(0.0, 0.0)] * len(items)
        weights = [
            self._detail_weights(p, m, untiled, consistency and self_check) for p, m in items
        ]
        batch = self._batch()

        # a few frames at a time (enough to fill one backend batch): bounded memory
        def store(n: int, k: int, fr: np.ndarray, z: np.ndarray) -> None:
            pixels, meta = items[n]
            lo, hi = stored_limits(meta, pixels.dtype)
            if consistency:
                o = dc.project(z, fr, s, lo, hi, op).astype(pixels.dtype)
            else:
                o = to_stored(z, meta, pixels.dtype)
            record(n, k, fr, o)

        def record(n: int, k: int, fr: np.ndarray, o: np.ndarray) -> None:
            outs[n][k] = o
            err = dc.errors(o, fr, s, op)
            worst[n] = (max(worst[n][0], err[0]), max(worst[n][1], err[1]))

        # frames the self-check gives the floor need no network: the floor, bit for bit
        for n, k, fr in frames:
            if weights[n][k] <= 0.0:
                pixels, meta = items[n]
                lo, hi = stored_limits(meta, pixels.dtype)
                record(n, k, fr, selfcheck.floor_frame(fr, meta, s, lo, hi, op))
        todo = [(n, k, fr) for n, k, fr in frames if weights[n][k] > 0.0]
        g0 = 0
        while g0 < len(todo):
            g1, tiles = g0, 0
            while g1 < len(todo) and tiles < batch:
                tiles += self.plan(*todo[g1][2].shape, untiled).count
                g1 += 1
            group = todo[g0:g1]
            # padding is never seen as tissue: filled before, restored after
            pads = [find_padding(fr, items[n][1]) for n, _, fr in group]
            seen = [
                fr if p is None else p.fill_input(fr)
                for p, (_, _, fr) in zip(pads, group, strict=True)
            ]
            maps = [
                IntensityMap.fit(self.card.intensity, items[n][1], f)
                for (n, _, _), f in zip(group, seen, strict=True)
            ]
            x = [m.forward(f) for m, f in zip(maps, seen, strict=True)]
            ys = self.infer_frames(x, untiled)
            for m, y, pad, f, (n, k, fr) in zip(maps, ys, pads, seen, group, strict=True):
                z = _pass_through_outside(m.inverse(y), f, m, s)
                z = selfcheck.blend(z, f, weights[n][k], s)
                if pad is not None:
                    z = pad.restore(z, fr, s)
                store(n, k, fr, z)
            g0 = g1
        seconds = time.perf_counter() - t0
        results = []
        for n, (pixels, _) in enumerate(items):
            res = Enhanced(
                pixels=outs[n] if pixels.ndim == 3 else outs[n][0],
                consistency_rmse=worst[n][0],
                consistency_max_abs=worst[n][1],
                seconds=seconds * outs[n].shape[0] / len(frames),
                detail_weights=tuple(weights[n]),
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
            results.append(res)
        return results


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
