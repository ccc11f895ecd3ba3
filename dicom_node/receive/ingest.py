"""Receiving one instance, the same way for DIMSE C-STORE and DICOMweb STOW-RS.

``Ingestor.store(dataset_or_bytes, calling_ae, via="dimse"|"stow") -> StoreStatus`` checks
the instance, writes it to the spool (fsynced) and records it in the database, and only
then returns Success (0x0000). Any failure gives an error status, never Success:

* 0xA700 Refused: out of resources (disk or database failure, or free space below
  ``storage.min_free_gb``: see :mod:`dicom_node.receive.reserve`),
* 0xC000-0xC005 Error: cannot understand (not DICOM, an element longer than the data set,
  missing or invalid UIDs, image attributes missing or zero, no or truncated pixel data,
  a broken fragment table…), with a reason that names the tag, never a value.

``StoreStatus`` is an ``int`` (use it as the DIMSE status) with a ``reason`` string for
logs and STOW-RS failure reasons. The SCP calls :meth:`Ingestor.store_encoded` with the
raw bytes it received so nothing is decoded and re-encoded on the hot path.
"""

from __future__ import annotations

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

from dicom_node.config import Settings
from dicom_node.jobs.db import Database
from dicom_node.jobs.errors import describe, register_safe, scrub
from dicom_node.jobs.routing import SeriesFacts
from dicom_node.receive.reserve import DiskReserve
from dicom_node.receive.wire import (
    IMAGE_SOP_CLASSES,
    Malformed,
    at_pixel_data,
    check_pixel_data,
    encode_file_meta,
    expected_pixel_bytes,
    past_image_group,
    scan_header,
    transfer_syntax,
)
from dicom_node.spool import Spool, SpoolError, valid_uid

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000  # not parseable as DICOM
MISSING_UID = 0xC001  # a required UID is missing or invalid
UID_MISMATCH = 0xC002  # SOP Instance/Class UID in the data set differ from the request
BAD_PIXEL_DATA = 0xC003  # pixel data shorter than the image attributes say
UNSUPPORTED_ENCODING = 0xC004  # transfer syntax we cannot read
BAD_IMAGE = 0xC005  # image attributes (Rows, Columns, BitsAllocated...) missing or unusable

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
    """An instance refused with ``code``; ``reason`` is srnode's own text (no values)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


register_safe(Rejected)


class Ingestor:
    """Stores instances for one node: spool + database (+ an optional hook per instance)."""

    def __init__(
        self,
        db: Database,
        spool: Spool,
        *,
        on_stored: Callable[[str, str], None] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.db = db
        self.settings = settings or Settings()
        self.spool = spool
        self.on_stored = on_stored
        self.reserve = DiskReserve(spool.root, self.settings.storage.min_free_gb)
        self._series_ids: dict[str, int] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- public API
    def store(
        self,
        data: Dataset | bytes | bytearray | memoryview,
        calling_ae: str | None,
        via: str = "dimse",
    ) -> StoreStatus:
        """Store one instance given as a pydicom Dataset or Part-10 bytes (these are
        checked on the wire like a C-STORE's data set, see :meth:`store_encoded`)."""
        split = _split_part10(data) if isinstance(data, (bytes, bytearray, memoryview)) else None
        if split is not None:
            return self.store_encoded(split[0], split[1], calling_ae, via)
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
            try:
                scanned = scan_header(body, ts.is_implicit_VR)
            except Malformed as e:  # definitely broken: refused, whatever pydicom makes of it
                raise Rejected(CANNOT_UNDERSTAND, str(e)) from None
            except Exception:  # anything unusual: pydicom decides below
                scanned = None
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
                    raise Rejected(
                        CANNOT_UNDERSTAND, f"cannot parse data set: {describe(e)}"
                    ) from None
                if scanned is not None:
                    pixel = scanned[1]
                else:
                    pixel = _find_pixel_header(ds, body, fp, ts.is_implicit_VR)
        except Rejected as r:
            return self._reject(r.code, r.reason, calling_ae, via, _meta_facts(file_meta))
        except Exception as e:
            return self._reject(
                CANNOT_UNDERSTAND, f"bad file meta: {describe(e)}", calling_ae, via, None
            )
        return self._store(file_meta, header, body, ds, calling_ae, via, pixel, encoded=True)

    def reconcile(self) -> int:
        """Index spool files that have no database row (after a power loss with SQLite's
        ``synchronous = NORMAL``, the last rows may be gone while their fsynced files are
        there). Files that do not parse are removed: they were never acknowledged."""
        known = self.db.instance_paths()
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
            elif 0xC000 <= st <= 0xCFFF:
                log.warning("spool file %s is unreadable (%s): removed", f.name, st.reason)
                f.unlink(missing_ok=True)
            else:  # out of resources now: the file stays for the next start
                log.warning("spool file %s not re-indexed now: %s", f.name, st.reason)
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
                raise Rejected(
                    CANNOT_UNDERSTAND, f"cannot encode data set: {describe(e)}"
                ) from None
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
            return self._from_input(ds)  # no Part-10 header: write one
        raise Rejected(CANNOT_UNDERSTAND, f"cannot store a {type(data).__name__}")

    def _check(
        self,
        meta: FileMetaDataset,
        ds: Dataset,
        pixel: tuple[int, int] | None = None,
        encoded: bool = False,
    ) -> dict[str, Any]:
        """The facts of a storable instance, or :class:`Rejected` saying what is wrong.
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
                raise Rejected(
                    MISSING_UID, f"{name} missing or invalid ({len(facts[key])} characters)"
                )
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
            facts.update(
                modality=str(ds.get("Modality", "") or "") or None,
                body_part=str(ds.get("BodyPartExamined", "") or "") or None,
                series_description=str(ds.get("SeriesDescription", "") or "") or None,
                study_description=str(ds.get("StudyDescription", "") or "") or None,
                instance_number=_int_or_none(ds.get("InstanceNumber")),
                expected_count=_int_or_none(ds.get("ImagesInAcquisition")),
            )
        except Exception as e:
            raise Rejected(
                CANNOT_UNDERSTAND, f"cannot read series attributes: {describe(e)}"
            ) from None
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
        encoded: bool = False,
    ) -> StoreStatus:
        t0 = time.perf_counter()
        try:
            facts = self._check(meta, ds, pixel, encoded)
        except Rejected as r:
            return self._reject(r.code, r.reason, calling_ae, via, _known_facts(meta, ds))
        sop_uid, series_uid, study_uid = facts["sop_uid"], facts["series_uid"], facts["study_uid"]
        chunks = (header, body) if header else (body,)
        if via != "recover" and self.reserve.low():  # a recovered file is on disk already
            why = f"free disk space below storage.min_free_gb ({self.reserve.min_free_gb:g} GB)"
            return self._reject(OUT_OF_RESOURCES, why, calling_ae, via, facts)
        try:
            path, size = self.spool.write(study_uid, series_uid, sop_uid, chunks)
        except (SpoolError, OSError) as e:
            self.reserve.refresh()
            return self._reject(OUT_OF_RESOURCES, describe(e), calling_ae, via, facts)
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
                OUT_OF_RESOURCES, f"database: {describe(e)}", calling_ae, via, facts
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
            except Exception as e:  # a hook never fails a store
                log.error("on_stored hook failed: %s", describe(e, sop_uid=sop_uid))
        return StoreStatus(SUCCESS, "stored" if new else "stored again (same SOPInstanceUID)")

    def _series_id(
        self, facts: dict[str, Any], ds: Dataset, calling_ae: str | None, via: str
    ) -> int:
        uid = facts["series_uid"]
        sid = self._series_ids.get(uid)
        if sid is not None:
            return sid
        routing = self._routing_facts(ds, calling_ae)
        sid = self.db.ensure_series(
            study_uid=facts["study_uid"],
            series_uid=uid,
            study_description=facts["study_description"],
            modality=facts["modality"],
            body_part=facts["body_part"],
            series_description=facts["series_description"],
            calling_ae=calling_ae,
            via=via,
            derived_by_srnode=routing.derived_by_srnode,
            expected_count=facts["expected_count"],
            routing=routing.to_json(),
        )
        with self._lock:
            if len(self._series_ids) > 10000:
                self._series_ids.clear()
            self._series_ids[uid] = sid
        return sid

    def _routing_facts(self, ds: Dataset, calling_ae: str | None) -> SeriesFacts:
        """The routing snapshot of a new series, from its first instance's header."""
        try:
            return SeriesFacts.from_dataset(ds, calling_ae or "", self.settings)
        except Exception:  # a malformed sequence must not block receiving
            log.warning("routing attributes unreadable; the series is routed as derived")
            return SeriesFacts(calling_ae=calling_ae or "", derived_by_srnode=True)

    def _reject(
        self, code: int, reason: str, calling_ae: str | None, via: str, facts: dict[str, Any] | None
    ) -> StoreStatus:
        f = facts or {}
        reason = scrub(reason, 500)
        where = " ".join(f"{k}={f[k]}" for k in ("study_uid", "series_uid") if f.get(k)).replace(
            "_uid", ""
        )
        log.warning(
            "refused instance sop=%s%s via=%s from=%s status=0x%04X: %s",
            f.get("sop_uid") or "(none in the request)",
            f" {where}" if where else "",
            via,
            calling_ae,
            code,
            reason,
        )
        _metric_rejected(via, code)
        return StoreStatus(code, reason)


def _find_pixel_header(ds: Dataset, body: Any, fp: Any, implicit: bool) -> tuple[int, int] | None:
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


def _split_part10(data: Any) -> tuple[FileMetaDataset, memoryview] | None:
    """(file meta, data set bytes) of a Part-10 file in a little-endian, not deflated
    transfer syntax; None for anything else (pydicom reads it whole instead)."""
    from pydicom.filereader import _read_file_meta_info

    raw = memoryview(data)
    if len(raw) < 132 or bytes(raw[128:132]) != b"DICM":
        return None
    fp = io.BytesIO(raw)
    fp.seek(132)
    try:
        meta = _read_file_meta_info(fp)
        ts = transfer_syntax(str(meta.TransferSyntaxUID))
        if ts.is_deflated or not ts.is_little_endian:
            return None
        if not (meta.get("MediaStorageSOPClassUID") and meta.get("MediaStorageSOPInstanceUID")):
            return None
    except Exception:
        return None
    return meta, raw[fp.tell() :]


def _known_facts(meta: Any, ds: Any) -> dict[str, Any]:
    """The UIDs a refusal can name (from the request, else the data set), never failing."""
    out = _meta_facts(meta)
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
