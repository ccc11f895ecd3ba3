"""Turning what a caller hands to :class:`~dicom_node.receive.ingest.Ingestor` (a pydicom
Dataset or Part-10 bytes) into the file meta and bytes that are written to the spool."""

from __future__ import annotations

import io
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.compat import read_file_meta
from dicom_node.error_text import describe
from dicom_node.receive.store_status import CANNOT_UNDERSTAND, Rejected
from dicom_node.receive.wire import transfer_syntax


def split_part10(data: Any) -> tuple[FileMetaDataset, memoryview] | None:
    """(file meta, data set bytes) of a Part-10 file in a little-endian, not deflated
    transfer syntax; None for anything else (pydicom reads it whole instead)."""
    raw = memoryview(data)
    if len(raw) < 132 or bytes(raw[128:132]) != b"DICM":
        return None
    fp = io.BytesIO(raw)
    fp.seek(132)
    try:
        meta = read_file_meta(fp)
        ts = transfer_syntax(str(meta.TransferSyntaxUID))
        if ts.is_deflated or not ts.is_little_endian:
            return None
        if not (meta.get("MediaStorageSOPClassUID") and meta.get("MediaStorageSOPInstanceUID")):
            return None
    except Exception:
        return None
    return meta, raw[fp.tell() :]


def from_input(data: Any) -> tuple[FileMetaDataset, bytes, Any, Dataset]:
    """(file meta, Part-10 header, body, data set) of a Dataset or of bytes pydicom reads
    whole; :class:`Rejected` when it cannot be read or encoded."""
    if isinstance(data, Dataset):
        ds = data
        meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        if "TransferSyntaxUID" not in meta:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
        for k_meta, k_ds in (
            ("MediaStorageSOPClassUID", "SOPClassUID"),
            ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
        ):
            if k_meta not in meta and k_ds in ds:
                setattr(meta, k_meta, ds[k_ds].value)
        ds.file_meta = meta
        buf = io.BytesIO()
        try:
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        except Exception as e:
            raise Rejected(CANNOT_UNDERSTAND, f"cannot encode data set: {describe(e)}") from None
        return meta, b"", buf.getvalue(), ds
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        try:
            ds = pydicom.dcmread(io.BytesIO(raw), force=True)
            _ = ds.get("SOPInstanceUID")  # force parsing of the header elements
        except Exception as e:
            raise Rejected(CANNOT_UNDERSTAND, f"not a DICOM file: {describe(e)}") from None
        meta = ds.file_meta
        if raw[128:132] == b"DICM" and "TransferSyntaxUID" in meta:
            return meta, b"", raw, ds
        return from_input(ds)  # no Part-10 header: write one
    raise Rejected(CANNOT_UNDERSTAND, f"cannot store a {type(data).__name__}")
