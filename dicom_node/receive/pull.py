"""Fetching a study from a PACS so the node (re)processes it.

- DICOMweb destinations (``kind = "stow"``, their ``url`` is the DICOMweb root): QIDO-RS
  lists the study's series, WADO-RS retrieves each; every instance goes through the ingest
  like a C-STORE would (spool, database, stability, routing, job).
- DIMSE destinations: C-GET (the instances come back on our association, no need for the
  PACS to know our address) or C-MOVE to our own AE title (the PACS must have srnode as a
  modality and ``srnode serve`` must be running to receive them).

Nothing here decides whether a series is enhanced: the normal flow does, so a series that
srnode derived is pulled too but never routed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
)

from dicom_node.config_routing import Destination
from dicom_node.implementation import identify
from dicom_node.net import scu_handlers
from dicom_node.receive.wire import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES

log = logging.getLogger(__name__)

StoreFn = Callable[..., int]


class PullError(Exception):
    """The study could not be asked for at all (peer down, refused, not found)."""


@dataclass
class PullResult:
    method: str
    series: int = 0
    stored: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (SOPInstanceUID, reason)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed


def pull(
    dest: Destination,
    study_uid: str,
    store: StoreFn,
    *,
    series_uids: Iterable[str] = (),
    method: str = "auto",
    calling_ae: str = "SRNODE",
    move_destination: str | None = None,
    timeout: float = 60.0,
) -> PullResult:
    """Fetch ``study_uid`` (or only ``series_uids`` of it) from ``dest`` into ``store``.

    ``method``: ``auto`` (WADO-RS for DICOMweb destinations, C-GET for DIMSE ones), ``get``
    or ``move`` (C-MOVE to ``move_destination``, default ``calling_ae``).
    ``store(data, calling_ae, via=...)`` is :func:`dicom_node.receive.ingest.store` or an
    :class:`~dicom_node.receive.ingest.Ingestor`'s ``store``; pulled instances are recorded with
    the destination's AE title (or name) as their calling AE.
    """
    series = [s for s in series_uids if s]
    if dest.kind == "stow":
        if method not in ("auto", "wado"):
            raise PullError(f"{dest.name} is a DICOMweb destination: method {method} unavailable")
        return _pull_wado(dest, study_uid, series, store, timeout=timeout)
    if method in ("auto", "get"):
        return _pull_cget(dest, study_uid, series, store, calling_ae, timeout=timeout)
    if method == "move":
        return _pull_cmove(
            dest, study_uid, series, calling_ae, move_destination or calling_ae, timeout=timeout
        )
    raise PullError(f"unknown method {method!r} (auto, get, move, wado)")


def _source_ae(dest: Destination) -> str:
    return (getattr(dest, "ae_title", None) or dest.name)[:16]


def _record(result: PullResult, status: int, sop: str) -> None:
    if int(status) == 0:
        result.stored += 1
    else:
        result.failed.append((sop, f"0x{int(status):04X} {getattr(status, 'reason', '')}".strip()))


# --- DICOMweb ------------------------------------------------------------------------------


def _pull_wado(
    dest: Destination, study_uid: str, series: list[str], store: StoreFn, *, timeout: float
) -> PullResult:
    import requests
    from dicomweb_client.api import DICOMwebClient

    if not dest.url:
        raise PullError(f"destination {dest.name}: url is required")
    client = DICOMwebClient(url=dest.url.rstrip("/"), timeout=timeout)
    client.set_http_retry_params(retry=False)
    result = PullResult("wado")
    try:
        found = client.search_for_series(study_instance_uid=study_uid, get_remaining=True)
    except requests.HTTPError as e:
        code = e.response.status_code if e.response is not None else "?"
        raise PullError(f"QIDO-RS series of the study at {dest.url}: HTTP {code}") from None
    except requests.RequestException as e:
        raise PullError(f"cannot reach {dest.url}: {type(e).__name__}") from None
    uids = [str(Dataset.from_json(s).SeriesInstanceUID) for s in found]
    if series:
        uids = [u for u in uids if u in set(series)]
    if not uids:
        raise PullError(f"study {study_uid} has no matching series at {dest.name}")
    source = _source_ae(dest)
    for series_uid in uids:
        result.series += 1
        try:
            for ds in client.iter_series(study_uid, series_uid):
                sop = str(ds.get("SOPInstanceUID", "?"))
                _record(result, store(ds, source, via="wado"), sop)
        except requests.RequestException as e:
            result.failed.append((series_uid, f"WADO-RS series failed: {type(e).__name__}: {e}"))
    log.info(
        "pull study=%s from %s (WADO-RS): %d series, %d stored, %d failed",
        study_uid,
        dest.name,
        result.series,
        result.stored,
        len(result.failed),
    )
    return result


# --- DIMSE ---------------------------------------------------------------------------------


def _identifier(study_uid: str, series_uid: str | None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
    ds.StudyInstanceUID = study_uid
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    return ds


def _associate(ae, dest: Destination, **kw):
    if not dest.host or not dest.port or not dest.ae_title:
        raise PullError(f"destination {dest.name}: ae_title, host and port are required")
    try:
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, **kw)
    except OSError as e:
        raise PullError(f"cannot connect to {dest.host}:{dest.port}: {e}") from None
    if not assoc.is_established:
        what = "rejected" if assoc.is_rejected else "not established"
        raise PullError(f"association with {dest.ae_title}@{dest.host}:{dest.port} {what}")
    return assoc


def _final_status(responses) -> tuple[int | None, Dataset | None]:
    last: tuple[int | None, Dataset | None] = (None, None)
    for status, _identifier_ds in responses:
        if status is None or "Status" not in status:
            return None, None  # aborted or timed out
        code = int(status.Status)
        if code not in (0xFF00, 0xFF01):  # not "pending"
            last = (code, status)
    return last


def _pull_cget(
    dest: Destination,
    study_uid: str,
    series: list[str],
    store: StoreFn,
    calling_ae: str,
    *,
    timeout: float,
) -> PullResult:
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

    result = PullResult("cget")
    source = _source_ae(dest)

    def on_store(event) -> int:
        data = event.encoded_dataset(include_meta=True)
        status = store(data, source, via="cget")
        _record(result, status, str(event.request.AffectedSOPInstanceUID))
        return int(status)

    ae = identify(AE(ae_title=calling_ae))
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(GET)
    roles = []
    # the same storage SOP classes and transfer syntaxes as the storage SCP accepts
    for uid in STORAGE_SOP_CLASSES.values():
        ae.add_requested_context(UID(uid), TRANSFER_SYNTAXES)
        roles.append(build_role(uid, scp_role=True))
    assoc = _associate(
        ae,
        dest,
        ext_neg=roles,
        evt_handlers=[*scu_handlers(serves_requests=True), (evt.EVT_C_STORE, on_store)],
    )
    try:
        for series_uid in series or [None]:
            result.series += 1
            code, status = _final_status(assoc.send_c_get(_identifier(study_uid, series_uid), GET))
            if code is None:
                raise PullError("C-GET: association aborted or timed out")
            if code not in (0x0000, 0xB000):
                result.detail = f"C-GET final status 0x{code:04X}"
                if result.stored == 0 and not result.failed:
                    raise PullError(f"C-GET refused by {dest.ae_title}: status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    if result.stored == 0 and not result.failed:
        raise PullError(f"study {study_uid} not found at {dest.name} (C-GET sent nothing)")
    log.info(
        "pull study=%s from %s (C-GET): %d stored, %d failed",
        study_uid,
        dest.name,
        result.stored,
        len(result.failed),
    )
    return result


def _pull_cmove(
    dest: Destination,
    study_uid: str,
    series: list[str],
    calling_ae: str,
    move_destination: str,
    *,
    timeout: float,
) -> PullResult:
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

    result = PullResult("cmove")
    ae = identify(AE(ae_title=calling_ae))
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(MOVE)
    assoc = _associate(ae, dest, evt_handlers=scu_handlers())
    try:
        for series_uid in series or [None]:
            result.series += 1
            ident = _identifier(study_uid, series_uid)
            code, status = _final_status(assoc.send_c_move(ident, move_destination, MOVE))
            if code is None:
                raise PullError("C-MOVE: association aborted or timed out")
            done = int(status.get("NumberOfCompletedSuboperations", 0) or 0)
            failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
            result.stored += done
            if failed:
                result.failed.append((series_uid or study_uid, f"{failed} sub-operations failed"))
            if code not in (0x0000, 0xB000):
                result.detail = f"C-MOVE final status 0x{code:04X}"
                if not done:
                    raise PullError(f"C-MOVE refused by {dest.ae_title}: status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    log.info(
        "pull study=%s from %s (C-MOVE to %s): %d moved, %d failed",
        study_uid,
        dest.name,
        move_destination,
        result.stored,
        len(result.failed),
    )
    return result
