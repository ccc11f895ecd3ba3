"""Compressed pixel data decoded and encoded in a worker process
(:mod:`dicom_node.derive.codec_pool`): the same arrays, files and errors as in the
caller's thread, no process for an uncompressed series, and none left when the series is
done. Real codecs, real DICOM files (pydicom's test files), the small ONNX test graph."""

from __future__ import annotations

import multiprocessing
import os
import types
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless, generate_uid

from dicom_node.derive.codec_pool import CodecPool
from dicom_node.derive.encoding import encode
from dicom_node.derive.pipeline import enhance_stream
from dicom_node.derive.pixels import read_pixels
from sr_engine.engine import Engine
from sr_engine.errors import UnsupportedInput
from tests.onnx_models import write_test_model

pytestmark = pytest.mark.slow  # each pool starts a process (about a second)

COMPRESSED = (
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "emri_small_RLE.dcm",  # RLE, 10 frames
    "JPEG2000.dcm",  # JPEG 2000 (lossy)
    "J2K_pixelrep_mismatch.dcm",  # signedness of the codestream and the header differ
)
IN_THREAD = types.SimpleNamespace(read_pixels=read_pixels, encode=encode)


def _src(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"test file {name} not available (pydicom-data missing?)")
    return Path(path)


def _children() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.pid != os.getpid()]


def _broken_j2k() -> pydicom.Dataset:
    """A JPEG 2000 instance whose codestream ends after a third of its bytes."""
    ds = pydicom.dcmread(_src("MR_small_jp2klossless.dcm"))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 3]])
    return ds


def _j2k_series(directory: Path, n: int) -> list[Path]:
    """``n`` JPEG 2000 lossless CT slices of one series (CT_small, shifted, fresh UIDs)."""
    directory.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    paths = []
    for i in range(n):
        ds = pydicom.dcmread(_src("CT_small.dcm"))
        ds.PixelData = np.roll(read_pixels(ds), 5 * i, axis=1).tobytes()
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
        paths.append(directory / f"{i:03d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    card = write_test_model(tmp_path_factory.mktemp("models"), "test-x2", modalities=["CT"])
    e = Engine.load(card, backend="onnxruntime", threads=1)
    yield e
    e.close()


@pytest.fixture(scope="module")
def codecs():
    with CodecPool() as pool:
        assert pool.start(wait=True)
        yield pool
    assert not _children()


@pytest.mark.parametrize("name", COMPRESSED)
def test_the_process_decodes_exactly_what_read_pixels_gives(codecs, name: str) -> None:
    ds = pydicom.dcmread(_src(name))
    got, want = codecs.read_pixels(ds), read_pixels(ds)
    assert got.dtype == want.dtype
    assert np.array_equal(got, want)


def test_a_broken_codestream_gives_the_same_error_through_the_process(codecs) -> None:
    with pytest.raises(UnsupportedInput) as here:
        read_pixels(_broken_j2k())
    with pytest.raises(UnsupportedInput) as there:
        codecs.read_pixels(_broken_j2k())
    assert str(there.value) == str(here.value)
    assert str(here.value).startswith("pixel data could not be decoded (JPEG 2000")


def test_the_process_encodes_what_encode_gives(codecs) -> None:
    ds = pydicom.dcmread(_src("CT_small.dcm"))
    there = codecs.encode(ds, JPEG2000Lossless)
    here = encode(pydicom.dcmread(_src("CT_small.dcm")), JPEG2000Lossless)
    assert ds.file_meta.TransferSyntaxUID != JPEG2000Lossless  # the caller's copy is untouched
    assert there.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert there.PixelData == here.PixelData
    assert there.SOPInstanceUID == ds.SOPInstanceUID


def test_a_dead_process_fails_its_work_only_and_a_new_one_takes_over() -> None:
    others = {p.pid for p in _children()}  # the module's pool
    with CodecPool() as pool:
        pool.start(wait=True)
        first = {p.pid for p in _children()} - others
        with pytest.raises(BrokenProcessPool):
            pool._run(os._exit, 3)  # what a decoder crashing on an instance does (twice)
        assert pool.start(wait=True)
        ds = pydicom.dcmread(_src("MR_small_jp2klossless.dcm"))
        assert np.array_equal(pool.read_pixels(ds), read_pixels(ds))
        now = {p.pid for p in _children()} - others
        assert len(first) == len(now) == 1 and now != first
    assert {p.pid for p in _children()} == others


def test_a_compressed_series_through_the_process_equals_the_caller_thread(
    engine, codecs, tmp_path: Path
) -> None:
    paths = _j2k_series(tmp_path / "ct", 5)
    paths.insert(2, tmp_path / "broken.dcm")
    _broken_j2k().save_as(paths[2], enforce_file_format=True)
    want = list(enhance_stream(paths, pydicom.dcmread, lambda ds: engine, codecs=IN_THREAD))
    got = list(enhance_stream(paths, pydicom.dcmread, lambda ds: engine, codecs=codecs))
    assert [o.source for o in got] == paths
    for g, w in zip(got, want, strict=True):
        assert type(g.error) is type(w.error) and str(g.error) == str(w.error)
        if w.error is None:
            a = pydicom.dcmread(pydicom.filebase.DicomBytesIO(g.data))
            b = pydicom.dcmread(pydicom.filebase.DicomBytesIO(w.data))
            assert a.file_meta.TransferSyntaxUID == JPEG2000Lossless
            assert a.SOPInstanceUID == b.SOPInstanceUID
            assert a.PixelData == b.PixelData
    assert isinstance(got[2].error, UnsupportedInput)


def test_a_stream_ends_its_own_process_and_an_uncompressed_one_starts_none(
    engine, tmp_path: Path
) -> None:
    paths = _j2k_series(tmp_path / "j2k", 3)
    others = {p.pid for p in _children()}  # the module's pool
    stream = enhance_stream(paths, pydicom.dcmread, lambda ds: engine)
    assert next(stream).error is None
    stream.close()  # the caller stops early: the stream's pool goes with it
    assert list(enhance_stream(paths, pydicom.dcmread, lambda ds: engine))[-1].error is None
    assert {p.pid for p in _children()} == others

    plain = []
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.decompress(generate_instance_uid=False)
        plain.append(p.with_suffix(".plain.dcm"))
        ds.save_as(plain[-1], enforce_file_format=True)
    pool = CodecPool()
    outcomes = list(enhance_stream(plain, pydicom.dcmread, lambda ds: engine, codecs=pool))
    assert all(o.error is None for o in outcomes)
    assert not pool.started and {p.pid for p in _children()} == others
