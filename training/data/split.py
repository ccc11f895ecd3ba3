"""Train / validation / test splits, seeded and recorded in the model card.

* Several subjects: a **patient-level** split (every image of a subject lands in one
  split), 70/15/15 by default, by a seeded shuffle of the sorted subject IDs.
* One subject (a single volume, e.g. the Colin27 template or the Cranium CT): the volume
  is cut into **slabs** along its slice axis; neighbouring slabs of different splits are
  separated by a gap of ``gap`` slices that no split uses, so that no test slice has a
  training slice right next to it. The default order puts validation and test in the
  middle of the volume (``train | val | test | train``), where the anatomy is typical,
  rather than at the vertex or the neck.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)


def split_subjects(
    subjects: Iterable[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, str]:
    """Map each subject ID to ``train``/``val``/``test``; deterministic for a seed."""
    ids = sorted(set(subjects))
    n = len(ids)
    if n == 0:
        return {}
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    n_train = max(n - n_val - n_test, 0)
    out: dict[str, str] = {}
    for rank, i in enumerate(order):
        out[ids[i]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return out


def slab_split(
    n_slices: int,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    gap: int = 4,
    order: Sequence[str] = ("train", "val", "test", "train"),
) -> dict[str, list[tuple[int, int]]]:
    """Slab ranges ``[start, stop)`` along the slice axis per split, with ``gap`` between.

    A split named several times in ``order`` gets its fraction divided evenly among its
    slabs. Returns ``{"train": [(a, b), ...], "val": [...], "test": [...]}``.
    """
    frac = dict(zip(SPLITS, fractions, strict=True))
    counts = {s: order.count(s) for s in SPLITS}
    usable = n_slices - gap * (len(order) - 1)
    if usable < len(order):
        raise ValueError(f"{n_slices} slices are too few for {len(order)} slabs with gap {gap}")
    sizes = [frac[s] / counts[s] * usable for s in order]
    out: dict[str, list[tuple[int, int]]] = {s: [] for s in SPLITS}
    pos = 0.0
    for i, (s, size) in enumerate(zip(order, sizes, strict=True)):
        start = int(round(pos))
        stop = int(round(pos + size))
        out[s].append((start, max(stop, start + 1)))
        pos += size + (gap if i < len(order) - 1 else 0)
    return out


def split_of_index(slabs: dict[str, list[tuple[int, int]]], index: int) -> str | None:
    for s, ranges in slabs.items():
        if any(a <= index < b for a, b in ranges):
            return s
    return None  # in a gap
