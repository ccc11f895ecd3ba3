"""Error text that is safe to record: no element values, so no patient data.

Parsers put the values they choke on into their messages (pydicom:
``… Instead received b'Doe^Jane' with length 8 …``). Everything that records or logs an
exception (job and export errors, refused instances, audit rows, log lines) goes through
:func:`describe` (an exception: its type, the tag and the SOPInstanceUID it concerns, and
its message only where srnode wrote it) or :func:`scrub` (text: quoted and bytes literals
replaced by ``…``).
"""

from __future__ import annotations

import re

#: 'value', "value", b'value', b"value" (with escapes), as Python's reprs write them
_LITERAL = re.compile(r"""[bB]?(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")""")
_TAG = re.compile(r"\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)")
_ELEMENT_KEYWORD = re.compile(r"\b(?:element|attribute|tag)\s+'?([A-Z][A-Za-z0-9]+)'?")
MAX_LENGTH = 4000

#: exceptions whose messages srnode (or the OS) writes without element values
_OWN_MESSAGES: tuple[type[BaseException], ...] = (OSError, TimeoutError)


def register_safe(*types: type[BaseException]) -> None:
    """Exception types whose messages never carry element values (srnode's own)."""
    global _OWN_MESSAGES
    _OWN_MESSAGES = tuple(dict.fromkeys((*_OWN_MESSAGES, *types)))


def scrub(text: object, limit: int = MAX_LENGTH) -> str:
    """``text`` without quoted or bytes literals (where values hide), clipped to ``limit``."""
    s = str(text)
    s = _LITERAL.sub("…", s)
    s = "".join(c if c.isprintable() else " " for c in s)
    return s[:limit]


def tag_of(text: str) -> str | None:
    """The first DICOM tag ``(gggg,eeee)`` a message names, or the element keyword."""
    m = _TAG.search(text)
    if m:
        return f"({m.group(1).upper()},{m.group(2).upper()})"
    m = _ELEMENT_KEYWORD.search(text)
    return m.group(1) if m else None


def describe(exc: BaseException, *, sop_uid: str | None = None, tag: str | None = None) -> str:
    """One line for a log, a job's last error or an audit row: the exception's type, the
    tag and the SOPInstanceUID, and the (scrubbed) message only for srnode's own errors."""
    msg = str(exc)
    parts = [type(exc).__name__]
    tag = tag or tag_of(msg)
    if tag:
        parts.append(f"at {tag}")
    if sop_uid:
        parts.append(f"sop={sop_uid}")
    text = " ".join(parts)
    if isinstance(exc, _OWN_MESSAGES) and msg:
        text += f": {scrub(msg, 500)}"
    return text
