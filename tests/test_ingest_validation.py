"""What the receive path acknowledges: only instances it can process (no network).

Each malformed instance is offered the way a C-STORE brings it (the data set as on the
wire, with its file meta) and the way STOW-RS does (Part-10 bytes); each must get an error
status that says what is wrong, and nothing may be stored."""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicom_node.receive.header_scan import Malformed, scan_header
from dicom_node.receive.ingest import Ingestor
from dicom_node.receive.store_status import (
    BAD_IMAGE,
    BAD_PIXEL_DATA,
    CANNOT_UNDERSTAND,
    SUCCESS,
)
from dicom_node.spool import Spool
from dicom_node.store import database as dbm
from dicom_node.store.database import Database

SECRET = b"Probe^Secret"


@pytest.fixture
def node(tmp_path):
    d = Database(dbm.default_url(tmp_path))
    d.create_or_migrate()
    sp = Spool(tmp_path / "spool")
    yield Ingestor(d, sp), d, sp
    d.close()


def _part10(ds: pydicom.Dataset) -> bytes:
    import io

    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _split(raw: bytes) -> tuple[int, int]:
    """(end of the file meta, offset of the pixel data element or -1) in Part-10 bytes."""
    glen = struct.unpack("<I", raw[132 + 8 : 132 + 12])[0]
    meta_end = 132 + 12 + glen
    return meta_end, raw.find(b"\xe0\x7f\x10\x00", meta_end)


def _ct() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def private_ob_overrunning() -> bytes:
    """A private OB element declaring 0xFFFFFFF0 bytes just before the pixel data."""
    raw = _part10(_ct())
    _, at = _split(raw)
    bad = struct.pack("<HH2sHL", 0x0029, 0x1010, b"OB", 0, 0xFFFFFFF0)
    return raw[:at] + bad + raw[at:]


def ct_without_pixel_data() -> bytes:
    ds = _ct()
    del ds.PixelData
    return _part10(ds)


def zero_rows_and_columns() -> bytes:
    ds = _ct()
    ds.Rows = 0
    ds.Columns = 0
    return _part10(ds)


def patient_name_wrong_vr() -> bytes:
    """PatientName encoded as FD (12 bytes: not a whole number of doubles)."""
    raw = _part10(_ct())
    meta_end, _ = _split(raw)
    at = raw.index(b"\x10\x00\x10\x00PN", meta_end)
    (length,) = struct.unpack_from("<H", raw, at + 6)
    elem = struct.pack("<HH2sH", 0x0010, 0x0010, b"FD", len(SECRET)) + SECRET
    return raw[:at] + elem + raw[at + 8 + length :]


def broken_fragment_table() -> bytes:
    """JPEG 2000 pixel data whose second fragment declares more bytes than follow."""
    ds = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    raw = _part10(ds)
    _, at = _split(raw)
    first = at + 12  # explicit VR OB header of undefined length: 12 bytes
    (bot_len,) = struct.unpack_from("<L", raw, first + 4)
    frag = first + 8 + bot_len
    return raw[: frag + 4] + struct.pack("<L", 0x7FFFFFF0) + raw[frag + 8 :]


MALFORMED = {
    "private OB of 0xFFFFFFF0 bytes": (private_ob_overrunning, CANNOT_UNDERSTAND, "(0029,1010)"),
    "CT without Pixel Data": (ct_without_pixel_data, BAD_PIXEL_DATA, "without Pixel Data"),
    "Rows = Columns = 0": (zero_rows_and_columns, BAD_IMAGE, "0x0 pixels"),
    "PatientName with VR FD": (patient_name_wrong_vr, CANNOT_UNDERSTAND, "(0010,0010)"),
    "broken fragment table": (broken_fragment_table, None, "fragment"),
}


def _nothing_stored(d: Database, sp: Spool) -> None:
    assert d.instance_paths() == set()
    assert list(sp.root.rglob("*.dcm")) == []


@pytest.mark.parametrize("via", ["dimse", "stow"])
@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_instance_is_refused_and_nothing_is_stored(node, name, via):
    ing, d, sp = node
    make, code, words = MALFORMED[name]
    raw = make()
    if via == "dimse":
        meta = _meta(raw)
        meta_end, _ = _split(raw)
        st = ing.store_encoded(meta, raw[meta_end:], "PACS")
    else:
        st = ing.store(raw, "PACS", via="stow")
    assert 0xC000 <= st <= 0xCFFF, st
    if code is not None:
        assert st == code, st
    assert words in st.reason
    assert SECRET.decode() not in st.reason
    _nothing_stored(d, sp)


def _as_file(raw: bytes):
    import io

    return io.BytesIO(raw)


def _meta(raw: bytes) -> pydicom.dataset.FileMetaDataset:
    return pydicom.dcmread(_as_file(raw), force=True, stop_before_pixels=True).file_meta


def test_refusals_are_logged_with_the_sop_instance_uid(node, caplog):
    ing, _, _ = node
    raw = zero_rows_and_columns()
    sop = str(pydicom.dcmread(_as_file(raw), force=True).SOPInstanceUID)
    meta = _meta(raw)
    meta_end, _ = _split(raw)
    with caplog.at_level("WARNING"):
        ing.store_encoded(meta, raw[meta_end:], "PACS")
    (line,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert f"sop={sop}" in line and "0x0 pixels" in line
    assert "None" not in line


def test_the_scanner_says_malformed_for_an_overrunning_element():
    raw = private_ob_overrunning()
    meta_end, _ = _split(raw)
    with pytest.raises(Malformed, match=r"\(0029,1010\) declares 4294967280 bytes"):
        scan_header(raw[meta_end:], False)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb.dcm"])
def test_well_formed_instances_are_still_stored(node, name):
    ing, d, _ = node
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    raw = _part10(ds)
    assert ing.store(raw, "PACS", via="stow") == SUCCESS
    assert len(d.instance_paths()) == 1
    assert Path(next(iter(d.instance_paths()))).read_bytes()[-100:] == raw[-100:]
