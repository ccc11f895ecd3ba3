"""The header scanner of the receive path: the attributes the node needs from an encoded
data set, and where its pixel data element starts, without building pydicom elements.

The receive path needs a dozen attributes; pydicom builds an element object for each of
the ~200 in a typical CT header (~1 ms). :func:`scan_header` walks the encoded elements,
keeps the raw values it needs and skips everything else by length (sequences of undefined
length included). A definitely broken data set raises :class:`Malformed` (refused); any
other surprise raises ``ValueError``, and pydicom then reads the data set instead
(:func:`past_image_group` and :func:`at_pixel_data` are its ``stop_when``)."""

from __future__ import annotations

import struct
from typing import Any

#: what an instance of a known series needs (its identity and image attributes); the
#: first instance of a series is read by pydicom, its header once (receive.series_header)
_WANTED = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00200013: "InstanceNumber",
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
