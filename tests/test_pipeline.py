"""The pipelined series (decode, inference in groups of slices, derive/encode overlapping)
gives exactly what enhancing each instance alone gives: same files, same UIDs, same pixels;
an instance that cannot be processed in the middle of a series leaves the rest alone.
Real engine (ONNX Runtime) on the small ONNX graph of tests/onnx_models.py, real DICOM
slices (pydicom's test files), real database."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from dicom_node.config import DeriveSettings, Settings
from dicom_node.derive.pipeline import enhance_stream
from dicom_node.derive.pixels import read_pixels
from dicom_node.derive.process import enhance_instance
from dicom_node.jobs.engines import EngineCache
from dicom_node.jobs.stability import tick
from dicom_node.jobs.worker import Worker
from dicom_node.receive.series_header import SeriesHeader
from dicom_node.store import database as dbm
from dicom_node.store.database import Database
from dicom_node.store.states import JobState
from sr_engine.engine import Engine
from sr_engine.errors import UnsupportedInput
from tests.node_helpers import STORESCP, free_port, received, start_storescp
from tests.onnx_models import write_test_model


def _src(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"test file {name} not available (pydicom-data missing?)")
    return Path(path)


def _series(directory: Path, n: int, bad_at: tuple[int, ...] = ()) -> list[Path]:
    """``n`` CT slices of one series from the real CT_small slice (each shifted and
    flipped differently, fresh SOP UIDs); at the positions ``bad_at`` an image too small to
    enhance (8 x 8 px), which the engine refuses."""
    directory.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for i in range(n):
        ds = pydicom.dcmread(_src("CT_small.dcm"))
        arr = read_pixels(ds)
        arr = np.roll(arr, 7 * i, axis=i % 2)[:, :: (-1) ** i]
        if i in bad_at:
            arr = arr[:8, :8]
        ds.Rows, ds.Columns = arr.shape
        ds.PixelData = np.ascontiguousarray(arr).tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * i]
        p = directory / f"{i:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> Path:
    # tiles of 32 px, 4 per call: one 128² slice is several backend calls, a group shares them
    return write_test_model(
        tmp_path_factory.mktemp("models"),
        "test-x2",
        modalities=["CT", "MR"],
        tile={"size": 32, "overlap": 4, "batch": 4},
    )


@pytest.fixture(scope="module")
def engine(card: Path):
    e = Engine.load(card, backend="onnxruntime", threads=1)
    yield e
    e.close()


def _one_by_one(paths: list[Path], engine, settings: DeriveSettings) -> dict[str, pydicom.Dataset]:
    out = {}
    for p in paths:
        try:
            ds, _ = enhance_instance(pydicom.dcmread(p), engine, settings)
        except UnsupportedInput:
            continue
        out[str(ds.SOPInstanceUID)] = ds
    return out


def _same(a: pydicom.Dataset, b: pydicom.Dataset) -> None:
    assert a.SOPInstanceUID == b.SOPInstanceUID
    assert a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID
    assert np.array_equal(read_pixels(a), read_pixels(b))
    for kw in ("Rows", "Columns", "PixelSpacing", "DerivationDescription", "ImageComments"):
        assert a.get(kw) == b.get(kw), kw


@pytest.mark.parametrize("group", [1, 3, 8])
def test_stream_equals_one_by_one_and_keeps_order(engine, tmp_path: Path, group: int) -> None:
    paths = _series(tmp_path / "ct", 7, bad_at=(3,))
    paths += [_src("emri_small_RLE.dcm"), _src("MR_small_jp2klossless.dcm"), _src("SC_rgb.dcm")]
    settings = DeriveSettings()
    outcomes = list(
        enhance_stream(paths, pydicom.dcmread, lambda ds: engine, settings, group=group)
    )
    assert [o.source for o in outcomes] == paths
    bad = [o.source.name for o in outcomes if o.error is not None]
    assert bad == ["003.dcm", "SC_rgb.dcm"]
    assert all(isinstance(o.error, UnsupportedInput) for o in outcomes if o.error is not None)
    reference = _one_by_one(paths, engine, settings)
    got = {str(o.out.SOPInstanceUID): o for o in outcomes if o.error is None}
    assert set(got) == set(reference)
    for uid, o in got.items():
        _same(pydicom.dcmread(pydicom.filebase.DicomBytesIO(o.data)), reference[uid])
        assert o.result.seconds >= 0


def test_a_stage_error_reaches_the_caller_and_stops_the_stages(engine, tmp_path: Path) -> None:
    paths = _series(tmp_path / "ct", 4)

    def engine_for(ds):
        raise RuntimeError("no engine")

    outcomes = list(enhance_stream(paths, pydicom.dcmread, engine_for))
    assert [type(o.error) for o in outcomes] == [RuntimeError] * 4

    stream = enhance_stream(paths, pydicom.dcmread, lambda ds: engine)
    first = next(stream)
    stream.close()  # the caller stops early: no thread is left behind
    assert first.error is None and first.data


# -- the worker ------------------------------------------------------------------------


@pytest.fixture
def database(tmp_path):
    d = Database(dbm.default_url(tmp_path))
    d.create_or_migrate()
    yield d
    d.close()


def _queued_job(database: Database, settings: Settings, paths: list[Path]) -> str:
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    sid = database.ensure_series(
        study_uid=str(first.StudyInstanceUID),
        series_uid=str(first.SeriesInstanceUID),
        header=SeriesHeader(modality="CT", calling_ae="PACS", derived_by_srnode=False),
        via="dimse",
        now=time.time() - 60,
    )
    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        database.record_instance(
            series_id=sid,
            sop_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
            instance_number=i + 1,
            path=str(p),
            size=p.stat().st_size,
            calling_ae="PACS",
            via="dimse",
            now=time.time() - 60,
        )
    assert tick(database, settings)
    return str(first.SeriesInstanceUID)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which(STORESCP), reason="dcmtk storescp missing")
def test_worker_delivers_what_one_by_one_gives_around_an_unsupported_slice(
    database, card: Path, engine, tmp_path: Path
) -> None:
    paths = _series(tmp_path / "in", 12, bad_at=(5,))
    port = free_port()
    settings = Settings.model_validate(
        {
            "node": {"data_dir": str(tmp_path / "data")},
            "routes": [{"name": "ct", "modality": ["CT"], "model": str(card)}],
            "destinations": [{"name": "D", "ae_title": "DEST", "host": "127.0.0.1", "port": port}],
        }
    )
    _queued_job(database, settings, paths)
    reference = _one_by_one(paths, engine, settings.derive)  # (sources go after export)
    engines = EngineCache(backend="onnxruntime", threads=1)
    w = Worker(database, settings, "w1", engines=engines)
    scp = start_storescp(tmp_path / "out", port, tmp_path / "storescp.log")
    try:
        assert w.run_once()
    finally:
        scp.close()
        engines.close()
    (job,) = database.recent_jobs(5)
    assert job["state"] == JobState.DONE, job
    assert job["derived_count"] == 11
    delivered = received(tmp_path / "out")
    assert set(delivered) == set(reference)
    for uid, ds in delivered.items():
        _same(ds, reference[uid])


@pytest.mark.slow
def test_enhance_command_output_equals_one_by_one(card: Path, engine, tmp_path: Path) -> None:
    import typer

    from dicom_node.cli import batch as cli_batch

    paths = _series(tmp_path / "in", 9, bad_at=(4,))
    app = typer.Typer(add_completion=False)
    cli_batch.register(app)
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app,
        ["enhance", str(tmp_path / "in"), "--out", str(out), "--model", str(card),
         "--backend", "onnxruntime", "--threads", "1", "--no-progress"],
        catch_exceptions=False,
    )  # fmt: skip
    assert r.exit_code == 1, r.output  # the 8 x 8 image failed, the rest were written
    assert "004.dcm" in r.output
    files = sorted(out.rglob("*.dcm"))
    reference = _one_by_one(paths, engine, DeriveSettings())
    assert {p.stem for p in files} == set(reference)
    for p in files:
        _same(pydicom.dcmread(p), reference[p.stem])
