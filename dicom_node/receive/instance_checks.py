"""The checks an instance passes before it is stored: UIDs valid and matching the request,
image attributes usable, pixel data present, complete and well formed. Each failure raises
:class:`~dicom_node.receive.store_status.Rejected` with a reason that names the tag, never
a value."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset

from dicom_node.error_text import describe
from dicom_node.receive.header_scan import Malformed, at_pixel_data, check_pixel_data
from dicom_node.receive.series_header import int_or_none
from dicom_node.receive.store_status import (
    BAD_IMAGE,
    BAD_PIXEL_DATA,
    CANNOT_UNDERSTAND,
    MISSING_UID,
    UID_MISMATCH,
    Rejected,
)
from dicom_node.receive.wire import IMAGE_SOP_CLASSES, expected_pixel_bytes, transfer_syntax
from dicom_node.spool import valid_uid

_PIXEL_TAG = 0x7FE00010


def check_instance(
    meta: FileMetaDataset,
    ds: Dataset,
    pixel: tuple[int, int] | None = None,
    encoded: bool = False,
) -> dict[str, Any]:
    """The identity of a storable instance (its UIDs, SOP class and InstanceNumber), or
    :class:`Rejected` saying what is wrong. (What the series' header says is read once,
    for a new series: :mod:`dicom_node.receive.series_header`.)
    ``encoded``: ``ds`` is the header only and ``pixel`` the pixel data element found
    on the wire (None: there is none)."""
    try:
        facts = {
            "sop_class": str(ds.get("SOPClassUID", "") or ""),
            "sop_uid": str(ds.get("SOPInstanceUID", "") or ""),
            "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
            "series_uid": str(ds.get("SeriesInstanceUID", "") or ""),
        }
    except Exception as e:
        raise Rejected(CANNOT_UNDERSTAND, f"cannot read the UIDs: {describe(e)}") from None
    for name, key in (
        ("SOPClassUID", "sop_class"),
        ("SOPInstanceUID", "sop_uid"),
        ("StudyInstanceUID", "study_uid"),
        ("SeriesInstanceUID", "series_uid"),
    ):
        if not valid_uid(facts[key]):
            raise Rejected(MISSING_UID, f"{name} missing or invalid ({len(facts[key])} characters)")
    m_sop = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
    if m_sop and m_sop != facts["sop_uid"]:
        raise Rejected(UID_MISMATCH, "SOPInstanceUID differs from the one in the request")
    m_cls = str(meta.get("MediaStorageSOPClassUID", "") or "")
    if m_cls and m_cls != facts["sop_class"]:
        raise Rejected(UID_MISMATCH, "SOPClassUID differs from the one in the request")
    image = facts["sop_class"] in IMAGE_SOP_CLASSES
    if image:
        _check_image_attributes(ds)
    if encoded:  # the pixel data element was found (and its structure checked) on the wire
        if pixel is not None:
            _check_pixel_header(meta, ds, *pixel)
        elif image:
            raise Rejected(BAD_PIXEL_DATA, "image without Pixel Data (7FE0,0010)")
        elem = None
    else:
        try:
            elem = ds.get(_PIXEL_TAG)
        except Exception as e:
            raise Rejected(BAD_PIXEL_DATA, f"cannot read pixel data: {describe(e)}") from None
        if elem is None and image:
            raise Rejected(BAD_PIXEL_DATA, "image without Pixel Data (7FE0,0010)")
    if elem is not None:
        ts = transfer_syntax(str(meta.TransferSyntaxUID))
        length = getattr(elem, "length", None)
        value = getattr(elem, "value", None)
        if ts.is_encapsulated:
            if value is None or (isinstance(value, bytes) and len(value) < 8):
                raise Rejected(BAD_PIXEL_DATA, "encapsulated pixel data empty")
            _check_fragments(value)
        else:
            expected = expected_pixel_bytes(ds)
            got = len(value) if isinstance(value, (bytes, bytearray)) else length
            if expected is not None and got is not None and got < expected:
                raise Rejected(
                    BAD_PIXEL_DATA,
                    f"pixel data truncated ({got} bytes, image attributes need {expected})",
                )
    try:
        facts["instance_number"] = int_or_none(ds.get("InstanceNumber"))
    except Exception as e:
        raise Rejected(CANNOT_UNDERSTAND, f"cannot read InstanceNumber: {describe(e)}") from None
    return facts


def find_pixel_header(ds: Dataset, body: Any, fp: Any, implicit: bool) -> tuple[int, int] | None:
    """The pixel data element header when the header scan could not decide: pydicom
    parses on from where the header parse stopped, every element's declared length is
    checked against what it read (pydicom cuts an overlong value short silently), then
    the pixel data's own structure (:func:`check_pixel_data`)."""
    try:
        rest = read_dataset(fp, implicit, True, stop_when=at_pixel_data)
    except Exception as e:
        raise Rejected(CANNOT_UNDERSTAND, f"cannot parse data set: {describe(e)}") from None
    for part in (ds, rest):
        for tag in list(part.keys()):
            raw = part.get_item(tag)
            length = getattr(raw, "length", None)
            value = getattr(raw, "value", None)
            if (
                isinstance(length, int)
                and length != 0xFFFFFFFF
                and isinstance(value, (bytes, bytearray))
                and len(value) < length
            ):
                raise Rejected(
                    CANNOT_UNDERSTAND,
                    f"element {tag} declares {length} bytes, only {len(value)} follow",
                )
    try:
        return check_pixel_data(body, fp.tell(), implicit)
    except Malformed as e:
        raise Rejected(CANNOT_UNDERSTAND, str(e)) from None


def _check_pixel_header(meta: FileMetaDataset, ds: Dataset, length: int, available: int) -> None:
    if length == 0xFFFFFFFF:  # encapsulated: at least the offset table item and one fragment
        if available < 16:
            raise Rejected(BAD_PIXEL_DATA, "encapsulated pixel data empty or cut short")
        return
    if length > available:
        raise Rejected(
            BAD_PIXEL_DATA, f"pixel data truncated ({available} of {length} bytes present)"
        )
    expected = expected_pixel_bytes(ds)
    if expected is not None and length < expected:
        raise Rejected(
            BAD_PIXEL_DATA,
            f"pixel data truncated ({length} bytes, image attributes need {expected})",
        )


def _check_image_attributes(ds: Any) -> None:
    """Rows, Columns, BitsAllocated and SamplesPerPixel present and usable (PS3.3 C.7.6.3)."""
    values: dict[str, int] = {}
    missing: list[str] = []
    for key in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel"):
        try:
            v = ds.get(key)
            values[key] = int(v) if v not in (None, "") else -1
        except (TypeError, ValueError):
            values[key] = -1
        if values[key] < 0:
            missing.append(key)
    if missing:
        raise Rejected(BAD_IMAGE, f"image without a valid {', '.join(missing)}")
    rows, cols = values["Rows"], values["Columns"]
    if rows == 0 or cols == 0:
        raise Rejected(BAD_IMAGE, f"image is {rows}x{cols} pixels")
    bits = values["BitsAllocated"]
    if bits != 1 and (bits == 0 or bits % 8 or bits > 64):
        raise Rejected(BAD_IMAGE, f"BitsAllocated {bits} is not 1 or a multiple of 8 up to 64")
    if values["SamplesPerPixel"] not in (1, 3, 4):
        raise Rejected(BAD_IMAGE, f"SamplesPerPixel {values['SamplesPerPixel']}")


def _check_fragments(value: bytes) -> None:
    """The fragment table of encapsulated pixel data, by pydicom's own parser."""
    from pydicom.encaps import generate_fragments

    try:
        n = sum(1 for _ in generate_fragments(value))
    except Exception as e:
        raise Rejected(BAD_PIXEL_DATA, f"encapsulated pixel data: {type(e).__name__}") from None
    if n < 2:
        raise Rejected(BAD_PIXEL_DATA, "encapsulated pixel data without a fragment")


def known_facts(meta: Any, ds: Any) -> dict[str, Any]:
    """The UIDs a refusal can name (from the request, else the data set), never failing."""
    out = meta_facts(meta)
    for key, name in (
        ("sop_uid", "SOPInstanceUID"),
        ("study_uid", "StudyInstanceUID"),
        ("series_uid", "SeriesInstanceUID"),
    ):
        if not out.get(key):
            try:
                v = str(ds.get(name, "") or "")
            except Exception:
                v = ""
            out[key] = v if valid_uid(v) else None
    return out


def meta_facts(meta: FileMetaDataset) -> dict[str, Any]:
    return {"sop_uid": str(meta.get("MediaStorageSOPInstanceUID", "") or "") or None}
