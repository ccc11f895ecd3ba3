"""Before/after previews of a derived series for the console: one source slice and its
derived slice as 8-bit PNGs with the same window, and the provenance tags that were
written, kept under ``<data_dir>/previews/<job id>/``. No patient name or ID is kept."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

log = logging.getLogger(__name__)

PROVENANCE_TAGS = (
    "SeriesDescription",
    "ImageType",
    "DerivationDescription",
    "ImageComments",
    "SeriesNumber",
    "Manufacturer",
    "BurnedInAnnotation",
)


def preview_dir(data_dir: str | os.PathLike[str], job_id: int) -> Path:
    return Path(data_dir) / "previews" / str(int(job_id))


def _frame(ds: Any) -> np.ndarray:
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[frames // 2]
    if arr.ndim == 3:  # colour: luminance
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return arr.astype(np.float64) * slope + intercept


def _first(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v[0]) if isinstance(v, pydicom.multival.MultiValue | list) else float(v)
    except (TypeError, ValueError, IndexError):
        return None


def window_of(ds: Any, values: np.ndarray) -> tuple[float, float]:
    """(center, width): the data set's first window, else the 1st-99th percentile."""
    c, w = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if c is not None and w is not None and w > 0:
        return c, w
    lo, hi = np.percentile(values, [1, 99])
    return float((lo + hi) / 2), float(max(hi - lo, 1.0))


def to_png(
    values: np.ndarray,
    center: float,
    width: float,
    invert: bool,
    path: Path,
    size: tuple[int, int] | None = None,
) -> None:
    from PIL import Image

    lo = center - width / 2
    img = np.clip((values - lo) / width * 255.0, 0, 255).astype(np.uint8)
    if invert:
        img = 255 - img
    im = Image.fromarray(img, mode="L")
    if size is not None and im.size != size:
        im = im.resize(size, Image.Resampling.NEAREST)  # the source's own pixels, no smoothing
    im.save(path, format="PNG", optimize=True)


def _text(v: Any) -> str:
    return "\\".join(map(str, v)) if isinstance(v, pydicom.multival.MultiValue) else str(v)


def _provenance(ds: Any, src: Any) -> dict[str, str]:
    tags: dict[str, str] = {}
    for key in PROVENANCE_TAGS:
        if key in ds:
            tags[key] = _text(ds.get(key))
    # enhanced images carry their derivation in the Derivation Image functional group only
    for fg in ds.get("SharedFunctionalGroupsSequence", None) or []:
        for item in fg.get("DerivationImageSequence", None) or []:
            if "DerivationDescription" in item:
                tags.setdefault("DerivationDescription", _text(item.DerivationDescription))
    for item in ds.get("DerivationCodeSequence", None) or []:
        tags.setdefault("DerivationCode", str(item.get("CodeMeaning", "")))
    for i, item in enumerate(ds.get("ContributingEquipmentSequence", None) or []):
        parts = [
            _text(item.get(k, ""))
            for k in ("Manufacturer", "ManufacturerModelName", "SoftwareVersions")
            if item.get(k, "")
        ]
        tags[f"ContributingEquipment[{i}]"] = " · ".join(parts)
    refs = ds.get("SourceImageSequence", None) or []
    if refs:
        tags["SourceImageSequence"] = (
            f"{len(refs)} item(s), e.g. {refs[0].ReferencedSOPInstanceUID}"
        )
    tags["SOPInstanceUID"] = str(ds.get("SOPInstanceUID", ""))
    tags["source SOPInstanceUID"] = str(src.get("SOPInstanceUID", ""))
    return tags


def _spacing(ds: Any) -> str | None:
    ps = ds.get("PixelSpacing")
    if not ps:
        return None
    try:
        return " × ".join(f"{float(v):.3g}" for v in ps)
    except (TypeError, ValueError):
        return None


def capture(
    data_dir: str | os.PathLike[str],
    job_id: int,
    sources: list[tuple[str, str]],
    derived: list[str],
) -> bool:
    """Keep previews of the middle derived instance and its source (found through its
    SourceImageSequence among ``sources``, (SOPInstanceUID, path) pairs). Never raises: a
    job never fails for its preview. True when written."""
    if not derived:
        return False
    try:
        out = pydicom.dcmread(derived[len(derived) // 2])
        refs = out.get("SourceImageSequence", None) or []
        wanted = str(refs[0].ReferencedSOPInstanceUID) if refs else None
        src_path = dict(sources).get(wanted) if wanted else None
        if src_path is None:
            log.warning("job %d: no preview (source instance not found)", job_id)
            return False
        src = pydicom.dcmread(src_path)
        before, after = _frame(src), _frame(out)
        center, width = window_of(out, after)
        invert = str(out.get("PhotometricInterpretation", "")) == "MONOCHROME1"
        d = preview_dir(data_dir, job_id)
        d.mkdir(parents=True, exist_ok=True)
        size = (after.shape[1], after.shape[0])
        to_png(before, center, width, invert, d / "before.png", size=size)
        to_png(after, center, width, invert, d / "after.png")
        meta = {
            "instance_number": str(src.get("InstanceNumber", "") or ""),
            "window": f"C {center:g} / W {width:g}",
            "source_size": f"{before.shape[1]}×{before.shape[0]}",
            "derived_size": f"{after.shape[1]}×{after.shape[0]}",
            "source_spacing": _spacing(src),
            "derived_spacing": _spacing(out),
            "tags": _provenance(out, src),
        }
        (d / "provenance.json").write_text(json.dumps(meta, indent=1))
        return True
    except Exception as e:  # a preview is a courtesy: say so and go on
        log.warning("job %d: no preview (%s)", job_id, type(e).__name__)
        return False


def load(data_dir: str | os.PathLike[str], job_id: int) -> dict[str, Any] | None:
    p = preview_dir(data_dir, job_id) / "provenance.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
