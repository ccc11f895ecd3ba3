"""The DIMSE messages the receive fast path encodes and decodes itself: C-STORE-RSP command
sets, the elements of a C-STORE-RQ command set, and a P-DATA-TF PDU carrying a command
(PS3.7 9.3.1, PS3.8 9.3.5), all in Implicit VR Little Endian."""

from __future__ import annotations

import struct
from typing import Any


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
