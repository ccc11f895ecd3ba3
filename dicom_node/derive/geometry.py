"""Derived geometry (DESIGN.md, "Derived series"): Rows/Columns x s, PixelSpacing / s and
ImagePositionPatient moved by the half-pixel shift, so the derived series overlays the
original (highdicom's spatial transforms)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from highdicom.spatial import create_affine_matrix_from_attributes
from pydicom.dataset import Dataset

_SPACING_KEYWORDS = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")


def _fmt(value: float) -> str:
    """A DS string (at most 16 characters) with as much precision as fits."""
    for digits in range(10, 0, -1):
        s = f"{value:.{digits}f}".rstrip("0").rstrip(".")
        if s in ("-0", ""):
            s = "0"
        if len(s) <= 16:
            return s
    return f"{value:.6g}"


# -- geometry ---------------------------------------------------------------------------


def shifted_position(
    position: Iterable[float],
    orientation: Iterable[float],
    spacing: Iterable[float],
    scale: int,
) -> list[float]:
    """The ImagePositionPatient of the derived grid.

    The source pixel (0, 0) is centred on ``position``; the outer corner of the grid lies
    half a source pixel before it along rows and columns. The derived grid has the same
    outer corner and pixels ``scale`` times smaller, so its first centre is at source
    pixel index ``-0.5 + 0.5 / scale`` in both directions. Oblique orientations work the
    same way: the shift follows the row and column direction cosines.
    """
    affine = create_affine_matrix_from_attributes(
        image_position=[float(v) for v in position],
        image_orientation=[float(v) for v in orientation],
        pixel_spacing=[float(v) for v in spacing],
    )
    idx = -0.5 + 0.5 / scale
    return [float(v) for v in (affine @ np.array([idx, idx, 0.0, 1.0]))[:3]]


def _scale_spacing(holder: Dataset, scale: int) -> None:
    for kw in _SPACING_KEYWORDS:
        if kw in holder and holder[kw].value not in (None, ""):
            values = holder[kw].value
            values = list(values) if isinstance(values, Iterable) else [values]
            holder[kw].value = [_fmt(float(v) / scale) for v in values]


def classic_geometry(out: Dataset, source: Dataset, scale: int) -> None:
    if all(k in source for k in ("ImagePositionPatient", "ImageOrientationPatient")) and (
        "PixelSpacing" in source and source.PixelSpacing
    ):
        out.ImagePositionPatient = [
            _fmt(v)
            for v in shifted_position(
                source.ImagePositionPatient,
                source.ImageOrientationPatient,
                source.PixelSpacing,
                scale,
            )
        ]
    _scale_spacing(out, scale)


def _group_item(fg: Dataset | None, keyword: str) -> Dataset | None:
    if fg is not None and keyword in fg and fg[keyword].value:
        return fg[keyword].value[0]
    return None


def enhanced_geometry(out: Dataset, scale: int) -> None:
    shared = (
        out.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in out else None
    )
    per = list(out.get("PerFrameFunctionalGroupsSequence") or [])

    def find(frame_fg: Dataset | None, keyword: str) -> Dataset | None:
        return _group_item(frame_fg, keyword) or _group_item(shared, keyword)

    # positions first, with the source spacing; then the spacing itself
    updates: list[tuple[Dataset, list[str]]] = []
    seen: set[int] = set()
    for fg in per or [None]:
        pos = find(fg, "PlanePositionSequence")
        ori = find(fg, "PlaneOrientationSequence")
        meas = find(fg, "PixelMeasuresSequence")
        if pos is None or id(pos) in seen:
            continue
        if ori is None or meas is None or "PixelSpacing" not in meas:
            continue
        if "ImagePositionPatient" not in pos or "ImageOrientationPatient" not in ori:
            continue
        seen.add(id(pos))
        new = shifted_position(
            pos.ImagePositionPatient, ori.ImageOrientationPatient, meas.PixelSpacing, scale
        )
        updates.append((pos, [_fmt(v) for v in new]))
    for pos, new in updates:
        pos.ImagePositionPatient = new
    scaled: set[int] = set()
    for fg in [*per, shared]:
        meas = _group_item(fg, "PixelMeasuresSequence")
        if meas is not None and id(meas) not in scaled:
            scaled.add(id(meas))
            _scale_spacing(meas, scale)
    _scale_spacing(out, scale)  # top-level spacing, where an IOD also carries it


# -- provenance -------------------------------------------------------------------------


# -- attributes in pixel coordinates ----------------------------------------------------
#
# Rectangular shutters, collimators and exposure control sensing regions are given by the
# first and last pixel column/row they contain (PS3.3 C.7.6.11, C.8.7.3, C.8.11.7): source
# pixel c (1-based) becomes derived pixels s*(c-1)+1 .. s*c, so a first edge maps to
# s*(v-1)+1 and a last edge to s*v, and exactly the same part of the image stays visible.
# Circles and polygons have integer (IS) centres and vertices that an even scale moves to
# half pixels: they cannot be kept exactly and are dropped with their shape value.

# (shape attribute, first edges, last edges, attributes of the CIRCULAR and POLYGONAL shapes)
_PIXEL_REGIONS: tuple[
    tuple[str, tuple[str, ...], tuple[str, ...], dict[str, tuple[str, ...]]], ...
] = (
    (
        "ShutterShape",
        ("ShutterLeftVerticalEdge", "ShutterUpperHorizontalEdge"),
        ("ShutterRightVerticalEdge", "ShutterLowerHorizontalEdge"),
        {
            "CIRCULAR": ("CenterOfCircularShutter", "RadiusOfCircularShutter"),
            "POLYGONAL": ("VerticesOfThePolygonalShutter",),
        },
    ),
    (
        "CollimatorShape",
        ("CollimatorLeftVerticalEdge", "CollimatorUpperHorizontalEdge"),
        ("CollimatorRightVerticalEdge", "CollimatorLowerHorizontalEdge"),
        {
            "CIRCULAR": ("CenterOfCircularCollimator", "RadiusOfCircularCollimator"),
            "POLYGONAL": ("VerticesOfThePolygonalCollimator",),
        },
    ),
    (
        "ExposureControlSensingRegionShape",
        (
            "ExposureControlSensingRegionLeftVerticalEdge",
            "ExposureControlSensingRegionUpperHorizontalEdge",
        ),
        (
            "ExposureControlSensingRegionRightVerticalEdge",
            "ExposureControlSensingRegionLowerHorizontalEdge",
        ),
        {
            "CIRCULAR": (
                "CenterOfCircularExposureControlSensingRegion",
                "RadiusOfCircularExposureControlSensingRegion",
            ),
            "POLYGONAL": ("VerticesOfThePolygonalExposureControlSensingRegion",),
        },
    ),
)

# attributes that refer to pixel coordinates and are dropped wherever they occur: a shutter
# drawn by an overlay (the overlays are dropped), and regions given by integer vertices
PIXEL_REFERENCES_DROPPED = ("ShutterOverlayGroup", "RegionPixelShiftSequence")
# shifts in (sub-)pixels, FL: scaled exactly
_PIXEL_SHIFTS = ("MaskSubPixelShift",)

#: every attribute in pixel coordinates that :func:`scale_pixel_coordinates` handles
PIXEL_COORDINATE_ATTRIBUTES: tuple[str, ...] = (
    *(
        kw
        for shape, first, last, other in _PIXEL_REGIONS
        for kw in (shape, *first, *last, *(k for ks in other.values() for k in ks))
    ),
    *PIXEL_REFERENCES_DROPPED,
    *_PIXEL_SHIFTS,
)


def _shape_values(value: object) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]  # type: ignore[union-attr]


def _scale_regions(ds: Dataset, scale: int) -> None:
    for shape_kw, first, last, other in _PIXEL_REGIONS:
        for kw in first:
            if kw in ds and ds[kw].value not in (None, ""):
                ds[kw].value = scale * (int(ds[kw].value) - 1) + 1
        for kw in last:
            if kw in ds and ds[kw].value not in (None, ""):
                ds[kw].value = scale * int(ds[kw].value)
        for kws in other.values():
            for kw in kws:
                if kw in ds:
                    del ds[kw]
        if shape_kw in ds:
            kept = [v for v in _shape_values(ds[shape_kw].value) if v.strip() not in other]
            if kept:
                ds[shape_kw].value = kept
            else:  # nothing left to show: the shape goes, and with it the shutter's colour
                del ds[shape_kw]
                if shape_kw == "ShutterShape":
                    for kw in ("ShutterPresentationValue", "ShutterPresentationColorCIELabValue"):
                        if kw in ds:
                            del ds[kw]
    for kw in PIXEL_REFERENCES_DROPPED:
        if kw in ds:
            del ds[kw]
    for kw in _PIXEL_SHIFTS:
        if kw in ds and ds[kw].value not in (None, ""):
            values = ds[kw].value
            values = list(values) if isinstance(values, Iterable) else [values]
            ds[kw].value = [float(v) * scale for v in values]


def scale_pixel_coordinates(ds: Dataset, scale: int) -> None:
    """Attributes in pixel coordinates, at every level of ``ds`` (functional groups
    included), moved to the grid ``scale`` times finer (see the comment above)."""
    _scale_regions(ds, scale)
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                scale_pixel_coordinates(item, scale)
