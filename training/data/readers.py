"""Readers: NIfTI volumes, DICOM series folders, 8/16-bit PNG/TIFF folders.

Every reader returns stored values in their own integer (or float) dtype plus the facts
needed to map them to the network's input (:class:`~training.data.intensity.StoredMeta`);
nothing is converted to 8 bits. Volumes are ``(slices, rows, columns)`` with the slice
axis first.
"""

from __future__ import annotations

import gzip
import io
import plistlib
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.data.intensity import StoredMeta

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


@dataclass
class Volume:
    """A stack of 2-D images of one subject, stored values, slice axis first."""

    array: np.ndarray  # (slices, rows, cols), stored dtype
    spacing: tuple[float, float, float]  # (slice, row, col) in mm
    meta: StoredMeta
    subject: str
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_slices(self) -> int:
        return int(self.array.shape[0])


def _stored_meta_for_array(a: np.ndarray, modality: str) -> StoredMeta:
    if a.dtype == np.uint8:
        return StoredMeta(modality=modality, bits_stored=8, pixel_representation=0)
    if a.dtype == np.uint16:
        return StoredMeta(modality=modality, bits_stored=16, pixel_representation=0)
    if a.dtype == np.int16:
        return StoredMeta(modality=modality, bits_stored=16, pixel_representation=1)
    return StoredMeta(modality=modality, bits_stored=16, pixel_representation=0)


def read_nifti(path: str | Path, modality: str = "MR", subject: str | None = None) -> Volume:
    """A 3-D NIfTI file -> Volume with axial slices first (array index order z, y, x).

    Integer data keep their dtype; a scaled file (scl_slope) becomes float32.
    """
    import nibabel as nib  # the train extra

    path = Path(path)
    img = nib.load(str(path))
    slope, inter = img.header.get_slope_inter()
    raw = np.asanyarray(img.dataobj) if slope in (None, 1.0) and inter in (None, 0.0) else None
    a = raw if raw is not None else np.asarray(img.get_fdata(dtype=np.float32))
    if a.ndim == 4 and a.shape[3] == 1:
        a = a[..., 0]
    if a.ndim != 3:
        raise ValueError(f"{path.name}: expected a 3-D volume, got shape {a.shape}")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    arr = np.ascontiguousarray(np.transpose(a, (2, 1, 0))[:, ::-1, :])  # (z, y, x), y up
    name = subject or path.name.split(".")[0]
    return Volume(
        arr,
        (zooms[2], zooms[1], zooms[0]),
        _stored_meta_for_array(arr, modality),
        name,
        str(path),
        {"affine": img.affine.tolist()},
    )


def slice_world_z(affine: list[list[float]], n_slices: int) -> np.ndarray:
    """World z (mm) of each slice of a Volume read by :func:`read_nifti`."""
    a = np.asarray(affine)
    k = np.arange(n_slices, dtype=np.float64)
    return a[2, 2] * k + a[2, 3]


def read_dicom_series(folder: str | Path, subject: str | None = None) -> Volume:
    """All single-frame images of one series in ``folder`` -> Volume, sorted along the normal.

    Stored values, RescaleSlope/Intercept, BitsStored, PixelRepresentation and the
    photometric interpretation are kept; pixels are read by the engine's checked reader
    (:func:`sr_engine.pixels.read_pixels`: colour, float or 1-bit series are refused).
    """
    import pydicom

    from sr_engine.pixels import read_pixels

    folder = Path(folder)
    items = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=False)
        except Exception:  # noqa: BLE001 - not a DICOM file: skip it
            continue
        if "PixelData" not in ds:
            continue
        items.append(ds)
    if not items:
        raise ValueError(f"{folder}: no DICOM images with pixel data")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in items}
    if len(series) > 1:
        raise ValueError(f"{folder}: {len(series)} series in one folder; give one series")

    def position(ds: Any) -> float:
        ipp = ds.get("ImagePositionPatient")
        iop = ds.get("ImageOrientationPatient")
        if ipp is not None and iop is not None:
            r, c = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
            return float(np.dot(np.cross(r, c), np.asarray(ipp, float)))
        return float(ds.get("InstanceNumber", 0) or 0)

    items.sort(key=position)
    first = items[0]
    frames = [read_pixels(ds) for ds in items]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: images of different sizes {sorted(shapes)}")
    arr = np.stack(frames) if frames[0].ndim == 2 else frames[0]
    meta = StoredMeta.from_dataset(first)
    ps = [float(v) for v in first.get("PixelSpacing", [1.0, 1.0])]
    if len(items) > 1:
        dz = abs(position(items[1]) - position(items[0])) or 1.0
    else:
        dz = float(first.get("SliceThickness", 1.0) or 1.0)
    subj = subject or str(first.get("PatientID", "") or folder.name)
    return Volume(arr, (dz, ps[0], ps[1]), meta, subj, str(folder))


def read_image(path: str | Path) -> np.ndarray:
    """One 8- or 16-bit grayscale PNG/TIFF -> 2-D array in its own dtype (uint8/uint16)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L"):
            a = np.array(im, dtype=np.uint16)
        elif im.mode == "I":
            a = np.array(im, dtype=np.int32)
            a = a.astype(np.uint16) if a.min() >= 0 and a.max() < 65536 else a
        elif im.mode == "F":
            a = np.array(im, dtype=np.float32)
        elif im.mode in ("L", "P", "1"):
            a = np.array(im.convert("L"), dtype=np.uint8)
        else:  # RGB(A) radiographs saved in colour: luminance, still 8 bit
            a = np.array(im.convert("L"), dtype=np.uint8)
    return a


def image_meta(a: np.ndarray, modality: str = "OT") -> StoredMeta:
    """Bits of an image file's dtype (8 or 16)."""
    return _stored_meta_for_array(a, modality)


def read_image_folder(folder: str | Path, modality: str = "OT") -> list[tuple[Path, np.ndarray]]:
    """All PNG/TIFF files under ``folder`` (sorted) -> ``[(path, array)]``."""
    folder = Path(folder)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder}: no PNG/TIFF images")
    return [(p, read_image(p)) for p in paths]


def read_inv3(path: str | Path, subject: str = "cranium-ct") -> Volume:
    """An InVesalius project (``.inv3``: gzipped tar, ``main.plist`` + ``matrix.dat``).

    ``matrix.dat`` is the raw volume (dtype and shape from the plist, HU for CT). Stored
    values are written as DICOM would hold them: unsigned 12-bit ``HU + 1024`` with
    RescaleIntercept -1024 when the range allows, else signed 16-bit HU.
    """
    path = Path(path)
    with gzip.open(path, "rb") as gz:
        data = gz.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        if "main.plist" not in members:
            raise ValueError(f"{path.name}: no main.plist inside")
        plist = plistlib.loads(tar.extractfile(members["main.plist"]).read())  # type: ignore[union-attr]
        mat = plist["matrix"]
        raw = tar.extractfile(members[mat["filename"]]).read()  # type: ignore[union-attr]
    a = np.frombuffer(raw, dtype=np.dtype(mat["dtype"]).newbyteorder("<")).reshape(mat["shape"])
    a = a.astype(np.int16)
    sp = [float(v) for v in plist.get("spacing", [1.0, 1.0, 1.0])]  # x, y, z
    modality = str(plist.get("modality", "CT"))
    if a.min() >= -1024 and a.max() <= 4095 - 1024:
        stored = (a.astype(np.int32) + 1024).astype(np.uint16)
        meta = StoredMeta(modality, 12, 0, 1.0, -1024.0)
    else:
        stored = a
        meta = StoredMeta(modality, 16, 1, 1.0, 0.0)
    return Volume(np.ascontiguousarray(stored), (sp[2], sp[1], sp[0]), meta, subject, str(path))
