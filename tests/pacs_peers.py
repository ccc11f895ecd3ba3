"""Real peers for tests: Debian's Orthanc (with our orthanc/ config and plugin) and dcmtk's
storescp, on free loopback ports, plus small synthetic CT/MR series with fresh UIDs.

Every process started here is stopped by its context manager (terminate, then kill), and
Orthanc is waited for until it has exited, since it holds its SQLite lock for a few seconds
after a stop.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.node_helpers import free_port, nodelay_env, storescu, wait_port  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
ORTHANC_BIN = "/usr/sbin/Orthanc"
PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/share/orthanc/plugins/libOrthancPython.so",
)
STORESCP = "/usr/bin/storescp"
STORESCU = "/usr/bin/storescu"


def _load_orthanc_configure():
    """orthanc/configure.py (stdlib only; orthanc/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "srnode_orthanc_configure", ROOT / "orthanc" / "configure.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


orthanc_configure = _load_orthanc_configure()


def have_orthanc() -> bool:
    return os.access(ORTHANC_BIN, os.X_OK) and all(os.path.exists(p) for p in PLUGINS)


def have_dcmtk() -> bool:
    return os.access(STORESCP, os.X_OK) and os.access(STORESCU, os.X_OK)


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM, wait, then SIGKILL; only the process we started."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)


# --- Orthanc -----------------------------------------------------------------------------


@dataclass
class OrthancPeer:
    proc: subprocess.Popen
    http_port: int
    dicom_port: int
    storage: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def client(self):  # -> pyorthanc.Orthanc
        from pyorthanc import Orthanc

        return Orthanc(self.url, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def orthanc(
    workdir: Path,
    *,
    stable_age: int = 2,
    srnode: str | None = None,
    srnode_stow: str | None = None,
    autoroute: bool = True,
    autoroute_settings: dict | None = None,
    srnode_token: str | None = None,
) -> Iterator[OrthancPeer]:
    """A fresh Orthanc on free ports with orthanc/orthanc.json and orthanc/autoroute.py."""
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "storage"
    http_port, dicom_port = free_port(), free_port()
    cfg = orthanc_configure.build(
        storage,
        http_port=http_port,
        dicom_port=dicom_port,
        srnode=srnode,
        srnode_stow=srnode_stow,
        stable_age=stable_age,
        autoroute=autoroute,
        autoroute_settings=autoroute_settings,
        srnode_token=srnode_token,
    )
    cfg_path = workdir / "orthanc.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    log_path = workdir / "orthanc.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [ORTHANC_BIN, str(cfg_path)], stdout=log, stderr=subprocess.STDOUT, env=nodelay_env()
        )
    peer = OrthancPeer(proc, http_port, dicom_port, storage, log_path)
    try:
        wait_port(http_port, 60, proc)
        wait_port(dicom_port, 30, proc)
        client = peer.client()
        deadline = time.monotonic() + 30
        while True:
            try:
                client.get_system()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield peer
    except BaseException:
        sys.stderr.write(peer.log()[-4000:])
        raise
    finally:
        stop_process(proc, timeout=30)


# --- dcmtk storescp -----------------------------------------------------------------------


@dataclass
class StorescpPeer:
    proc: subprocess.Popen
    port: int
    aet: str
    directory: Path
    log_path: Path
    extra: list[str] = field(default_factory=list)

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def datasets(self) -> list[Dataset]:
        return [pydicom.dcmread(p, stop_before_pixels=True) for p in self.files()]

    def wait_for(self, n: int, timeout: float = 60.0) -> list[Path]:
        deadline = time.monotonic() + timeout
        while len(self.files()) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"storescp has {len(self.files())} of {n} files")
            time.sleep(0.1)
        time.sleep(0.2)  # the last file is renamed into place after it is written
        return self.files()


@contextlib.contextmanager
def storescp(
    directory: Path,
    *,
    aet: str = "STORESCP",
    port: int | None = None,
    extra: list[str] | None = None,
) -> Iterator[StorescpPeer]:
    """dcmtk storescp accepting every transfer syntax it knows, one file per instance."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = directory.parent / f"storescp-{port}.log"
    args = [STORESCP, "-aet", aet, "-od", str(directory), "+xa", "-uf", *(extra or []), str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=nodelay_env())
    peer = StorescpPeer(proc, port, aet, directory, log_path, list(extra or []))
    try:
        wait_port(port, 20, proc)
        yield peer
    finally:
        stop_process(proc, timeout=10)


# --- synthetic series ---------------------------------------------------------------------


def _base(name: str) -> Dataset:
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.PatientName = "PHANTOM"
    ds.PatientID = "SRNODE-TEST"
    return ds


def ct_phantom(size: int = 512, hu_disc: int = 40) -> np.ndarray:
    """Stored values (intercept -1024): air, a flat disc of ``hu_disc`` HU, a bright rod."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2.0
    r = np.hypot(x - c, y - c)
    hu = np.full((size, size), -1000.0, np.float32)
    hu[r < 0.42 * size] = hu_disc
    hu[np.hypot(x - c - 0.2 * size, y - c) < 0.04 * size] = 700
    return (hu + 1024).astype(np.int16)


def _fill(ds: Dataset, pixels: np.ndarray) -> None:
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels.tobytes()
    for kw in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if kw in ds:
            del ds[kw]


def write_phantom_series(
    directory: Path,
    modality: str = "CT",
    n: int = 3,
    size: int | None = None,
    study_uid: str | None = None,
    series_description: str | None = None,
) -> list[Path]:
    """``n`` slices of a CT (phantom, ``size``² default 512) or MR (pydicom's MR_small
    tiled to ``size``² default 64) series with fresh UIDs, explicit VR little endian."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    paths = []
    for i in range(n):
        if modality == "CT":
            ds = _base("CT_small.dcm")
            size_ = size or 512
            _fill(ds, ct_phantom(size_))
            ds.RescaleIntercept = -1024
            ds.RescaleSlope = 1
            ds.WindowCenter, ds.WindowWidth = 40, 400
            ds.PixelSpacing = [0.5, 0.5]
            ds.SliceThickness = 2.0
            ds.BodyPartExamined = "HEAD"
            ds.SeriesDescription = series_description or "Head 2.0 phantom"
        else:
            ds = _base("MR_small.dcm")
            src = ds.pixel_array.astype(np.int16)
            size_ = size or 64
            reps = max(1, size_ // src.shape[0])
            pix = np.tile(src, (reps, reps))[:size_, :size_].copy()
            _fill(ds, pix)
            ds.PixelSpacing = [0.3125, 0.3125]
            ds.SliceThickness = 3.0
            ds.BodyPartExamined = "BRAIN"
            ds.SeriesDescription = series_description or "T1 phantom"
        ds.StudyDescription = "srnode test study"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.SeriesNumber = 3 if modality == "CT" else 4
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-100.0, -120.0, -50.0 + i * float(ds.SliceThickness)]
        ds.SliceLocation = float(ds.ImagePositionPatient[2])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = directory / f"{modality.lower()}{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def rmtree_quiet(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --- Orthanc REST helpers (pyorthanc) ------------------------------------------------------


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout} s")
        time.sleep(interval)


def find_series(client, study_uid: str) -> list[dict]:
    """Orthanc series (expanded) of a study, by StudyInstanceUID."""
    return client.post_tools_find(
        json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
    )


def series_id(client, series_uid: str) -> str | None:
    ids = client.post_tools_find(
        json={"Level": "Series", "Query": {"SeriesInstanceUID": series_uid}}
    )
    return ids[0] if ids else None


def stable_series_ids(client) -> set[str]:
    """Orthanc IDs of the series that have had a StableSeries change."""
    changes = client.get_changes(params={"since": 0, "limit": 10000})["Changes"]
    return {c["ID"] for c in changes if c["ChangeType"] == "StableSeries"}
