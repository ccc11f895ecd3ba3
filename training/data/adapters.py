"""Adapters for dataset layouts that users bring.

* ChestXray14 (NIH): ``images/*.png`` (8-bit, 1024x1024) and ``Data_Entry_2017.csv`` with
  columns ``Image Index`` and ``Patient ID``; the split is by patient.
* IXI-style brain MRI: a folder of NIfTI files named ``IXI<nnn>-<site>-<id>-<contrast>``
  (e.g. ``IXI002-Guys-0828-T1.nii.gz``); the subject is ``IXI<nnn>``.

Each adapter returns :class:`Item` records (subject, path, kind); the split is then made
by :func:`training.data.split.split_subjects` on the subjects.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from training.data.split import DEFAULT_FRACTIONS, split_subjects


@dataclass(frozen=True)
class Item:
    subject: str
    path: Path
    kind: str  # "xray", "T1", "T2", "PD", "MRA", "DTI", ...
    modality: str  # DICOM Modality the images stand for


def chestxray14(root: str | Path) -> list[Item]:
    """Items of a ChestXray14 folder (``images/`` + ``Data_Entry_2017.csv``)."""
    root = Path(root)
    csv_path = root / "Data_Entry_2017.csv"
    if not csv_path.is_file():
        found = sorted(root.glob("Data_Entry*.csv"))
        if not found:
            raise FileNotFoundError(f"{root}: no Data_Entry_2017.csv (ChestXray14 layout)")
        csv_path = found[0]
    index: dict[str, Path] = {}
    for folder in [root / "images", *sorted(root.glob("images_*/images"))]:
        if folder.is_dir():
            for p in folder.glob("*.png"):
                index[p.name] = p
    items: list[Item] = []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            name = row.get("Image Index", "").strip()
            pid = row.get("Patient ID", "").strip()
            if name in index and pid:
                items.append(
                    Item(
                        f"cxr14-{int(pid):05d}" if pid.isdigit() else pid, index[name], "xray", "DX"
                    )
                )
    if not items:
        raise ValueError(f"{root}: no image of the CSV was found under images/")
    return items


_IXI = re.compile(r"^(IXI\d+)-([A-Za-z]+)-(\d+)-([A-Za-z0-9]+)\.nii(\.gz)?$")


def ixi(root: str | Path, contrasts: tuple[str, ...] | None = ("T1", "T2", "PD")) -> list[Item]:
    """Items of an IXI-style NIfTI folder; ``contrasts`` filters (None = all)."""
    root = Path(root)
    items = []
    for p in sorted(root.rglob("*.nii*")):
        m = _IXI.match(p.name)
        if not m:
            continue
        contrast = m.group(4)
        if contrasts is None or contrast in contrasts:
            items.append(Item(m.group(1), p, contrast, "MR"))
    if not items:
        raise ValueError(
            f"{root}: no IXI-style NIfTI files (IXI<nnn>-<site>-<id>-<contrast>.nii.gz)"
        )
    return items


def split_items(
    items: list[Item], fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, list[Item]]:
    """Patient-level split of adapter items."""
    by_subject = split_subjects([i.subject for i in items], fractions, seed)
    out: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
    for it in items:
        out[by_subject[it.subject]].append(it)
    return out
