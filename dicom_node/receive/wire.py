"""The DICOM wire rules of the receive path, written once: the storage SOP classes and
transfer syntaxes srnode accepts, and the encoders/decoders the hot path needs."""

from __future__ import annotations

import functools
import struct
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

STORAGE_SOP_CLASSES: dict[str, str] = {
    "CT Image Storage": "1.2.840.10008.5.1.4.1.1.2",
    "Enhanced CT Image Storage": "1.2.840.10008.5.1.4.1.1.2.1",
    "Legacy Converted Enhanced CT Image Storage": "1.2.840.10008.5.1.4.1.1.2.2",
    "MR Image Storage": "1.2.840.10008.5.1.4.1.1.4",
    "Enhanced MR Image Storage": "1.2.840.10008.5.1.4.1.1.4.1",
    "Legacy Converted Enhanced MR Image Storage": "1.2.840.10008.5.1.4.1.1.4.4",
    "Computed Radiography Image Storage": "1.2.840.10008.5.1.4.1.1.1",
    "Digital X-Ray Image Storage - For Presentation": "1.2.840.10008.5.1.4.1.1.1.1",
    "Digital X-Ray Image Storage - For Processing": "1.2.840.10008.5.1.4.1.1.1.1.1",
    "Digital Mammography X-Ray Image Storage - For Presentation": "1.2.840.10008.5.1.4.1.1.1.2",
    "Digital Mammography X-Ray Image Storage - For Processing": "1.2.840.10008.5.1.4.1.1.1.2.1",
    "X-Ray Angiographic Image Storage": "1.2.840.10008.5.1.4.1.1.12.1",
    "Enhanced XA Image Storage": "1.2.840.10008.5.1.4.1.1.12.1.1",
    "Secondary Capture Image Storage": "1.2.840.10008.5.1.4.1.1.7",
    "Multi-frame Single Bit Secondary Capture Image Storage": "1.2.840.10008.5.1.4.1.1.7.1",
    "Multi-frame Grayscale Byte Secondary Capture Image Storage": "1.2.840.10008.5.1.4.1.1.7.2",
    "Multi-frame Grayscale Word Secondary Capture Image Storage": "1.2.840.10008.5.1.4.1.1.7.3",
    "Multi-frame True Color Secondary Capture Image Storage": "1.2.840.10008.5.1.4.1.1.7.4",
}

#: every class above is an image: an instance of one needs its image pixel attributes
IMAGE_SOP_CLASSES: frozenset[str] = frozenset(STORAGE_SOP_CLASSES.values())

TRANSFER_SYNTAXES: list[UID] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]


def _ui(tag: int, value: str) -> bytes:
    v = value.encode("ascii")
    if len(v) % 2:
        v += b"\x00"
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(v)) + v


def _us(tag: int, value: int) -> bytes:
    return struct.pack("<HHLH", tag >> 16, tag & 0xFFFF, 2, value)


def encode_store_rsp(
    msg_id: int, sop_class: str, sop_instance: str, status: int, comment: str = ""
) -> bytes:
    """A C-STORE-RSP command set (PS3.7 9.3.1.2), Implicit VR Little Endian."""
    body = b"".join(
        (
            _ui(0x00000002, sop_class),
            _us(0x00000100, 0x8001),
            _us(0x00000120, msg_id),
            _us(0x00000800, 0x0101),
            _us(0x00000900, status),
        )
    )
    if comment:
        c = comment.encode("ascii", "replace")[:64]
        if len(c) % 2:
            c += b" "
        body += struct.pack("<HHL", 0x0000, 0x0902, len(c)) + c
    body += _ui(0x00001000, sop_instance)
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(body)) + body


@functools.lru_cache(maxsize=64)
def transfer_syntax(uid: str) -> UID:
    """pydicom's UID, built once per transfer syntax (its validation is ~0.1 ms a time)."""
    return UID(uid)


def expected_pixel_bytes(ds: Dataset) -> int | None:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    if bits == 1:
        return (rows * cols * spp * frames + 7) // 8
    return rows * cols * spp * frames * (bits // 8)


# ---------------------------------------------------------------- header scanner
# The receive path needs a dozen attributes; pydicom builds an element object for each of
# the ~200 in a typical CT header (~1 ms). This scanner walks the encoded elements, keeps
# the raw values it needs and skips everything else by length (sequences of undefined
# length included). Any surprise raises, and pydicom then reads the data set instead.

_WANTED = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00080060: "Modality",
    0x00180015: "BodyPartExamined",
    0x0008103E: "SeriesDescription",
    0x00081030: "StudyDescription",
    0x00200013: "InstanceNumber",
    0x00201002: "ImagesInAcquisition",
    0x00280002: "SamplesPerPixel",
    0x00280008: "NumberOfFrames",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280100: "BitsAllocated",
}
_US = {"SamplesPerPixel", "Rows", "Columns", "BitsAllocated"}
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
#: explicit VRs whose value is a whole number of fixed-size numbers (PS3.5 6.2)
_FIXED_SIZE = {
    b"AT": 4,
    b"FD": 8,
    b"FL": 4,
    b"OD": 8,
    b"OF": 4,
    b"OL": 4,
    b"OV": 8,
    b"OW": 2,
    b"SL": 4,
    b"SS": 2,
    b"SV": 8,
    b"UL": 4,
    b"US": 2,
    b"UV": 8,
}


class Malformed(ValueError):
    """The encoded data set is definitely broken (an element runs past its end, a value
    length that its VR cannot have, a broken fragment table): the instance is refused.
    Other ``ValueError`` from the scanner only mean "unusual": pydicom then decides."""


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class Header(dict):
    """Attributes by keyword, read like a pydicom Dataset (``get``, attributes)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, key, default) if isinstance(key, str) else default


WireMeta = Header  # file meta for store_encoded built without pydicom (keywords as keys)


_EXPLICIT = struct.Struct("<HH2sH").unpack_from  # group, element, VR, 2-byte length
_IMPLICIT = struct.Struct("<HHL").unpack_from  # group, element, 4-byte length
_UL = struct.Struct("<L").unpack_from


def _walk(body: Any, pos: int, end: int, implicit: bool, stop: int, out: dict | None) -> int:
    """Walk elements from ``pos``; return the position after the ``stop`` delimiter (or of
    the pixel data element header at top level, ``stop == 0``)."""
    while pos + 8 <= end:
        if implicit:
            group, elem, length = _IMPLICIT(body, pos)
            start, vr = pos + 8, None
        else:
            group, elem, vr, length = _EXPLICIT(body, pos)
            start = pos + 8
        tag = (group << 16) | elem
        if group == 0xFFFE:  # item / delimiters: tag + 4-byte length, no VR
            if tag == stop:
                return pos + 8
            raise ValueError(f"unexpected delimiter {tag:08X}")
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise Malformed(f"element {_tag(tag)} header cut short")
            (length,) = _UL(body, pos + 8)
            start = pos + 12
        if stop == 0 and tag == 0x7FE00010:
            return pos
        if length == 0xFFFFFFFF:
            pos = _walk_sequence(body, start, end, implicit or vr == b"UN")
            continue
        pos = start + length
        if pos > end:
            raise Malformed(
                f"element {_tag(tag)} declares {length} bytes, only {max(end - start, 0)} follow"
            )
        if vr in _FIXED_SIZE and length % _FIXED_SIZE[vr]:
            raise Malformed(
                f"element {_tag(tag)} has VR {vr.decode()} and {length} bytes,"
                f" not a multiple of {_FIXED_SIZE[vr]}"
            )
        if out is not None and tag in _WANTED:
            out[_WANTED[tag]] = bytes(body[start:pos])
    if pos > end or stop != 0:
        raise Malformed("data set ends inside an element")
    return -1


def _walk_sequence(body: Any, pos: int, end: int, implicit: bool) -> int:
    unpack = struct.unpack_from
    while pos + 8 <= end:
        (tag,) = unpack("<L", body, pos)
        tag = ((tag & 0xFFFF) << 16) | (tag >> 16)
        (length,) = unpack("<L", body, pos + 4)
        if tag == _SEQ_END:
            return pos + 8
        if tag != _ITEM:
            raise ValueError(f"expected an item, found {tag:08X}")
        if length == 0xFFFFFFFF:
            pos = _walk(body, pos + 8, end, implicit, _ITEM_END, None)
        elif pos + 8 + length > end:
            raise Malformed(f"sequence item declares {length} bytes, only {end - pos - 8} follow")
        else:  # its content is skipped: the item itself must fit
            pos += 8 + length
    raise Malformed("sequence runs past the end of the data set")


def scan_header(body: Any, implicit: bool) -> tuple[Header, tuple[int, int] | None]:
    """The attributes the receive path reads, and the pixel data header (see
    :func:`pixel_element_header`), from an encoded little-endian data set."""
    raw: dict[str, bytes] = {}
    at = _walk(body, 0, len(body), implicit, 0, raw)
    h = Header()
    for name, value in raw.items():
        if name in _US:
            if len(value) < 2:
                raise ValueError(f"{name} too short")
            h[name] = int.from_bytes(value[:2], "little")
        else:
            h[name] = value.decode("latin-1").rstrip("\x00 ").strip()
    pixel = check_pixel_data(body, at, implicit) if at >= 0 else None
    return h, pixel


def check_pixel_data(body: Any, pos: int, implicit: bool) -> tuple[int, int] | None:
    """:func:`pixel_element_header` of the pixel data element at ``pos``, after checking
    the structure from there to the end: the fragment table of encapsulated pixel data
    (PS3.5 A.4: a Basic Offset Table item, at least one fragment, a sequence delimiter,
    each item inside the data set) and any element after the pixel data. Raises
    :class:`Malformed`. A native value longer than the data set is left to the caller
    (reported as truncated pixel data)."""
    found = pixel_element_header(body, pos, implicit)
    if found is None:
        return None
    length, available = found
    n = len(body)
    start = n - available
    if length != 0xFFFFFFFF:
        if start + length <= n:
            _walk(body, start + length, n, implicit, 0, None)
        return found
    at, items = start, 0
    while True:
        if at + 8 > n:
            raise Malformed("encapsulated pixel data ends without a sequence delimiter")
        group, elem, item_len = struct.unpack_from("<HHL", body, at)
        tag = (group << 16) | elem
        if tag == _SEQ_END:
            break
        if tag != _ITEM:
            raise Malformed(f"encapsulated pixel data: {_tag(tag)} where an item belongs")
        if item_len == 0xFFFFFFFF or at + 8 + item_len > n:
            raise Malformed(
                f"encapsulated pixel data: fragment item {items} declares {item_len} bytes,"
                f" only {n - at - 8} follow"
            )
        if items == 0 and item_len % 4:
            raise Malformed("encapsulated pixel data: offset table length not a multiple of 4")
        at += 8 + item_len
        items += 1
    if items < 2:
        raise Malformed("encapsulated pixel data without a fragment")
    _walk(body, at + 8, n, implicit, 0, None)
    return found


def at_pixel_data(tag: Any, vr: Any, length: int) -> bool:
    return (tag >> 16) >= 0x7FE0  # int shift: no Python-level Tag comparison


def past_image_group(tag: Any, vr: Any, length: int) -> bool:
    # every attribute the node reads is in groups 0008-0028
    return (tag >> 16) > 0x0028


def pixel_element_header(body: Any, pos: int, implicit: bool) -> tuple[int, int] | None:
    """(declared value length, bytes available after the element header) of the pixel
    data element at ``pos``, or None when the data set has none."""
    n = len(body)
    if pos + 8 > n:
        return None
    group, elem = struct.unpack_from("<HH", body, pos)
    if (group, elem) != (0x7FE0, 0x0010):
        return None
    if implicit:
        (length,) = struct.unpack_from("<L", body, pos + 4)
        start = pos + 8
    else:
        if pos + 12 > n:
            return (0xFFFFFFFF, 0) if n - pos >= 8 else None
        (length,) = struct.unpack_from("<L", body, pos + 8)
        start = pos + 12
    return length, n - start


def _meta_element(tag: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    if vr in (b"UI",) and len(value) % 2:
        value += b"\x00"
    elif len(value) % 2:
        value += b" "
    if vr == b"OB":
        return struct.pack("<HH2sHL", tag[0], tag[1], vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag[0], tag[1], vr, len(value)) + value


def encode_file_meta(meta: FileMetaDataset) -> bytes:
    """Preamble, 'DICM' and the File Meta Information group (PS3.10 7.1), encoded directly
    (pydicom's writer costs ~0.3 ms per instance on the receive path)."""
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

    impl_uid = str(meta.get("ImplementationClassUID", "") or PYNETDICOM_IMPLEMENTATION_UID)
    impl_ver = str(meta.get("ImplementationVersionName", "") or PYNETDICOM_IMPLEMENTATION_VERSION)
    parts = [
        _meta_element((0x0002, 0x0001), b"OB", b"\x00\x01"),
        _meta_element((0x0002, 0x0002), b"UI", str(meta.MediaStorageSOPClassUID).encode()),
        _meta_element((0x0002, 0x0003), b"UI", str(meta.MediaStorageSOPInstanceUID).encode()),
        _meta_element((0x0002, 0x0010), b"UI", str(meta.TransferSyntaxUID).encode()),
        _meta_element((0x0002, 0x0012), b"UI", impl_uid.encode()),
        _meta_element((0x0002, 0x0013), b"SH", impl_ver.encode()[:16]),
    ]
    src = str(meta.get("SourceApplicationEntityTitle", "") or "")
    if src:
        parts.append(_meta_element((0x0002, 0x0016), b"AE", src.encode()[:16]))
    group = b"".join(parts)
    length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(group))
    return b"\x00" * 128 + b"DICM" + length + group


# ---------------------------------------------------------------- DIMSE messages
_PDATA = 0x04
# what the command set of a C-STORE request gives the store handler
_UI_TAGS = {0x00000002: "AffectedSOPClassUID", 0x00001000: "AffectedSOPInstanceUID"}
_US_TAGS = {
    0x00000100: "CommandField",
    0x00000110: "MessageID",
    0x00000700: "Priority",
    0x00000800: "CommandDataSetType",
}


def parse_command(raw: bytes | bytearray) -> dict[str, Any]:
    """The elements of an Implicit VR Little Endian command set that a C-STORE needs."""
    out: dict[str, Any] = {}
    pos, end = 0, len(raw)
    unpack = struct.unpack_from
    while pos + 8 <= end:
        tag, length = unpack("<LL", raw, pos)
        tag = ((tag & 0xFFFF) << 16) | (tag >> 16)  # stored group, element
        start = pos + 8
        pos = start + length
        if pos > end:
            raise ValueError("command set ends inside an element")
        if tag in _US_TAGS:
            if length != 2:
                raise ValueError(f"command element {tag:08X} has length {length}")
            out[_US_TAGS[tag]] = unpack("<H", raw, start)[0]
        elif tag in _UI_TAGS:
            out[_UI_TAGS[tag]] = bytes(raw[start:pos]).decode("ascii").rstrip("\x00 ")
    if pos != end:
        raise ValueError("command set has trailing bytes")
    return out


def encode_pdata(context_id: int, command: bytes) -> bytes:
    """One P-DATA-TF PDU carrying a whole command set as its one, last fragment."""
    n = len(command)
    return struct.pack(">BBLLBB", _PDATA, 0, 6 + n, 2 + n, context_id, 0x03) + command
