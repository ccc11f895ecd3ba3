"""STOW-RS intake (PS3.18 10.5): the multipart/related body split into parts, each part
stored through the same ingest as a C-STORE, and the Store Instances Response built."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_node.error_text import describe

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
StoreFn = Callable[..., int]

#: PS3.18 Store Instances failure reasons used here (PS3.4 C-STORE status values).
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
NOT_IN_STUDY = 0xA900  # the instance is not of the study named in the request URL
CANNOT_UNDERSTAND = 0xC000


# --- multipart/related ----------------------------------------------------------------------


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _params(content_type: str) -> tuple[str, dict[str, str]]:
    """``multipart/related; type="application/dicom"; boundary=x`` -> (media, params)."""
    media, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    for m in re.finditer(
        r';?\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', rest
    ):
        value = m.group(2).strip()
        if value.startswith('"') and value.endswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[m.group(1).lower()] = value
    return media.strip().lower(), params


@dataclass
class Part:
    headers: dict[str, str]
    body: bytes


def split_multipart(body: bytes, boundary: str) -> list[Part]:
    """The body parts of a multipart message (RFC 2046 5.1): the CRLF before each delimiter
    belongs to the delimiter, so part bodies come back byte for byte."""
    delimiter = b"--" + boundary.encode("latin-1")
    data = b"\r\n" + body
    chunks = data.split(b"\r\n" + delimiter)
    if len(chunks) < 2:
        raise BadRequest(400, "multipart body has no boundary delimiter")
    parts: list[Part] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):  # close delimiter: the epilogue follows
            break
        line_end = chunk.find(b"\r\n")
        if line_end < 0 or chunk[:line_end].strip(b" \t"):
            raise BadRequest(400, "malformed multipart boundary line")
        chunk = chunk[line_end + 2 :]
        head_end = chunk.find(b"\r\n\r\n")
        if chunk.startswith(b"\r\n"):  # no headers at all
            head, content = b"", chunk[2:]
        elif head_end < 0:
            raise BadRequest(400, "multipart part without a blank line after its headers")
        else:
            head, content = chunk[:head_end], chunk[head_end + 4 :]
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        parts.append(Part(headers, content))
    else:
        raise BadRequest(400, "multipart body has no close delimiter")
    return parts


# --- STOW-RS response -----------------------------------------------------------------------


def _header(data: bytes) -> Dataset | None:
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    except Exception:
        return None


def _uids(ds: Dataset | None) -> tuple[str, str, str]:
    if ds is None:
        return "", "", ""
    sop_class = ds.get("SOPClassUID", None) or getattr(
        ds.get("file_meta", Dataset()), "MediaStorageSOPClassUID", ""
    )
    return (
        str(sop_class or ""),
        str(ds.get("SOPInstanceUID", "") or ""),
        str(ds.get("StudyInstanceUID", "") or ""),
    )


def _item(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class or None
    item.ReferencedSOPInstanceUID = sop_instance or None
    return item


def store_parts(
    parts: list[Part], store: StoreFn, study_uid: str | None, calling_ae: str | None
) -> tuple[int, Dataset]:
    """Store each part; the HTTP status and the Store Instances Response dataset."""
    response = Dataset()
    referenced, failed = Sequence(), Sequence()
    for part in parts:
        ctype = _params(part.headers.get("content-type", "application/dicom"))[0]
        ds = _header(part.body)
        sop_class, sop_instance, part_study = _uids(ds)
        if ctype != "application/dicom":
            reason, why = CANNOT_UNDERSTAND, f"part media type {ctype} is not application/dicom"
        elif study_uid and part_study and part_study != study_uid:
            reason, why = NOT_IN_STUDY, "instance is not of the study in the request URL"
        else:
            try:
                status = store(part.body, calling_ae, via="stow")
            except Exception as e:  # the ingest must answer with a status, but never 500
                why = describe(e, sop_uid=sop_instance or None)
                log.error("stow: store failed: %s", why)
                status = OUT_OF_RESOURCES
            else:
                why = getattr(status, "reason", "")
            reason = int(status)
            if reason == 0:
                referenced.append(_item(sop_class, sop_instance))
                continue
        item = _item(sop_class, sop_instance)
        item.FailureReason = reason
        failed.append(item)
        log.warning("stow: instance sop=%s refused: 0x%04X %s", sop_instance or "?", reason, why)
    response.ReferencedSOPSequence = referenced
    response.FailedSOPSequence = failed
    if not failed:
        code = 200
    elif referenced:
        code = 202
    else:
        code = 409
    return code, response
