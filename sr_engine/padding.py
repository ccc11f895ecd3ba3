"""Padding and background masks: pixels that are not tissue never reach the network as tissue.

What is padding (in the low-resolution input, stored units):

* ``PixelPaddingValue`` (and ``PixelPaddingRangeLimit``) when the image has them;
* otherwise, for CT, modality values below -1024 HU in regions that touch the image border
  (the outside of the scanner's field of view, filled with -2048 or -3024 HU by GE and
  Siemens, often without a tag);
* otherwise (MR, radiographs, any modality), a constant background: pixels equal to the
  image's lowest or highest stored value in regions that touch the border and cover at
  least ``MIN_BACKGROUND`` of the image (zero-filled MR, radiograph shutters).

How it is used (:class:`PaddingPlan`): after inference every high-resolution pixel of a
block that was pure padding gets the padding value back bit-exact. Only CT padding (values
below -1024 HU, outside anything the network is meant to see) is also hidden from the
network: before inference the padded pixels and a one-pixel ring around them are filled
with the nearby tissue (:func:`fill_masked`), so the scan-circle edge is a smooth
continuation instead of a 2000 HU step that would ring, and a block that straddles the edge
(its stored mean lies between the padding and the tissue next to it) is unmixed: the number
of its sub-pixels that are padding follows from the block mean, their place from the
upsampled padding fraction (the edge is smooth), and the other sub-pixels keep the network's
tissue shifted so the block mean is the input again.

A constant background of any other image (the zero outside an MR head, a radiograph's
shutter) is part of the image: the network sees it as stored, because the edge between
tissue and background is anatomy (skin against air) that it must resolve like any other.
Filling it with tissue hid that edge and cost up to 3 dB on MR with a zero background.
Training applies the same plan (:func:`fill_masked` on the same masks), so what the network
sees agrees between training and the node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sr_engine.meta import PixelMeta
from sr_engine.resample import upsample_spline

CT_PADDING_BELOW_HU = -1024.0
MIN_BACKGROUND = 0.02  # share of the image a border-connected constant background must cover
FILL_ITERATIONS = 4  # rings filled by neighbour averages; deeper pixels get the ring median


def _propagate_runs(cand: np.ndarray, marked: np.ndarray) -> np.ndarray:
    """Mark every run (along rows) of ``cand`` that holds a marked pixel."""
    h, w = cand.shape
    start = cand.copy()
    start[:, 1:] &= ~cand[:, :-1]
    ids = np.cumsum(start.ravel()).reshape(h, w)
    ids[~cand] = 0
    hit = np.zeros(int(ids.max()) + 1, bool)
    hit[ids[marked & cand]] = True
    hit[0] = False
    return hit[ids]


def border_connected(cand: np.ndarray, max_rounds: int = 64) -> np.ndarray:
    """The pixels of ``cand`` 4-connected to the image border (row/column run sweeps)."""
    marked = np.zeros_like(cand)
    marked[0], marked[-1], marked[:, 0], marked[:, -1] = cand[0], cand[-1], cand[:, 0], cand[:, -1]
    if not marked.any():
        return marked
    for _ in range(max_rounds):
        before = int(marked.sum())
        marked = _propagate_runs(cand, marked)
        marked = _propagate_runs(cand.T, marked.T).T
        if int(marked.sum()) == before:
            break
    return marked


def dilate(mask: np.ndarray, r: int = 1) -> np.ndarray:
    """Binary dilation by ``r`` pixels (8-neighbourhood)."""
    out = mask.copy()
    for _ in range(r):
        m = out.copy()
        m[1:] |= out[:-1]
        m[:-1] |= out[1:]
        m2 = m.copy()
        m2[:, 1:] |= m[:, :-1]
        m2[:, :-1] |= m[:, 1:]
        out = m2
    return out


def fill_masked(x: np.ndarray, mask: np.ndarray, iterations: int = FILL_ITERATIONS) -> np.ndarray:
    """``x`` (float) with ``mask`` pixels replaced by their unmasked neighbours' mean, ring by
    ring for ``iterations`` rings; deeper pixels take the median of the filled rings."""
    y = np.asarray(x, np.float64).copy()
    todo = mask.copy()
    if not todo.any():
        return y
    if todo.all():
        return y
    known = ~todo
    ring_vals: list[np.ndarray] = []
    for _ in range(iterations):
        if not todo.any():
            break
        s = np.zeros_like(y)
        n = np.zeros_like(y)
        v = np.where(known, y, 0.0)
        k = known.astype(np.float64)
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)):
            s += np.roll(np.roll(v, dy, 0), dx, 1)
            n += np.roll(np.roll(k, dy, 0), dx, 1)
        front = todo & (n > 0)
        if not front.any():
            break
        y[front] = s[front] / n[front]
        ring_vals.append(y[front])
        known = known | front
        todo = todo & ~front
    if todo.any():
        vals = np.concatenate(ring_vals) if ring_vals else y[known]
        y[todo] = float(np.median(vals)) if vals.size else 0.0
    return y


@dataclass(frozen=True)
class PaddingPlan:
    """The padding of one low-resolution frame and how to treat it."""

    pure: np.ndarray  # bool (H, W): blocks that are padding only
    fill: np.ndarray  # bool (H, W): pixels replaced by nearby tissue before inference
    value: float  # the padding's stored value (pure blocks return it exactly)
    unmix: bool  # straddling blocks are unmixed (padding far below the tissue, e.g. CT)

    def fill_input(self, frame: np.ndarray) -> np.ndarray:
        """The frame the network sees (stored units, float64)."""
        return fill_masked(frame, self.fill)

    def keep_pure(self, z: np.ndarray, s: int) -> np.ndarray:
        """``z`` (sH, sW) with the pure padding blocks set to the padding value exactly."""
        z = np.asarray(z, np.float64).copy()
        h, w = self.pure.shape
        blocks = z.reshape(h, s, w, s).transpose(0, 2, 1, 3)  # a view: writes go to z
        blocks[self.pure] = self.value
        return z

    def restore(self, z: np.ndarray, frame: np.ndarray, s: int) -> np.ndarray:
        """Network output ``z`` (sH, sW, stored units float) with the padding put back.

        Pure padding blocks get the padding value; edge blocks next to pure padding are
        unmixed when the result is plausible (tissue within its neighbours' range); any
        other filled block (e.g. padding blurred by lossy compression) takes the cubic
        interpolation of the input, the network having seen it filled, not as it is.
        """
        z = np.asarray(z, np.float64).copy()
        h, w = frame.shape
        n = s * s
        blocks = z.reshape(h, s, w, s).transpose(0, 2, 1, 3).reshape(h, w, n)
        x = frame.astype(np.float64)
        blocks[self.pure] = self.value
        edge = self.fill & ~self.pure
        if edge.any():
            done = np.zeros_like(edge)
            if self.unmix:
                done = _unmix(blocks, x, edge, self.fill, self.pure, self.value, s)
            rest = edge & ~done
            if rest.any():
                cub = upsample_spline(x, s).reshape(h, s, w, s).transpose(0, 2, 1, 3)
                blocks[rest] = cub.reshape(h, w, n)[rest]
        return blocks.reshape(h, w, s, s).transpose(0, 2, 1, 3).reshape(h * s, w * s)


def _local_range(x: np.ndarray, known: np.ndarray, r: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of the ``known`` pixels in each (2r+1)² window (+-inf where none)."""
    lo = np.where(known, x, np.inf)
    hi = np.where(known, x, -np.inf)
    out_lo, out_hi = lo.copy(), hi.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out_lo = np.minimum(out_lo, _shift(lo, dy, dx, np.inf))
            out_hi = np.maximum(out_hi, _shift(hi, dy, dx, -np.inf))
    return out_lo, out_hi


def _shift(a: np.ndarray, dy: int, dx: int, pad: float) -> np.ndarray:
    out = np.full_like(a, pad)
    h, w = a.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = a[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _unmix(
    blocks: np.ndarray,
    x: np.ndarray,
    cand: np.ndarray,
    fill: np.ndarray,
    pure: np.ndarray,
    pad: float,
    s: int,
) -> np.ndarray:
    """Blocks on a clean padding edge: k of s*s sub-pixels become padding (k from the block
    mean and the network's tissue estimate), placed where the upsampled padding fraction is
    highest; the rest keep the tissue estimate shifted to the block mean. Returns the
    blocks it unmixed (those whose tissue stays within the range of the unfilled pixels
    around them)."""
    n = s * s
    t_lo, t_hi = _local_range(x, ~fill)
    t_lo, t_hi = t_lo[cand], t_hi[cand]
    tissue = blocks[cand].mean(-1)
    xe = x[cand]
    denom = tissue - pad
    frac = np.where(np.abs(denom) > 1e-6, (tissue - xe) / np.where(denom == 0, 1, denom), 0.0)
    k = np.clip(np.rint(frac * n), 0, n).astype(np.int64)
    implied = (xe * n - k * pad) / np.maximum(n - k, 1)
    span = np.where(np.isfinite(t_hi - t_lo), t_hi - t_lo, 0.0)
    tol = 0.25 * span + 0.1 * np.abs(denom)
    plausible = np.where(
        k == n,
        np.abs(xe - pad) <= tol,
        np.isfinite(t_hi) & (implied >= t_lo - tol) & (implied <= t_hi + tol),
    )
    ok = (k == 0) | (dilate(pure, 1)[cand] & plausible)
    field = pure.astype(np.float64)
    field[cand] = np.clip(frac, 0.0, 1.0)
    up = _upsample_linear(field, s)
    h, w = x.shape
    ub = up.reshape(h, s, w, s).transpose(0, 2, 1, 3).reshape(h, w, n)[cand]
    rank = np.argsort(np.argsort(-ub, axis=-1, kind="stable"), axis=-1, kind="stable")
    is_pad = rank < k[:, None]
    eb = blocks[cand]
    tis_sum = np.where(is_pad, 0.0, eb).sum(-1)
    shift = np.where(k < n, (xe * n - k * pad - tis_sum) / np.maximum(n - k, 1), 0.0)
    new = np.where(is_pad, pad, eb + shift[:, None])
    eb[ok] = new[ok]
    blocks[cand] = eb
    done = np.zeros(x.shape, bool)
    done[np.nonzero(cand)[0][ok], np.nonzero(cand)[1][ok]] = True
    return done


def _upsample_linear(a: np.ndarray, s: int) -> np.ndarray:
    """Bilinear upsampling by ``s`` (pixel centres aligned, edges clamped)."""

    def axis(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = (np.arange(n * s) + 0.5) / s - 0.5
        i0 = np.clip(np.floor(c).astype(int), 0, n - 1)
        i1 = np.clip(i0 + 1, 0, n - 1)
        t = np.clip(c - np.floor(c), 0.0, 1.0)
        return i0, i1, t

    r0, r1, rt = axis(a.shape[0])
    c0, c1, ct = axis(a.shape[1])
    rows = a[r0] * (1 - rt[:, None]) + a[r1] * rt[:, None]
    return rows[:, c0] * (1 - ct[None, :]) + rows[:, c1] * ct[None, :]


def _tagged(frame: np.ndarray, meta: PixelMeta) -> np.ndarray | None:
    v = meta.padding_value
    if v is None:
        return None
    r = meta.padding_range_limit
    if r is None:
        return frame == v
    lo, hi = sorted((v, r))
    return (frame >= lo) & (frame <= hi)


def find_padding(frame: np.ndarray, meta: PixelMeta) -> PaddingPlan | None:
    """The padding plan of one stored low-resolution frame, or None when it has none."""
    slope = float(meta.rescale_slope or 1.0)
    intercept = float(meta.rescale_intercept or 0.0)
    tagged = _tagged(frame, meta)
    unmix = False
    if tagged is not None and tagged.any():
        region = tagged
        value = float(meta.padding_value)  # type: ignore[arg-type]
        unmix = meta.modality == "CT" and value * slope + intercept < CT_PADDING_BELOW_HU
        if unmix:  # the edge blocks (values between padding and air) belong to it too
            low = frame.astype(np.float64) * slope + intercept < CT_PADDING_BELOW_HU
            region = region | border_connected(low)
    elif meta.modality == "CT":
        low = frame.astype(np.float64) * slope + intercept < CT_PADDING_BELOW_HU
        region = border_connected(low)
        if not region.any():
            return None
        vals, counts = np.unique(frame[region], return_counts=True)
        value = float(vals[np.argmax(counts)])
        unmix = True
    else:
        region = None
        for v in (frame.min(), frame.max()):
            r = border_connected(frame == v)
            if r.mean() >= MIN_BACKGROUND:
                region, value = r, float(v)
                break
        if region is None:
            return None
    pure = region & (frame == value)
    if not pure.any():
        return None
    # only CT padding is hidden from the network; any other background is seen as stored
    fill = dilate(region, 1) if unmix else np.zeros_like(pure)
    return PaddingPlan(pure=pure, fill=fill, value=value, unmix=unmix)
