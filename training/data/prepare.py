"""Prepared datasets: one ``<name>.npz`` (stored values) + ``<name>.json`` (facts, split).

``prepare_debian`` extracts the development data shipped by Debian packages:

* ``colin27-1mm``: Colin27 T1 MRI, ``/usr/share/mricron/templates/ch2.nii.gz``
  (181x217x181, 1 mm, uint8, with skull; mricron-data, BSD-3-clause);
* ``colin27-05mm``: the same subject at 0.5 mm, brain only (``ch2better.nii.gz``);
* ``cranium-ct``: the InVesalius head CT ``Cranium.inv3`` (108x256x256 HU,
  0.957x0.957x1.5 mm; invesalius-examples, GPL-2), stored as DICOM would hold it
  (12-bit ``HU + 1024``, RescaleIntercept -1024).

Each source is one subject, so it is split by axial slabs (``train | val | test |
train``, 70/15/15 of the usable slices, a gap between slabs; see ``split.py``). The two
Colin27 files are one person: the 0.5 mm volume takes the split of the 1 mm slab that
holds each of its slices in world coordinates, gaps included, so no anatomy of a test
slab is ever trained on at either resolution.

``prepare_volumes`` writes any list of :class:`~training.data.readers.Volume` (e.g. from
the NIfTI / DICOM / image readers and the adapters) with a patient-level split.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.data.intensity import meta_to_dict
from training.data.readers import Volume, read_inv3, read_nifti, slice_world_z
from training.data.split import DEFAULT_FRACTIONS, slab_split, split_subjects

COLIN_1MM = Path("/usr/share/mricron/templates/ch2.nii.gz")
COLIN_05MM = Path("/usr/share/mricron/templates/ch2better.nii.gz")
CRANIUM = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")

SLAB_ORDER = ("train", "val", "test", "train")


def write_prepared(
    out_dir: Path, name: str, vol: Volume, slabs: dict[str, list[tuple[int, int]]], **info: Any
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / f"{name}.npz", volume=vol.array)
    doc = {
        "name": name,
        "subject": vol.subject,
        "source": vol.source,
        "shape": list(vol.array.shape),
        "dtype": str(vol.array.dtype),
        "spacing_mm": list(vol.spacing),
        "meta": meta_to_dict(vol.meta),
        "slab_axis": 0,
        "slabs": {k: [list(r) for r in v] for k, v in slabs.items()},
        **info,
    }
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def _slabs_by_world_z(
    z_fine: np.ndarray, z_ref: np.ndarray, ref_slabs: dict[str, list[tuple[int, int]]]
) -> dict[str, list[tuple[int, int]]]:
    """Slabs of a finer volume: each slice takes the split of the reference slice holding it."""
    step = float(z_ref[1] - z_ref[0])
    label = np.full(len(z_fine), "", dtype=object)
    for s, ranges in ref_slabs.items():
        for a, b in ranges:
            lo, hi = sorted((z_ref[a] - step / 2, z_ref[b - 1] + step / 2))
            label[(z_fine >= lo) & (z_fine < hi)] = s
    out: dict[str, list[tuple[int, int]]] = {"train": [], "val": [], "test": []}
    start = 0
    for k in range(1, len(label) + 1):
        if k == len(label) or label[k] != label[start]:
            if label[start]:
                out[label[start]].append((start, k))
            start = k
    return out


def prepare_debian(
    out_dir: str | Path,
    gap_mm: float = 4.0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    colin_1mm: Path = COLIN_1MM,
    colin_05mm: Path = COLIN_05MM,
    cranium: Path = CRANIUM,
) -> list[Path]:
    """Write the three development datasets; returns the JSON paths."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    common = {"fractions": list(fractions), "seed": seed, "slab_order": list(SLAB_ORDER)}
    if colin_1mm.is_file():
        v1 = read_nifti(colin_1mm, "MR", subject="colin27")
        gap = max(1, math.ceil(gap_mm / v1.spacing[0]))
        slabs1 = slab_split(v1.n_slices, fractions, gap, SLAB_ORDER)
        written.append(
            write_prepared(
                out_dir, "colin27-1mm", v1, slabs1, gap_slices=gap, gap_mm=gap_mm,
                license="BSD-3-clause (mricron-data)", contrast="T1", **common,
            )
        )  # fmt: skip
        if colin_05mm.is_file():
            v2 = read_nifti(colin_05mm, "MR", subject="colin27")
            z1 = slice_world_z(v1.extra["affine"], v1.n_slices)
            z2 = slice_world_z(v2.extra["affine"], v2.n_slices)
            slabs2 = _slabs_by_world_z(z2, z1, slabs1)
            written.append(
                write_prepared(
                    out_dir, "colin27-05mm", v2, slabs2, gap_mm=gap_mm,
                    split_from="colin27-1mm (same subject, by world z)",
                    license="BSD-3-clause (mricron-data)", contrast="T1", **common,
                )
            )  # fmt: skip
    if cranium.is_file():
        v3 = read_inv3(cranium, subject="cranium-ct")
        gap = max(1, math.ceil(gap_mm / v3.spacing[0]))
        slabs3 = slab_split(v3.n_slices, fractions, gap, SLAB_ORDER)
        written.append(
            write_prepared(
                out_dir, "cranium-ct", v3, slabs3, gap_slices=gap, gap_mm=gap_mm,
                license="GPL-2 (invesalius-examples)", **common,
            )
        )  # fmt: skip
    if not written:
        raise FileNotFoundError(
            "no development data found: install the Debian packages mricron-data and "
            "invesalius-examples (or pass your own data to `srnode train prepare-folder`)"
        )
    return written


def prepare_volumes(
    out_dir: str | Path,
    volumes: Sequence[Volume],
    prefix: str,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> list[Path]:
    """Patient-level split: each volume goes whole into its subject's split."""
    out_dir = Path(out_dir)
    by_subject = split_subjects([v.subject for v in volumes], fractions, seed)
    written = []
    for i, v in enumerate(volumes):
        split = by_subject[v.subject]
        slabs: dict[str, list[tuple[int, int]]] = {"train": [], "val": [], "test": []}
        slabs[split] = [(0, v.n_slices)]
        written.append(
            write_prepared(
                out_dir, f"{prefix}-{i:05d}", v, slabs, fractions=list(fractions), seed=seed,
                split_level="patient",
            )
        )  # fmt: skip
    return written


def load_prepared(data_dir: str | Path, names: Sequence[str] | None = None) -> list[dict]:
    """Read prepared datasets: dicts with the JSON facts and ``volume`` (stored values)."""
    data_dir = Path(data_dir)
    paths = [data_dir / f"{n}.json" for n in names] if names else sorted(data_dir.glob("*.json"))
    out = []
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"prepared dataset {p} not found: run `srnode train prepare`")
        doc = json.loads(p.read_text())
        with np.load(p.with_suffix(".npz")) as z:
            doc["volume"] = z["volume"]
        out.append(doc)
    return out


DRR_ANGLES = tuple(float(a) for a in range(0, 180, 15))
DRR_HELD_OUT = "radiomics-lung2"  # its DRRs are the radiograph validation/test subject


def prepare_cached(
    out_dir: str | Path,
    cache: str | Path,
    gap_mm: float = 4.0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    drr: bool = True,
    cranium: Path = CRANIUM,
) -> list[Path]:
    """The packaged sources of ``cache`` (see :mod:`training.data.sources`), each volume split
    into slabs, and DRRs of every CT (patient-level: one CT subject's DRRs are held out)."""
    from training.data.drr import drr_images
    from training.data.sources import cached_volumes

    out_dir = Path(out_dir)
    written: list[Path] = []
    common = {"fractions": list(fractions), "seed": seed, "slab_order": list(SLAB_ORDER)}
    cts: list[tuple[str, Volume, str]] = []
    for src, vol in cached_volumes(cache):
        gap = max(1, math.ceil(gap_mm / vol.spacing[0]))
        slabs = slab_split(vol.n_slices, fractions, gap, SLAB_ORDER)
        written.append(
            write_prepared(
                out_dir, src.name, vol, slabs, gap_slices=gap, gap_mm=gap_mm,
                license=src.license, origin=src.origin, **common,
            )
        )  # fmt: skip
        if src.modality == "CT":
            cts.append((src.name, vol, src.license))
    if drr and cranium.is_file():
        cts.append(
            ("cranium-ct", read_inv3(cranium, subject="cranium-ct"), "GPL-2 (invesalius-examples)")
        )
    for i, (name, vol, lic) in enumerate(cts if drr else []):
        images = drr_images(vol, DRR_ANGLES, seed=seed + i)
        for k, (img, p, ov) in enumerate(images):
            held = "val" if k % 2 == 0 else "test"
            split = held if name == DRR_HELD_OUT else "train"
            slabs: dict[str, list[tuple[int, int]]] = {"train": [], "val": [], "test": []}
            slabs[split] = [(0, 1)]
            written.append(
                write_prepared(
                    out_dir, f"drr-{name}-{int(p.angle_deg):03d}", img, slabs, license=lic,
                    origin=f"DRR of {vol.source}", split_level="patient",
                    drr={"angle_deg": p.angle_deg, "photons": round(p.photons, 1),
                         "blur_px": round(p.blur_px, 3), "read_sigma": round(p.read_sigma, 2),
                         "bits": p.bits, "monochrome1": p.monochrome1, "zoom": p.zoom,
                         "overlays": ov.as_dict()},
                    seed=seed,
                )
            )  # fmt: skip
    if not written:
        raise FileNotFoundError(f"{cache}: no packaged sources found (fill it first)")
    return written
