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
logs and STOW-RS failure reasons; it, the codes and ``Rejected`` are in
:mod:`dicom_node.receive.store_status`, the checks in :mod:`dicom_node.receive.instance_checks`,
the reading of a Dataset or Part-10 bytes in :mod:`dicom_node.receive.instance_input`.
The first instance of a series new to this process gives the series' header
(:class:`~dicom_node.receive.series_header.SeriesHeader`), from the data set already
parsed, before anything is written; it is stored once with the series row.
The SCP calls :meth:`Ingestor.store_encoded` with the raw bytes it received so nothing is
decoded and re-encoded on the hot path.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset

from dicom_node.config import Settings
from dicom_node.error_text import describe, scrub
from dicom_node.receive.header_scan import Malformed, past_image_group, scan_header
from dicom_node.receive.instance_checks import (
    check_instance,
    find_pixel_header,
    known_facts,
    meta_facts,
)
from dicom_node.receive.instance_input import from_input, split_part10
from dicom_node.receive.reserve import DiskReserve
from dicom_node.receive.series_header import SeriesHeader
from dicom_node.receive.store_status import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    SUCCESS,
    UNSUPPORTED_ENCODING,
    Rejected,
    StoreStatus,
)
from dicom_node.receive.wire import encode_file_meta, transfer_syntax
from dicom_node.spool import Spool, SpoolError
from dicom_node.store.database import Database

log = logging.getLogger(__name__)


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
        split = split_part10(data) if isinstance(data, (bytes, bytearray, memoryview)) else None
        if split is not None:
            return self.store_encoded(split[0], split[1], calling_ae, via)
        try:
            meta, header, body, ds = from_input(data)
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
                    pixel = find_pixel_header(ds, body, fp, ts.is_implicit_VR)
        except Rejected as r:
            return self._reject(r.code, r.reason, calling_ae, via, meta_facts(file_meta))
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
            facts = check_instance(meta, ds, pixel, encoded)
            series_header = self._new_series_header(facts, ds, calling_ae)
        except Rejected as r:
            return self._reject(r.code, r.reason, calling_ae, via, known_facts(meta, ds))
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
            series_id = self._series_id(facts, series_header, via)
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

    def _new_series_header(
        self, facts: dict[str, Any], ds: Dataset, calling_ae: str | None
    ) -> SeriesHeader | None:
        """The header of a series new to this process, from the data set parsed already
        (None: the series is known); :class:`Rejected` when it cannot be read."""
        if facts["series_uid"] in self._series_ids:
            return None
        try:
            return SeriesHeader.from_dataset(ds, calling_ae, self.settings)
        except Exception as e:
            raise Rejected(
                CANNOT_UNDERSTAND, f"cannot read series attributes: {describe(e)}"
            ) from None

    def _series_id(self, facts: dict[str, Any], header: SeriesHeader | None, via: str) -> int:
        uid = facts["series_uid"]
        sid = self._series_ids.get(uid)
        if sid is not None:
            return sid
        assert header is not None
        sid = self.db.ensure_series(
            study_uid=facts["study_uid"], series_uid=uid, header=header, via=via
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
