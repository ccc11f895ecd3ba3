"""``srnode enhance`` and ``srnode models`` end to end: the real engine (ONNX Runtime) on
small ONNX graphs from tests/onnx_models.py, real DICOM files in, files on disk out."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import typer
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless
from typer.testing import CliRunner

from dicom_node.cli import batch as cli_batch
from dicom_node.derive.pixels import read_pixels
from tests.onnx_models import write_test_model

DCMDUMP = "/usr/bin/dcmdump"


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    cli_batch.register(app)
    return app


def _run(*args: str):
    return CliRunner().invoke(_app(), list(args), catch_exceptions=False)


def _src(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"test file {name} not available (pydicom-data missing?)")
    return Path(path)


def _crop_to(src: Path, dst: Path, rows: int, cols: int) -> Path:
    ds = pydicom.dcmread(src)
    arr = read_pixels(ds)[:rows, :cols]
    ds.Rows, ds.Columns = arr.shape
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(dst, enforce_file_format=True)
    return dst


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_test_model(tmp_path_factory.mktemp("models"), "test-x2")


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    (d / "ct").mkdir(parents=True)
    (d / "mr" / "deeper").mkdir(parents=True)
    shutil.copy(_src("CT_small.dcm"), d / "ct" / "ct1.dcm")
    shutil.copy(_src("MR_small_jp2klossless.dcm"), d / "mr" / "mr_j2k.dcm")
    shutil.copy(_src("emri_small_RLE.dcm"), d / "mr" / "deeper" / "emri")  # no extension
    _crop_to(_src("RG3_UNCR.dcm"), d / "cr.dcm", 40, 48)  # CR MONOCHROME1, 10-bit
    (d / "notes.txt").write_text("not DICOM\n")
    return d


def _outputs(out: Path) -> list[Path]:
    return sorted(out.rglob("*.dcm"))


@pytest.mark.slow
def test_enhance_folder_all_done(model: Path, inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = _run("enhance", str(inputs), "--out", str(out), "--model", str(model), "--threads", "1")
    assert r.exit_code == 0, r.output
    files = _outputs(out)
    assert len(files) == 4
    assert "4 file(s) written in 4 series" in r.output
    assert "1 non-DICOM file(s) skipped" in r.output
    assert "worst data-consistency error: RMSE" in r.output
    assert "test-x2" in r.output

    ct_src = pydicom.dcmread(inputs / "ct" / "ct1.dcm")
    assert str(ct_src.PatientName) not in r.output  # never a patient name

    by_modality = {}
    for f in files:
        ds = pydicom.dcmread(f)
        assert f.parent.name == ds.SeriesInstanceUID and f.stem == ds.SOPInstanceUID
        # losslessly compressed sources (the J2K and RLE MRs) give JPEG 2000 lossless
        lossless_source = ds.Modality == "MR"
        assert ds.file_meta.TransferSyntaxUID == (
            JPEG2000Lossless if lossless_source else ExplicitVRLittleEndian
        )
        by_modality[ds.Modality + ("-mf" if "NumberOfFrames" in ds else "")] = ds
    ct = by_modality["CT"]
    assert ct.pixel_array.shape == (256, 256) and ct.pixel_array.dtype == np.int16
    hu_src = read_pixels(ct_src) * float(ct_src.RescaleSlope) + float(ct_src.RescaleIntercept)
    hu_out = ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    assert abs(hu_out.mean() - hu_src.mean()) < 1.0
    # data consistency: the 2x2 area average of the output reproduces the input
    area = ct.pixel_array.astype(float).reshape(128, 2, 128, 2).mean(axis=(1, 3))
    assert np.sqrt(np.mean((area - read_pixels(ct_src)) ** 2)) <= 0.5
    rmse = float(ct.DerivationDescription.split("RMSE ")[1].split(",")[0])
    assert rmse <= 0.5
    assert ct.SourceImageSequence[0].ReferencedSOPInstanceUID == ct_src.SOPInstanceUID

    cr = by_modality["CR"]
    assert cr.PhotometricInterpretation == "MONOCHROME1"
    assert cr.pixel_array.shape == (80, 96) and cr.pixel_array.max() <= 1023

    emri = by_modality["MR-mf"]
    assert emri.pixel_array.shape == (10, 128, 128)
    assert by_modality["MR"].pixel_array.shape == (128, 128)

    if Path(DCMDUMP).exists():
        for f in files:
            run = subprocess.run([DCMDUMP, "+E", str(f)], capture_output=True, text=True)
            assert run.returncode == 0 and "E:" not in run.stderr, run.stderr


def test_failures_listed_and_rest_goes_on(model: Path, inputs: Path, tmp_path: Path) -> None:
    shutil.copy(_src("SC_rgb.dcm"), inputs / "colour.dcm")
    shutil.copy(_src("liver_1frame.dcm"), inputs / "seg.dcm")
    out = tmp_path / "out"
    r = _run("enhance", str(inputs), "--out", str(out), "--model", str(model), "--threads", "1")
    assert r.exit_code == 1, r.output
    assert len(_outputs(out)) == 4
    assert "2 failed" in r.output
    text = " ".join(r.output.split())
    assert "colour.dcm" in text and "colour images (RGB)" in text
    assert "seg.dcm" in text and "1-bit" in text


def test_rerun_is_deterministic_and_no_consistency_differs(
    model: Path, inputs: Path, tmp_path: Path
) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out in (a, b):
        assert _run("enhance", str(inputs / "ct"), "-o", str(out), "-m", str(model)).exit_code == 0
    rel = [p.relative_to(a) for p in _outputs(a)]
    assert rel == [p.relative_to(b) for p in _outputs(b)] and len(rel) == 1
    np.testing.assert_array_equal(
        pydicom.dcmread(a / rel[0]).pixel_array, pydicom.dcmread(b / rel[0]).pixel_array
    )
    r = _run("enhance", str(inputs / "ct"), "-o", str(c), "-m", str(model), "--no-consistency")
    assert r.exit_code == 0, r.output
    assert "data consistency off; worst measured" in r.output
    (only,) = _outputs(c)
    assert only.relative_to(c) != rel[0]
    assert "data consistency not applied" in pydicom.dcmread(only).DerivationDescription


@pytest.mark.slow
def test_single_file_input_and_x4(tmp_path: Path) -> None:
    card = write_test_model(tmp_path / "m4", "test-x4", scale=4)
    out = tmp_path / "out"
    r = _run("enhance", str(_src("MR_small.dcm")), "-o", str(out), "-m", str(card))
    assert r.exit_code == 0, r.output
    (f,) = _outputs(out)
    ds = pydicom.dcmread(f)
    assert ds.pixel_array.shape == (256, 256)
    assert ds.SeriesDescription.endswith("[AI SR x4]")


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "no-such-model"],
        ["--backend", "nonsense"],
        ["--threads", "-1"],
    ],
)
def test_usage_errors_exit_2(model: Path, inputs: Path, tmp_path: Path, args) -> None:
    r = _run("enhance", str(inputs), "--out", str(tmp_path / "o"), *args)
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "o").exists() or not _outputs(tmp_path / "o")


def test_missing_input_exit_2(model: Path, tmp_path: Path) -> None:
    r = _run("enhance", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "-m", str(model))
    assert r.exit_code == 2


def test_unavailable_backend_exit_2(model: Path, inputs: Path, tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    r = _run("enhance", str(inputs), "-o", str(tmp_path / "o"), "-m", str(model), "-b", "tensorrt")
    assert r.exit_code == 2, r.output


def test_models_lists_cards(model: Path) -> None:
    r = _run("models", "--model-dir", str(model.parent))
    assert r.exit_code == 0, r.output
    assert "test-x2" in r.output and "0.0-test" in r.output and str(model) in r.output


def test_non_image_dicom_is_skipped_not_failed(model: Path, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    ds = pydicom.dcmread(_src("CT_small.dcm"))
    del ds.PixelData  # e.g. an SR or a presentation state in a PACS export
    ds.save_as(d / "nopixels.dcm", enforce_file_format=True)
    r = _run("enhance", str(d), "-o", str(tmp_path / "o"), "-m", str(model))
    assert r.exit_code == 0, r.output
    assert "without pixel data skipped" in r.output


def test_bare_dataset_without_file_meta_is_read(model: Path, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    ds = pydicom.dcmread(_src("CT_small.dcm"))
    ds.preamble = None
    ds.file_meta = FileMetaDataset()
    pydicom.dcmwrite(d / "IM0001", ds, implicit_vr=True, little_endian=True)
    (d / "random.bin").write_bytes(bytes(range(256)) * 4)
    r = _run("enhance", str(d), "-o", str(tmp_path / "o"), "-m", str(model))
    assert r.exit_code == 0, r.output
    assert "1 file(s) written" in r.output and "1 non-DICOM file(s) skipped" in r.output
    (f,) = _outputs(tmp_path / "o")
    assert pydicom.dcmread(f).pixel_array.shape == (256, 256)


def _bundled() -> list:
    from sr_engine.registry import bundled_model_dir, list_models

    return [c for c, p in list_models() if p.parent == bundled_model_dir()]


def test_bundled_model_by_modality(tmp_path: Path) -> None:
    cards = _bundled()
    if not cards:
        pytest.skip("no bundled models in sr_engine/models yet")
    d = tmp_path / "in"
    d.mkdir()
    _crop_to(_src("MR_small.dcm"), d / "mr.dcm", 32, 32)  # keep a real network fast
    # ONNX Runtime: `auto` would first time every CPU path on the bundled model
    r = _run("enhance", str(d), "-o", str(tmp_path / "o"), "--threads", "1", "-b", "onnxruntime")
    assert r.exit_code == 0, r.output
    (f,) = _outputs(tmp_path / "o")
    ds: Dataset = pydicom.dcmread(f)
    assert ds.pixel_array.shape == (64, 64)
    eq = ds.ContributingEquipmentSequence[-1]
    assert eq.ManufacturerModelName in {c.name for c in cards}


def test_root_command_lists_batch_commands() -> None:
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "dicom_node.cli.main", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin", "TERM": "dumb"},
        cwd=Path(__file__).resolve().parents[1],
    )
    assert run.returncode == 0, run.stderr
    assert "enhance" in run.stdout and "models" in run.stdout


def test_config_derive_settings_apply(model: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "srnode.toml"
    cfg.write_text(
        '[derive]\ndescription_suffix = " SUPERRES"\nseries_number_offset = 7\n'
        'manufacturer = "Hospital IT"\n'
    )
    out = tmp_path / "o"
    r = _run("enhance", str(_src("CT_small.dcm")), "-o", str(out), "-m", str(model), "-c", str(cfg))
    assert r.exit_code == 0, r.output
    (f,) = _outputs(out)
    ds = pydicom.dcmread(f)
    src = pydicom.dcmread(_src("CT_small.dcm"))
    assert ds.SeriesDescription.endswith("SUPERRES")
    assert ds.SeriesNumber == int(src.SeriesNumber) + 7
    assert ds.ContributingEquipmentSequence[-1].Manufacturer == "Hospital IT"


def test_bad_config_exit_2(model: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[derive]\nseries_number_offset = -5\n")
    r = _run("enhance", str(_src("CT_small.dcm")), "-o", str(tmp_path / "o"), "-c", str(cfg))
    assert r.exit_code == 2


def test_serve_help_imports_no_training_module() -> None:
    import sys

    code = (
        "import sys\n"
        "from dicom_node.cli.main import main\n"
        "sys.argv = ['srnode', 'serve', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'training')\n"
        "assert not loaded, loaded\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Run the node" in run.stdout
