"""Receiving one instance, the same way for DIMSE C-STORE and DICOMweb STOW-RS.

``Ingestor.store(dataset_or_bytes, calling_ae, via="dimse"|"stow") -> StoreStatus`` checks
the instance, writes it to the spool (fsynced) and records it in the database, and only
then returns Success (0x0000). Any failure gives an error status, never Success:

* 0xA700 Refused: out of resources (disk or database failure),
* 0xC000-0xC0FF Error: cannot understand (not DICOM, missing or invalid UIDs, truncated
  pixel data…).

``StoreStatus`` is an ``int`` (use it as the DIMSE status) with a ``reason`` string for
logs and STOW-RS failure reasons. The SCP calls :meth:`Ingestor.store_encoded` with the
raw bytes it received so nothing is decoded and re-encoded on the hot path.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.jobs.db import Database
from dicom_node.receive.spool import Spool, SpoolError, valid_uid
from dicom_node.receive.wire import (
    at_pixel_data,
    encode_file_meta,
    expected_pixel_bytes,
    past_image_group,
    pixel_element_header,
    scan_header,
    transfer_syntax,
)

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000  # not parseable as DICOM
MISSING_UID = 0xC001  # a required UID is missing or invalid
UID_MISMATCH = 0xC002  # SOP Instance/Class UID in the data set differ from the request
BAD_PIXEL_DATA = 0xC003  # pixel data shorter than the image attributes say
UNSUPPORTED_ENCODING = 0xC004  # transfer syntax we cannot read

_PIXEL_TAG = 0x7FE00010


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
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _fallback_is_derived(ds: Dataset) -> bool:
    for item in ds.get("ContributingEquipmentSequence", []) or []:
        if str(item.get("Manufacturer", "")).lower().startswith("srnode"):
            return True
    return False


def _is_srnode_derived(ds: Dataset) -> bool:
    try:
        from dicom_node.jobs.routing import is_srnode_derived
    except ImportError:
        return _fallback_is_derived(ds)
    try:
        return bool(is_srnode_derived(ds))
    except Exception:  # a malformed sequence must not block receiving
        return _fallback_is_derived(ds)


class Ingestor:
    """Stores instances for one node: spool + database (+ an optional hook per instance)."""

    def __init__(
        self,
        db: Database,
        spool: Spool,
        *,
        on_stored: Callable[[str, str], None] | None = None,
    ) -> None:
        self.db = db
        self.spool = spool
        self.on_stored = on_stored
        self._series_ids: dict[str, int] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- public API
    def store(
        self,
        data: Dataset | bytes | bytearray | memoryview,
        calling_ae: str | None,
        via: str = "dimse",
    ) -> StoreStatus:
        """Store one instance given as a pydicom Dataset or Part-10 bytes."""
        try:
            meta, header, body, ds = self._from_input(data)
        except Rejected as r:
            return self._reject(r.code, r.reason, calling_ae, via, None)
        return self._store(meta, header, body, ds, calling_ae, via)

    __call__ = store

    def store_encoded(
        self,
        file_meta: FileMetaDataset,
        body: bytes | bytearray | memoryview,
        calling_ae: str | None,
        via: str = "dimse",
    ) -> StoreStatus:
        """Store a data set as received on the wire (no file meta) with its file meta
        (a FileMetaDataset, or a :data:`WireMeta` with the same keywords)."""
        try:
            ts = transfer_syntax(str(file_meta.TransferSyntaxUID))
            if ts.is_deflated or not ts.is_little_endian:
                raise Rejected(UNSUPPORTED_ENCODING, f"transfer syntax {ts} not supported")
            header = encode_file_meta(file_meta)
            scanned = None
            with contextlib.suppress(Exception):  # anything odd: pydicom decides below
                scanned = scan_header(body, ts.is_implicit_VR)
            if scanned is not None and scanned[0].get("SeriesInstanceUID") in self._series_ids:
                # a series we know: the scan has all we need
                ds, pixel = scanned  # type: ignore[assignment]
            else:
                fp = io.BytesIO(body)
                try:
                    # the header only: pixel data is checked from its element header
                    # below, never copied or decoded
                    ds = read_dataset(fp, ts.is_implicit_VR, True, stop_when=past_image_group)
                except Exception as e:
                    raise Rejected(CANNOT_UNDERSTAND, f"cannot parse data set: {e}") from None
                pixel = _find_pixel_header(ds, body, fp, ts.is_implicit_VR)
        except Rejected as r:
            return self._reject(r.code, r.reason, calling_ae, via, _meta_facts(file_meta))
        except Exception as e:
            return self._reject(CANNOT_UNDERSTAND, f"bad file meta: {e}", calling_ae, via, None)
        return self._store(file_meta, header, body, ds, calling_ae, via, pixel)

    def reconcile(self) -> int:
        """Index spool files that have no database row (after a power loss with SQLite's
        ``synchronous = NORMAL``, the last rows may be gone while their fsynced files are
        there). Files that do not parse are removed: they were never acknowledged."""
        from sqlalchemy import select

        from dicom_node.jobs.db import Instance

        with self.db.engine.connect() as conn:
            known = {p for (p,) in conn.execute(select(Instance.path))}
        n = 0
        for f in sorted(self.spool.root.glob("*/*/*.dcm")):
            if str(f) in known:
                continue
            try:
                data = f.read_bytes()
            except OSError:
                continue
            st = self.store(data, None, via="recover")
            if st.ok:
                n += 1
            else:
                log.warning("spool file %s is unreadable (%s): removed", f.name, st.reason)
                f.unlink(missing_ok=True)
        if n:
            log.info("spool reconciled: %d instances re-indexed", n)
        return n

    # ---------------------------------------------------------------- internals
    def _from_input(self, data: Any) -> tuple[FileMetaDataset, bytes, Any, Dataset]:
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
                raise Rejected(CANNOT_UNDERSTAND, f"cannot encode data set: {e}") from None
            return meta, b"", buf.getvalue(), ds
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
            try:
                ds = pydicom.dcmread(io.BytesIO(raw), force=True)
                _ = ds.get("SOPInstanceUID")  # force parsing of the header elements
            except Exception as e:
                raise Rejected(CANNOT_UNDERSTAND, f"not a DICOM file: {e}") from None
            meta = ds.file_meta
            if raw[128:132] == b"DICM" and "TransferSyntaxUID" in meta:
                return meta, b"", raw, ds
            return self._from_input(ds)  # no Part-10 header: write one
        raise Rejected(CANNOT_UNDERSTAND, f"cannot store a {type(data).__name__}")

    def _check(
        self, meta: FileMetaDataset, ds: Dataset, pixel: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        try:
            facts = {
                "sop_class": str(ds.get("SOPClassUID", "") or ""),
                "sop_uid": str(ds.get("SOPInstanceUID", "") or ""),
                "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
                "series_uid": str(ds.get("SeriesInstanceUID", "") or ""),
            }
        except Exception as e:
            raise Rejected(CANNOT_UNDERSTAND, f"cannot read the UIDs: {e}") from None
        for name, key in (
            ("SOPClassUID", "sop_class"),
            ("SOPInstanceUID", "sop_uid"),
            ("StudyInstanceUID", "study_uid"),
            ("SeriesInstanceUID", "series_uid"),
        ):
            if not valid_uid(facts[key]):
                raise Rejected(MISSING_UID, f"{name} missing or invalid ({facts[key]!r})")
        m_sop = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
        if m_sop and m_sop != facts["sop_uid"]:
            raise Rejected(UID_MISMATCH, "SOPInstanceUID differs from the request's")
        m_cls = str(meta.get("MediaStorageSOPClassUID", "") or "")
        if m_cls and m_cls != facts["sop_class"]:
            raise Rejected(UID_MISMATCH, "SOPClassUID differs from the request's")
        if pixel is not None:
            _check_pixel_header(meta, ds, *pixel)
            elem = None
        else:
            try:
                elem = ds.get(_PIXEL_TAG)
            except Exception as e:
                raise Rejected(BAD_PIXEL_DATA, f"cannot read pixel data: {e}") from None
        if elem is not None:
            ts = transfer_syntax(str(meta.TransferSyntaxUID))
            length = getattr(elem, "length", None)
            value = getattr(elem, "value", None)
            if ts.is_encapsulated:
                if value is None or (isinstance(value, bytes) and len(value) < 8):
                    raise Rejected(BAD_PIXEL_DATA, "encapsulated pixel data empty")
            else:
                expected = expected_pixel_bytes(ds)
                got = len(value) if isinstance(value, (bytes, bytearray)) else length
                if expected is not None and got is not None and got < expected:
                    raise Rejected(
                        BAD_PIXEL_DATA,
                        f"pixel data truncated ({got} bytes, image attributes need {expected})",
                    )
        try:
            facts.update(
                modality=str(ds.get("Modality", "") or "") or None,
                body_part=str(ds.get("BodyPartExamined", "") or "") or None,
                series_description=str(ds.get("SeriesDescription", "") or "") or None,
                study_description=str(ds.get("StudyDescription", "") or "") or None,
                instance_number=_int_or_none(ds.get("InstanceNumber")),
                expected_count=_int_or_none(ds.get("ImagesInAcquisition")),
            )
        except Exception as e:
            raise Rejected(CANNOT_UNDERSTAND, f"cannot read series attributes: {e}") from None
        return facts

    def _store(
        self,
        meta: FileMetaDataset,
        header: bytes,
        body: Any,
        ds: Dataset,
        calling_ae: str | None,
        via: str,
        pixel: tuple[int, int] | None = None,
    ) -> StoreStatus:
        t0 = time.perf_counter()
        try:
            facts = self._check(meta, ds, pixel)
        except Rejected as r:
            return self._reject(r.code, r.reason, calling_ae, via, None)
        sop_uid, series_uid, study_uid = facts["sop_uid"], facts["series_uid"], facts["study_uid"]
        chunks = (header, body) if header else (body,)
        try:
            path, size = self.spool.write(study_uid, series_uid, sop_uid, chunks)
        except (SpoolError, OSError) as e:
            return self._reject(OUT_OF_RESOURCES, str(e), calling_ae, via, facts)
        try:
            series_id = self._series_id(facts, ds, calling_ae, via)
            new = self.db.record_instance(
                series_id=series_id,
                sop_uid=sop_uid,
                sop_class_uid=facts["sop_class"],
                transfer_syntax=str(meta.TransferSyntaxUID),
                instance_number=facts["instance_number"],
                path=str(path),
                size=size,
                calling_ae=calling_ae,
                via=via,
            )
        except Exception as e:
            # the file may stay: a re-send overwrites it and the row is what counts
            return self._reject(
                OUT_OF_RESOURCES, f"database: {type(e).__name__}: {e}", calling_ae, via, facts
            )
        log.debug(
            "stored study=%s series=%s sop=%s via=%s from=%s new=%s %.1f ms",
            study_uid,
            series_uid,
            sop_uid,
            via,
            calling_ae,
            new,
            (time.perf_counter() - t0) * 1000,
        )
        _metric_received(via)
        if self.on_stored is not None:
            try:
                self.on_stored(study_uid, series_uid)
            except Exception:  # a hook never fails a store
                log.exception("on_stored hook failed")
        return StoreStatus(SUCCESS, "stored" if new else "stored again (same SOPInstanceUID)")

    def _series_id(
        self, facts: dict[str, Any], ds: Dataset, calling_ae: str | None, via: str
    ) -> int:
        uid = facts["series_uid"]
        sid = self._series_ids.get(uid)
        if sid is not None:
            return sid
        sid = self.db.ensure_series(
            study_uid=facts["study_uid"],
            series_uid=uid,
            study_description=facts["study_description"],
            modality=facts["modality"],
            body_part=facts["body_part"],
            series_description=facts["series_description"],
            calling_ae=calling_ae,
            via=via,
            derived_by_srnode=_is_srnode_derived(ds),
            expected_count=facts["expected_count"],
        )
        with self._lock:
            if len(self._series_ids) > 10000:
                self._series_ids.clear()
            self._series_ids[uid] = sid
        return sid

    def _reject(
        self, code: int, reason: str, calling_ae: str | None, via: str, facts: dict[str, Any] | None
    ) -> StoreStatus:
        f = facts or {}
        log.warning(
            "rejected instance status=0x%04X study=%s series=%s sop=%s via=%s from=%s: %s",
            code,
            f.get("study_uid"),
            f.get("series_uid"),
            f.get("sop_uid"),
            via,
            calling_ae,
            reason,
        )
        _metric_rejected(via, code)
        return StoreStatus(code, reason)


def _find_pixel_header(ds: Dataset, body: Any, fp: Any, implicit: bool) -> tuple[int, int] | None:
    """The pixel data element header without parsing what lies between group 0028 and it.

    Native pixel data is almost always the last element: try where Rows x Columns x … put
    it; otherwise parse on from where the header parse stopped."""
    pos = fp.tell()
    expected = expected_pixel_bytes(ds)
    head = 8 if implicit else 12
    if expected is not None:
        for length in (expected, expected + 1):  # odd lengths are padded
            at = len(body) - length - head
            if at >= pos:
                found = pixel_element_header(body, at, implicit)
                if found is not None and found[0] == length == found[1]:
                    return found
    fp.seek(pos)
    try:
        read_dataset(fp, implicit, True, stop_when=at_pixel_data)
    except Exception as e:
        raise Rejected(CANNOT_UNDERSTAND, f"cannot parse data set: {e}") from None
    return pixel_element_header(body, fp.tell(), implicit)


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


def _meta_facts(meta: FileMetaDataset) -> dict[str, Any]:
    return {"sop_uid": str(meta.get("MediaStorageSOPInstanceUID", "") or "") or None}


def _int_or_none(v: Any) -> int | None:
    try:
        return None if v is None or v == "" else int(v)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- metrics
from dicom_node.metrics import INSTANCES_RECEIVED as _RECEIVED  # noqa: E402
from dicom_node.metrics import INSTANCES_REJECTED as _REJECTED  # noqa: E402


def _metric_received(via: str) -> None:
    if _RECEIVED is not None:
        _RECEIVED.labels(via).inc()


def _metric_rejected(via: str, code: int) -> None:
    if _REJECTED is not None:
        _REJECTED.labels(via, f"0x{code:04X}").inc()


# ---------------------------------------------------------------- module-level entry point
_active: Ingestor | None = None


def configure(ingestor: Ingestor | None) -> None:
    """Make ``ingestor`` the one :func:`store` uses (done by the service on start)."""
    global _active
    _active = ingestor


def store(data: Dataset | bytes, calling_ae: str | None, via: str = "dimse") -> StoreStatus:
    """Store one instance with the node's active ingestor (see :class:`Ingestor`)."""
    if _active is None:
        return StoreStatus(OUT_OF_RESOURCES, "node not started: no ingestor configured")
    return _active.store(data, calling_ae, via)
