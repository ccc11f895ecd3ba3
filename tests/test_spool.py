"""The durable spool and the shared ingest path (no network)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicom_node.receive.ingest import Ingestor
from dicom_node.receive.store_status import (
    BAD_PIXEL_DATA,
    CANNOT_UNDERSTAND,
    MISSING_UID,
    OUT_OF_RESOURCES,
    SUCCESS,
)
from dicom_node.spool import Spool, atomic_write
from dicom_node.store import database as dbm
from dicom_node.store.database import Database
from tests.node_helpers import write_series


@pytest.fixture
def node(tmp_path):
    d = Database(dbm.default_url(tmp_path))
    d.create_or_migrate()
    sp = Spool(tmp_path / "spool")
    yield Ingestor(d, sp), d, sp
    d.close()


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = tmp_path / "a" / "b" / "x.dcm"
    assert atomic_write(p, [b"abc", b"def"]) == 6
    assert p.read_bytes() == b"abcdef"
    atomic_write(p, b"new")
    assert p.read_bytes() == b"new"
    assert [f.name for f in p.parent.iterdir()] == ["x.dcm"]


def test_spool_refuses_path_like_uids(tmp_path):
    sp = Spool(tmp_path)
    with pytest.raises(ValueError):
        sp.path_for("1.2", "../../etc", "1.3")


def test_store_bytes_and_dataset_idempotent(node, tmp_path):
    ing, d, sp = node
    study, series, files = write_series(tmp_path / "in", count=2)
    st = ing.store(files[0].read_bytes(), "PACS", via="stow")
    assert st == SUCCESS and st.ok
    assert ing.store(files[0].read_bytes(), "PACS", via="stow") == SUCCESS  # re-sent
    assert ing.store(pydicom.dcmread(files[1]), "PACS", via="stow") == SUCCESS
    rows = d.series_instances(ing._series_ids[series])
    assert len(rows) == 2
    for _, path in rows:
        back = pydicom.dcmread(path)
        assert back.SeriesInstanceUID == series
        assert back.PixelData


def test_store_encoded_writes_the_raw_bytes(node, tmp_path):
    ing, d, sp = node
    _, series, files = write_series(tmp_path / "in", count=1)
    ds = pydicom.dcmread(files[0])
    raw = files[0].read_bytes()
    # body = the data set as it came on the wire: everything after the file meta
    meta_end = _meta_end(raw)
    st = ing.store_encoded(ds.file_meta, raw[meta_end:], "PACS")
    assert st == SUCCESS, st.reason
    ((_, path),) = d.series_instances(ing._series_ids[series])
    stored = Path(path).read_bytes()
    assert stored[_meta_end(stored) :] == raw[meta_end:]


def _meta_end(raw: bytes) -> int:
    # group length (0002,0000) UL value follows the 'DICM' magic
    import struct

    glen = struct.unpack("<I", raw[132 + 8 : 132 + 12])[0]
    return 132 + 12 + glen


def test_malformed_instances_get_error_statuses(node, tmp_path):
    ing, _, _ = node
    assert ing.store(b"not dicom at all", "PACS") >= 0xC000
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.SeriesInstanceUID
    assert ing.store(ds, "PACS") == MISSING_UID
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PixelData = ds.PixelData[:1000]
    assert ing.store(ds, "PACS") == BAD_PIXEL_DATA
    truncated = Path(get_testdata_file("MR_truncated.dcm")).read_bytes()
    st = ing.store(truncated, "PACS")
    assert 0xC000 <= st <= 0xCFFF, st
    assert st >= CANNOT_UNDERSTAND


def test_disk_failure_is_out_of_resources(node, tmp_path):
    ing, _, sp = node
    _, _, files = write_series(tmp_path / "in", count=1)
    os.chmod(sp.root, 0o500)
    try:
        if os.access(sp.root, os.W_OK):  # running as root: permissions do not stop us
            sp.root.rmdir()
            sp.root.write_text("a file where the spool folder should be")
        assert ing.store(files[0].read_bytes(), "PACS") == OUT_OF_RESOURCES
    finally:
        if sp.root.is_dir():
            os.chmod(sp.root, 0o700)


def test_a_folder_retention_removed_is_made_again(tmp_path):
    """Retention (dicom_node.jobs.retention, the one place that deletes) may remove a series
    folder the spool has written to: the next instance of that series makes it again."""
    sp = Spool(tmp_path)
    sp.write("1.2", "1.2.3", "1.2.3.4", b"x")
    shutil.rmtree(tmp_path / "1.2")
    p, _ = sp.write("1.2", "1.2.3", "1.2.3.5", b"y")
    assert p.read_bytes() == b"y" and p.parent == tmp_path / "1.2" / "1.2.3"


def test_reconcile_indexes_spool_files_without_rows(node, tmp_path):
    ing, d, sp = node
    _, series, files = write_series(tmp_path / "in", count=2)
    assert ing.store(files[0].read_bytes(), "PACS") == SUCCESS
    # a fsynced file whose row was lost (power loss with synchronous=NORMAL)
    ds = pydicom.dcmread(files[1])
    sp.write(ds.StudyInstanceUID, series, ds.SOPInstanceUID, files[1].read_bytes())
    # and a torn file that was never acknowledged
    sp.write(ds.StudyInstanceUID, series, "1.2.3.4.5", b"torn")
    assert ing.reconcile() == 1
    assert len(d.series_instances(ing._series_ids[series])) == 2
    assert not (sp.root / ds.StudyInstanceUID / series / "1.2.3.4.5.dcm").exists()
    assert ing.reconcile() == 0


def test_concurrent_writers_share_folder_flushes(tmp_path, monkeypatch):
    import threading

    from dicom_node import spool as spool_mod

    calls = []
    real = spool_mod.fsync_dir

    def counting(path):
        calls.append(path)
        real(path)

    monkeypatch.setattr(spool_mod, "fsync_dir", counting)
    sp = Spool(tmp_path)
    sp.write("1.2", "1.2.3", "1.2.3.0", b"first")  # folder exists from here on
    calls.clear()
    threads = [
        threading.Thread(target=sp.write, args=("1.2", "1.2.3", f"1.2.3.{i}", b"x" * 100000))
        for i in range(1, 17)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list((tmp_path / "1.2" / "1.2.3").glob("*.dcm"))) == 17
    assert 1 <= len(calls) <= 16  # never more flushes than writers; usually far fewer


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "rtplan.dcm",
        "JPEG2000.dcm",
        "emri_small.dcm",
        "SC_rgb.dcm",
        "US1_J2KR.dcm",
        "MR-SIEMENS-DICOM-WithOverlays.dcm",
        "liver.dcm",
    ],
)
def test_header_scanner_agrees_with_pydicom(name):
    from pydicom.uid import UID

    from dicom_node.receive.header_scan import _WANTED, scan_header

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not in this pydicom")
    raw = Path(path).read_bytes()
    meta_end = _meta_end(raw)
    ds = pydicom.dcmread(path)
    ts = UID(ds.file_meta.TransferSyntaxUID)
    if ts.is_deflated or not ts.is_little_endian:
        pytest.skip("not a transfer syntax the node accepts")
    h, pixel = scan_header(raw[meta_end:], ts.is_implicit_VR)
    for kw in _WANTED.values():
        if kw in ds:
            want = ds[kw].value
            assert str(h[kw]) == str(want).strip(), kw
        else:
            assert kw not in h
    if "PixelData" in ds:
        assert pixel is not None
        length, available = pixel
        if ts.is_encapsulated:
            assert length == 0xFFFFFFFF and available > 16
        else:
            assert length == len(ds.PixelData) <= available
    else:
        assert pixel is None


def test_store_response_encoding_matches_pynetdicom():
    """The C-STORE-RSP command set the SCP encodes itself decodes like pynetdicom's."""
    from io import BytesIO

    from pydicom.filereader import read_dataset

    from dicom_node.receive.dimse_codec import encode_store_rsp

    raw = encode_store_rsp(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", 0xC003, "pixel data cut")
    ds = read_dataset(BytesIO(raw), True, True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert ds.CommandField == 0x8001 and ds.MessageIDBeingRespondedTo == 7
    assert ds.CommandDataSetType == 0x0101 and ds.Status == 0xC003
    assert ds.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.AffectedSOPInstanceUID == "1.2.3.45"
    assert ds.ErrorComment == "pixel data cut"
    assert [e.tag for e in ds] == sorted(e.tag for e in ds)
