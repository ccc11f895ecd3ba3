"""The outcome of storing one instance: the DIMSE status codes srnode answers with,
:class:`StoreStatus` (an ``int`` status with its reason) and :class:`Rejected` (raised by
the checks with the code and reason of a refusal)."""

from __future__ import annotations

from dicom_node.error_text import register_safe

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000  # not parseable as DICOM
MISSING_UID = 0xC001  # a required UID is missing or invalid
UID_MISMATCH = 0xC002  # SOP Instance/Class UID in the data set differ from the request
BAD_PIXEL_DATA = 0xC003  # pixel data shorter than the image attributes say
UNSUPPORTED_ENCODING = 0xC004  # transfer syntax we cannot read
BAD_IMAGE = 0xC005  # image attributes (Rows, Columns, BitsAllocated...) missing or unusable


class StoreStatus(int):
    """A DIMSE status code with the reason behind it."""

    reason: str

    def __new__(cls, code: int, reason: str = "") -> StoreStatus:
        obj = super().__new__(cls, code)
        obj.reason = reason
        return obj

    @property
    def ok(self) -> bool:
        return int(self) == SUCCESS

    def __repr__(self) -> str:
        return f"StoreStatus(0x{int(self):04X}, {self.reason!r})"


class Rejected(Exception):
    """An instance refused with ``code``; ``reason`` is srnode's own text (no values)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


register_safe(Rejected)
