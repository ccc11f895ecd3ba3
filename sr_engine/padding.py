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
continuation instead of a 2000 HU step that would ring. The blocks at the padding's edge were
filled, so the network has no evidence of them: they are rebuilt from the input alone
(:func:`_unmix`). A block whose value lies well below any tissue around it holds padding:
the fewest padding sub-pixels that leave the rest within that tissue's range, placed where
the padding fraction, upsampled by the cubic spline, is highest; every other sub-pixel
comes from the floor (the cubic interpolation of the frame with its padding filled), held
within [min, max] of the tissue in the block's 3x3 neighbourhood (widened by three times
the image's noise where the block holds padding), the block mean the input's. A tissue
block next to the padding (a real CT's field-of-view edge through an object) so gets no
padding sub-pixel and no value above or below its neighbours'.

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
CLEAN_PADDING = 0.5  # share of the padding region at the padding value itself: not lossy
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
    unmix: bool  # blocks at the edge are rebuilt from the input (padding far below tissue)
    region: np.ndarray | None = None  # bool (H, W): everything that is not tissue
    frame: np.ndarray | None = None  # the stored frame the plan was made from
    air: float | None = None  # stored value of -1024 HU: no tissue lies below it

    def fill_input(self, frame: np.ndarray) -> np.ndarray:
        """The frame the network sees (stored units, float64)."""
        return fill_masked(frame, self.fill)

    def keep_pure(self, z: np.ndarray, s: int) -> np.ndarray:
        """``z`` (sH, sW) with the pure padding blocks set to the padding value exactly,
        and the blocks at the padding's edge rebuilt as :meth:`restore` does (an
        interpolation across the edge would overshoot next to the padding)."""
        if self.frame is not None and self.unmix:
            return self.restore(z, self.frame, s)
        z = np.asarray(z, np.float64).copy()
        h, w = self.pure.shape
        blocks = z.reshape(h, s, w, s).transpose(0, 2, 1, 3)  # a view: writes go to z
        blocks[self.pure] = self.value
        return z

    def restore(self, z: np.ndarray, frame: np.ndarray, s: int) -> np.ndarray:
        """Network output ``z`` (sH, sW, stored units float) with the padding put back.

        Pure padding blocks get the padding value. The blocks at the edge of the padding
        (filled before inference, so the network had no evidence of them) are rebuilt from
        the input alone by :func:`_unmix`: padding sub-pixels only where the block's value
        says it holds padding, every other sub-pixel from the floor (the cubic
        interpolation of the frame with its padding filled) held within the range of the
        tissue around the block, each block's mean the input's. Padding blurred by lossy
        compression (less than :data:`CLEAN_PADDING` of its region at the padding value
        itself) is not rebuilt: those blocks take the cubic interpolation of the input.
        """
        z = np.asarray(z, np.float64).copy()
        h, w = frame.shape
        n = s * s
        blocks = z.reshape(h, s, w, s).transpose(0, 2, 1, 3).reshape(h, w, n)
        x = frame.astype(np.float64)
        blocks[self.pure] = self.value
        edge = self.fill & ~self.pure
        if edge.any() and self.unmix:
            region = self.region if self.region is not None else self.fill
            if self.pure.sum() >= CLEAN_PADDING * region.sum():
                air = self.air if self.air is not None else float(np.max(x))
                _unmix(blocks, x, edge, region, self.pure, self.value, air, s)
            else:  # padding blurred by lossy compression: the cubic interpolation of the
                # input as it is (its ringing is the input's, not tissue to rebuild)
                cub = upsample_spline(x, s).reshape(h, s, w, s).transpose(0, 2, 1, 3)
                blocks[edge] = cub.reshape(h, w, n)[edge]
        return blocks.reshape(h, w, s, s).transpose(0, 2, 1, 3).reshape(h * s, w * s)


def _local_range(x: np.ndarray, known: np.ndarray, r: int = 1) -> tuple[np.ndarray, np.ndarray]:
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


def _noise_sigma(x: np.ndarray, known: np.ndarray) -> float:
    """Robust noise level of ``x`` over ``known`` pixels: the median absolute difference of
    horizontal neighbours (both known), scaled to a Gaussian's sigma."""
    both = known[:, 1:] & known[:, :-1]
    d = np.abs(np.diff(x, axis=1))[both]
    return float(np.median(d)) * 1.4826 / np.sqrt(2.0) if d.size else 0.0


def _within(v: np.ndarray, target: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Rows of ``v`` shifted by one amount each and clipped to [lo, hi] so that their mean
    is ``target`` (lo <= target <= hi): the consistency projection with the tissue range
    as its limits (:func:`sr_engine.consistency._area_shift` on the unit interval)."""
    from sr_engine.consistency import _area_shift

    span = hi - lo
    safe = np.where(span > 0, span, 1.0)
    u = (v - lo[:, None]) / safe[:, None]
    t = _area_shift(u, np.clip((target - lo) / safe, 0.0, 1.0), 0.0, 1.0)
    out = lo[:, None] + safe[:, None] * np.clip(u + t[:, None], 0.0, 1.0)
    return np.where(span[:, None] > 0, out, lo[:, None])


def _unmix(
    blocks: np.ndarray,
    x: np.ndarray,
    edge: np.ndarray,
    region: np.ndarray,
    pure: np.ndarray,
    pad: float,
    air: float,
    s: int,
) -> None:
    """Rebuild the ``edge`` blocks (next to pure padding) in place from the input ``x``.

    Tissue range of a block: min and max of the tissue (not ``region``) in its 3x3
    neighbourhood (5x5 where that has none), widened to the block's own value. A block
    whose value lies well below all tissue, and below air (at least half a sub-pixel's
    share of padding: ``x < ref - (ref - pad) / (2 s²)`` with ``ref = min(tissue, air)``),
    holds padding: ``k`` sub-pixels get the padding value exactly (the fewest that leave
    the rest within the tissue range; where no ``k`` does, one sub-pixel takes the
    partial-volume remainder between padding and tissue), placed where the padding
    fraction, upsampled by the cubic spline, is highest. Every other sub-pixel comes from
    the floor (the cubic interpolation of ``x`` with the padding filled), shifted and
    clipped into the tissue range so that the block mean is the input. No value outside
    [padding, tissue max] is made, and a block that holds no padding gets none.
    """
    n = s * s
    h, w = x.shape
    tissue = ~region
    lo3, hi3 = _local_range(x, tissue, 1)
    lo5, hi5 = _local_range(x, tissue, 2)
    none3 = ~np.isfinite(lo3)
    lo_all = np.where(none3, lo5, lo3)[edge]
    hi_all = np.where(none3, hi5, hi3)[edge]
    xe = x[edge]
    has = np.isfinite(lo_all)
    lo = np.where(has, np.minimum(lo_all, xe), xe)
    hi = np.where(has, np.maximum(hi_all, xe), xe)

    # how much padding a block holds: only where its value is below any tissue and air
    ref = np.where(has, np.minimum(lo_all, air), air)
    holds_pad = has & (xe > pad) & (ref > pad) & (xe < ref - (ref - pad) / (2 * n))
    # its tissue range (without the block's own value) widened by three times the image's
    # noise and one stored unit: the mean of the few tissue sub-pixels of a block holding
    # padding is noisier than the block means the range comes from (and those are rounded)
    tol = 3.0 * _noise_sigma(x, tissue) + 1.0
    t_lo = np.where(holds_pad, lo_all - tol, lo)
    hi = np.where(holds_pad, hi_all + tol, hi)
    denom = np.where(t_lo - pad > 0, t_lo - pad, 1.0)
    k = np.where(holds_pad, np.ceil(n * (t_lo - xe) / denom - 1e-9), 0).astype(np.int64)
    k = np.clip(k, 0, n - 1)
    m = np.where(k < n, (n * xe - k * pad) / np.maximum(n - k, 1), xe)  # the tissue mean
    # (m < t_lo only with k capped at n - 1: the one sub-pixel left is partial volume)
    lo = np.where(holds_pad, np.minimum(t_lo, m), lo)
    partial = holds_pad & (m > hi + 1e-9)  # no k fits: k - 1 pads and one partial pixel

    floor = upsample_spline(fill_masked(x, region), s)
    fb = floor.reshape(h, s, w, s).transpose(0, 2, 1, 3).reshape(h, w, n)[edge]
    # where the padding is: its fraction, upsampled by the cubic spline (a smooth edge such
    # as the scan circle is placed to the sub-pixel; bilinear misplaced about a third of the
    # blocks holding padding); the most padding-like sub-pixels first
    frac = pure.astype(np.float64)
    frac[edge] = np.where(holds_pad, np.clip((ref - xe) / (ref - pad), 0.0, 1.0), 0.0)
    up = upsample_spline(frac, s).reshape(h, s, w, s).transpose(0, 2, 1, 3).reshape(h, w, n)
    order = np.argsort(-up[edge], axis=-1, kind="stable")

    out = np.empty_like(fb)
    for kk in np.unique(k):
        for part in (False, True):
            rows = (k == kk) & (partial == part)
            if not rows.any():
                continue
            pos = order[rows]
            vals = np.take_along_axis(fb[rows], pos, axis=-1)
            npad = kk - 1 if part else kk
            res = np.empty_like(vals)
            res[:, :npad] = pad
            if part:  # tissue clipped into range, the partial pixel takes the remainder
                tis = np.clip(vals[:, kk:], lo[rows, None], hi[rows, None])
                res[:, kk:] = tis
                res[:, npad] = n * xe[rows] - npad * pad - tis.sum(-1)
            else:
                res[:, kk:] = _within(vals[:, kk:], m[rows], lo[rows], hi[rows])
            placed = np.empty_like(res)
            np.put_along_axis(placed, pos, res, axis=-1)
            out[rows] = placed
    blocks[edge] = out


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
    air = (CT_PADDING_BELOW_HU - intercept) / slope if slope else None
    return PaddingPlan(
        pure=pure, fill=fill, value=value, unmix=unmix, region=region, frame=frame, air=air
    )
