"""Transfer syntaxes srnode writes and sends, and the one way to re-encode a dataset.

Lossless only: a derived image is never compressed lossily. The encoders are pydicom's,
with pylibjpeg-openjpeg (JPEG 2000), pyjpegls (JPEG-LS) and pylibjpeg-rle / pydicom's own
(RLE); Deflated is pydicom's writer. Every syntax here decodes to exactly the pixels that
went in (tests/integration/test_export_syntaxes.py checks it against dcmtk's storescp).
"""

from __future__ import annotations

import logging
import re

from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

#: the names a destination's ``transfer_syntax`` may use, and their UIDs
SYNTAX_NAMES: dict[str, UID] = {
    "explicit-vr-little-endian": ExplicitVRLittleEndian,
    "jpeg2000-lossless": JPEG2000Lossless,
    "jpegls-lossless": JPEGLSLossless,
    "rle-lossless": RLELossless,
    "deflated": DeflatedExplicitVRLittleEndian,
}

#: every syntax srnode can write (the named ones, and Implicit VR Little Endian by UID)
WRITABLE: tuple[UID, ...] = (*SYNTAX_NAMES.values(), ImplicitVRLittleEndian)

#: syntaxes without pixel compression (pynetdicom converts between the first two itself)
UNCOMPRESSED: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
)

#: pixel compression that is always lossless: a source in one of these gets a JPEG 2000
#: lossless derived series by default (PS3.5 A.4, A.4.3)
LOSSLESS_COMPRESSED = frozenset(
    {
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEG2000Lossless,
        RLELossless,
        HTJ2KLossless,
        HTJ2KLosslessRPCL,
    }
)


def parse_syntax(value: str) -> UID:
    """A ``transfer_syntax`` setting (a name from :data:`SYNTAX_NAMES` or a UID) as a UID;
    ValueError naming the choices for anything srnode cannot write."""
    v = value.strip()
    uid = SYNTAX_NAMES.get(v.lower()) or (v if _UID.match(v) else None)
    if uid not in WRITABLE:
        names = ", ".join(SYNTAX_NAMES)
        raise ValueError(f"{value!r} is not one of {names} (or their UIDs)")
    return UID(uid)


def source_syntax(ds: Dataset) -> UID | None:
    """The transfer syntax ``ds`` was read in (None for a data set without file meta)."""
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return UID(ts) if ts else None


def default_syntax(source: Dataset) -> UID:
    """The syntax of a derived instance when its destination names none: JPEG 2000
    lossless for a source that came compressed losslessly, else Explicit VR Little Endian."""
    ts = source_syntax(source)
    return JPEG2000Lossless if ts in LOSSLESS_COMPRESSED else ExplicitVRLittleEndian


def syntax_name(uid: str) -> str:
    """A short, readable name of a transfer syntax for logs and errors."""
    for name, value in SYNTAX_NAMES.items():
        if value == uid:
            return name
    return getattr(UID(uid), "name", "") or str(uid)


def encode(ds: Dataset, syntax: str) -> Dataset:
    """``ds`` (changed in place) in transfer syntax ``syntax``: compressed pixels are
    decoded first, then compressed again with a lossless encoder where asked."""
    target = UID(syntax)
    current = UID(ds.file_meta.TransferSyntaxUID)
    if current == target:
        return ds
    # the same instance in another encoding: it keeps its SOPInstanceUID (PS3.5 A.4 on
    # lossless compression), which pydicom would otherwise replace
    if current.is_compressed:
        ds.decompress(generate_instance_uid=False)  # -> Explicit VR Little Endian
    if target in UNCOMPRESSED:
        ds.file_meta.TransferSyntaxUID = target
    else:
        ds.compress(target, generate_instance_uid=False)
    return ds
