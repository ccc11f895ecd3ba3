"""Training images packaged in registries, read from a local cache folder (never downloaded).

The cache holds the files as the registries ship them; fill it once with
:data:`FILL_CACHE_COMMAND` (also in ``docs/training.md`` and ``srnode train prepare --help``):

* ``pyradiomics-3.0.1.tar.gz`` (PyPI sdist, BSD-3-Clause): ``data/lung1_image.nrrd`` and
  ``lung2_image.nrrd`` (chest CT of two patients, 512², int16 HU) and ``brain1_image.nrrd``,
  ``brain2_image.nrrd`` (contrast T1 MR of two patients);
* ``pycortex-1.4.0.tar.gz`` (PyPI sdist, BSD-2-Clause): ``filestore/db/S1/anatomicals/
  raw.nii.gz`` (T1 MR of one volunteer, 256³, 1 mm, uint8);
* ``heudiconv_*.deb`` (Debian, Apache-2.0), or the installed package: the Siemens mosaics of
  ``tests/data/b0dwiForFmap`` (9x9 tiles of 152x150, 1.5 mm), split into slices.

Each source is read as one :class:`~training.data.readers.Volume` per image file, axial
slices first, stored values untouched.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.readers import Volume, read_nifti

FILL_CACHE_COMMAND = (
    "mkdir -p ~/srnode-cache && cd ~/srnode-cache && "
    "pip install numpy setuptools wheel && "
    "pip download --no-deps --no-binary pyradiomics --no-build-isolation pyradiomics==3.0.1 && "
    "pip download --no-deps --no-binary pycortex pycortex==1.4.0 && "
    "apt-get download heudiconv"
)

RADIOMICS = "pyradiomics-3.0.1.tar.gz"
PYCORTEX = "pycortex-1.4.0.tar.gz"
HEUDICONV_INSTALLED = Path("/usr/lib/python3/dist-packages/heudiconv")
MOSAIC_DIR = "tests/data/b0dwiForFmap"


@dataclass(frozen=True)
class Source:
    """One packaged image file and what it is."""

    name: str  # prepared dataset name
    subject: str
    modality: str
    license: str
    origin: str  # package and file, for the card


RADIOMICS_FILES = {
    "lung1": Source("radiomics-lung1", "radiomics-lung1", "CT", "BSD-3-Clause (pyradiomics 3.0.1)",
                    "PyPI sdist pyradiomics==3.0.1: data/lung1_image.nrrd"),
    "lung2": Source("radiomics-lung2", "radiomics-lung2", "CT", "BSD-3-Clause (pyradiomics 3.0.1)",
                    "PyPI sdist pyradiomics==3.0.1: data/lung2_image.nrrd"),
    "brain1": Source("radiomics-brain1", "radiomics-brain1", "MR",
                     "BSD-3-Clause (pyradiomics 3.0.1)",
                     "PyPI sdist pyradiomics==3.0.1: data/brain1_image.nrrd"),
    "brain2": Source("radiomics-brain2", "radiomics-brain2", "MR",
                     "BSD-3-Clause (pyradiomics 3.0.1)",
                     "PyPI sdist pyradiomics==3.0.1: data/brain2_image.nrrd"),
}  # fmt: skip
PYCORTEX_S1 = Source(
    "pycortex-s1", "pycortex-s1", "MR", "BSD-2-Clause (pycortex 1.4.0)",
    "PyPI sdist pycortex==1.4.0: filestore/db/S1/anatomicals/raw.nii.gz",
)  # fmt: skip
HEUDICONV = Source(
    "heudiconv-b0dwi", "heudiconv-b0dwi", "MR", "Apache-2.0 (Debian heudiconv)",
    "Debian heudiconv: tests/data/b0dwiForFmap/*.dcm (Siemens mosaics)",
)  # fmt: skip


def _member(tar: tarfile.TarFile, suffix: str) -> bytes:
    for m in tar.getmembers():
        if m.isfile() and m.name.endswith(suffix):
            f = tar.extractfile(m)
            if f is not None:
                return f.read()
    raise FileNotFoundError(f"{Path(tar.name or '').name}: no member ending in {suffix}")


def _read_nrrd_bytes(data: bytes) -> tuple[np.ndarray, dict]:
    import nrrd  # pynrrd, the train extra

    with tempfile.NamedTemporaryFile(suffix=".nrrd") as f:
        f.write(data)
        f.flush()
        return nrrd.read(f.name)


def nrrd_volume(data: bytes, src: Source) -> Volume:
    """An NRRD (x, y, z) volume -> Volume (z, y, x) with its spacing and stored dtype."""
    from training.data.readers import image_meta

    a, header = _read_nrrd_bytes(data)
    arr = np.ascontiguousarray(np.transpose(a, (2, 1, 0)))
    dirs = np.asarray(header.get("space directions", np.eye(3)), dtype=np.float64)
    sp = tuple(float(v) for v in np.linalg.norm(dirs, axis=1))  # x, y, z
    meta = image_meta(arr, src.modality)
    if arr.dtype == np.int16:  # HU (CT) or signed MR values: 16-bit two's complement
        from dataclasses import replace

        meta = replace(meta, bits_stored=16, pixel_representation=1)
    return Volume(arr, (sp[2], sp[1], sp[0]), meta, src.subject, src.origin)


def radiomics_volumes(cache: Path) -> Iterator[tuple[Source, Volume]]:
    path = cache / RADIOMICS
    if not path.is_file():
        return
    with tarfile.open(path) as tar:
        for key, src in RADIOMICS_FILES.items():
            yield src, nrrd_volume(_member(tar, f"data/{key}_image.nrrd"), src)


def pycortex_volume(cache: Path) -> Iterator[tuple[Source, Volume]]:
    path = cache / PYCORTEX
    if not path.is_file():
        return
    with tarfile.open(path) as tar:
        data = _member(tar, "filestore/db/S1/anatomicals/raw.nii.gz")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "raw.nii.gz"
        p.write_bytes(data)
        vol = read_nifti(p, "MR", subject=PYCORTEX_S1.subject)
    vol.source = PYCORTEX_S1.origin
    yield PYCORTEX_S1, vol


def deb_members(deb: Path) -> dict[str, bytes]:
    """The files of a Debian package's data archive (an ``ar`` file holding data.tar.*)."""
    raw = deb.read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise ValueError(f"{deb.name}: not a Debian package (ar archive)")
    pos, data = 8, None
    while pos + 60 <= len(raw):
        name = raw[pos : pos + 16].decode().strip().rstrip("/")
        size = int(raw[pos + 48 : pos + 58].decode().strip())
        if name.startswith("data.tar"):
            data = raw[pos + 60 : pos + 60 + size]
            break
        pos += 60 + size + (size & 1)
    if data is None:
        raise ValueError(f"{deb.name}: no data.tar member")
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            if f is not None:
                out[m.name.lstrip("./")] = f.read()
    return out


def split_mosaic(tiled: np.ndarray, n_images: int, tile: tuple[int, int]) -> np.ndarray:
    """A Siemens mosaic (rows x cols of tiles) -> (n_images, tile_rows, tile_cols)."""
    th, tw = tile
    per_row = tiled.shape[1] // tw
    out = np.empty((n_images, th, tw), tiled.dtype)
    for k in range(n_images):
        r, c = divmod(k, per_row)
        out[k] = tiled[r * th : (r + 1) * th, c * tw : (c + 1) * tw]
    return out


def mosaic_volume(ds: object, src: Source) -> Volume:
    """One Siemens mosaic data set -> Volume of its slices (empty tiles dropped)."""
    from sr_engine.pixels import read_image

    n = int(ds[0x0019, 0x100A].value)  # type: ignore[index]  # NumberOfImagesInMosaic
    grid = int(np.ceil(np.sqrt(n)))
    a, meta = read_image(ds)
    tile = (a.shape[0] // grid, a.shape[1] // grid)
    slices = split_mosaic(a, n, tile)
    slices = slices[[bool(s.any()) for s in slices]]
    ps = [float(v) for v in ds.get("PixelSpacing", [1.0, 1.0])]  # type: ignore[attr-defined]
    dz = float(ds.get("SpacingBetweenSlices", ds.get("SliceThickness", 1.0)) or 1.0)  # type: ignore[attr-defined]
    return Volume(np.ascontiguousarray(slices), (dz, ps[0], ps[1]), meta, src.subject, src.origin)


def heudiconv_volumes(cache: Path) -> Iterator[tuple[Source, Volume]]:
    import pydicom

    files: dict[str, bytes] = {}
    debs = sorted(cache.glob("heudiconv_*.deb"))
    if debs:
        files = {k: v for k, v in deb_members(debs[-1]).items() if MOSAIC_DIR in k}
    elif (HEUDICONV_INSTALLED / MOSAIC_DIR).is_dir():
        files = {str(p): p.read_bytes() for p in (HEUDICONV_INSTALLED / MOSAIC_DIR).glob("*")}
    for i, key in enumerate(sorted(k for k in files if k.endswith(".dcm"))):
        ds = pydicom.dcmread(io.BytesIO(files[key]))
        src = Source(f"{HEUDICONV.name}-{i + 1}", HEUDICONV.subject, "MR", HEUDICONV.license,
                     f"{HEUDICONV.origin}: {Path(key).name}")  # fmt: skip
        yield src, mosaic_volume(ds, src)


def cached_volumes(cache: str | Path) -> list[tuple[Source, Volume]]:
    """Every packaged volume found in ``cache`` (missing sources are skipped)."""
    cache = Path(cache).expanduser()
    out: list[tuple[Source, Volume]] = []
    for reader in (radiomics_volumes, pycortex_volume, heudiconv_volumes):
        out.extend(reader(cache))
    return out
