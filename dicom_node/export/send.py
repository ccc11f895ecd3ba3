"""Sending derived instances to a destination: DIMSE C-STORE or DICOMweb STOW-RS.

:func:`send` makes one attempt at a batch of files and reports, per file, what went
through and what did not; the caller (the worker) keeps the per-destination attempt count
and waits :func:`next_retry_delay` seconds before trying the failed files again. Nothing
here sleeps or retries on its own, so a destination that is down never blocks a worker.

- DIMSE: one association per batch (pynetdicom, TCP_NODELAY on), presentation contexts
  built from the files' SOP classes and transfer syntaxes (uncompressed files also offer
  Explicit and Implicit VR Little Endian so any Storage SCP can accept them), optional TLS.
- STOW-RS: dicomweb-client, in batches of bounded size; the response's
  ReferencedSOPSequence / FailedSOPSequence (PS3.18 10.5.3) decides per instance, so a
  409 with some instances stored is a partial success, not a failed batch.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.config import Destination
from dicom_node.net import scu_handlers

log = logging.getLogger(__name__)

#: Transfer syntaxes pynetdicom can convert between without decoding pixel data.
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: PS3.8: at most 128 presentation contexts per association.
_MAX_CONTEXTS = 128
#: STOW-RS request size (bytes of DICOM) before starting a new request.
STOW_BATCH_BYTES = 64 * 1024 * 1024
#: DIMSE statuses that say the data, not the peer's state, is the problem (retrying the
#: same file will not help): 0xA9xx data set does not match SOP class, 0x0122 SOP class
#: not supported, 0x0117 invalid SOP instance.
_PERMANENT_DIMSE = (0x0117, 0x0122)


@dataclass
class SendResult:
    """``ok``: paths the destination acknowledged; ``failed``: (path, reason).
    ``permanent``: the failed paths a retry cannot fix (the destination refused the data
    itself, e.g. a STOW FailureReason or a DIMSE 0xA9xx status)."""

    ok: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    permanent: list[str] = field(default_factory=list)

    @property
    def all_ok(self) -> bool:
        return not self.failed

    def fail(self, path: str, reason: str, permanent: bool = False) -> None:
        self.failed.append((path, reason))
        if permanent:
            self.permanent.append(path)


def next_retry_delay(attempt: int, dest: Destination, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first) to ``dest``.

    Exponential backoff ``backoff_initial * 2**(attempt-1)`` with "equal jitter" (a
    uniformly drawn value in [base/2, base]) so many jobs failing together do not retry
    in lock-step; never more than ``backoff_max``.
    """
    r = rng if rng is not None else random
    n = max(1, int(attempt))
    base = dest.backoff_initial * 2.0 ** min(n - 1, 62)
    base = min(base, dest.backoff_max)
    return min(dest.backoff_max, base / 2.0 + r.uniform(0.0, base / 2.0))


def send(
    dest: Destination,
    paths: Sequence[str | os.PathLike[str]],
    calling_ae: str = "SRNODE",
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 60.0,
) -> SendResult:
    """One attempt to store ``paths`` at ``dest``; never raises for network trouble."""
    files = [os.fspath(p) for p in paths]
    if not files:
        return SendResult()
    if dest.kind == "stow":
        result = _send_stow(dest, files, timeout=timeout)
    else:
        result = _send_dimse(dest, files, calling_ae, ssl_context=ssl_context, timeout=timeout)
    level = logging.INFO if result.all_ok else logging.WARNING
    log.log(
        level,
        "export to %s (%s): %d ok, %d failed%s",
        dest.name,
        dest.kind,
        len(result.ok),
        len(result.failed),
        f", first error: {result.failed[0][1]}" if result.failed else "",
    )
    return result


# --- DIMSE -------------------------------------------------------------------------------


def _tls_context(dest: Destination) -> ssl.SSLContext:
    """Client TLS context: verifies the peer against the system CAs, or ``tls_ca`` if the
    destination config has one; presents ``tls_cert``/``tls_key`` when configured."""
    ca = dest.tls_ca
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.fspath(ca) if ca else None)
    cert, key = dest.tls_cert, dest.tls_key
    if cert:
        ctx.load_cert_chain(os.fspath(cert), os.fspath(key) if key else None)
    return ctx


def _contexts_for(
    metas: dict[str, tuple[UID, UID]],
) -> tuple[list[tuple[UID, list[UID]]], list[str]]:
    """Presentation contexts (abstract syntax, transfer syntaxes) for the files; the paths
    that did not fit into 128 contexts come back second."""
    by_class: dict[UID, list[UID]] = {}
    for sop_class, ts in metas.values():
        tss = by_class.setdefault(sop_class, [])
        if ts not in tss:
            tss.append(ts)
    contexts: list[tuple[UID, list[UID]]] = []
    for sop_class, tss in by_class.items():
        plain = [ts for ts in tss if ts in _UNCOMPRESSED or not ts.is_compressed]
        if plain:
            offer = list(dict.fromkeys([*plain, *_UNCOMPRESSED]))
            contexts.append((sop_class, offer))
        contexts.extend((sop_class, [ts]) for ts in tss if ts not in plain)
    kept = contexts[:_MAX_CONTEXTS]
    fits = {(c, t) for c, tss in kept for t in tss}
    overflow = [p for p, (c, t) in metas.items() if (c, t) not in fits]
    return kept, overflow


def _status_text(status: Dataset) -> tuple[int | None, str]:
    code = status.get("Status", None)
    if code is None:
        return None, "no response (association aborted or timed out)"
    comment = status.get("ErrorComment", "")
    text = f"status 0x{int(code):04X}" + (f" ({comment})" if comment else "")
    return int(code), text


def _is_ok_status(code: int) -> bool:
    # Success, and the C-STORE warnings 0xBxxx (coercion 0xB000, elements discarded
    # 0xB006, data set does not match SOP class 0xB007): the instance is stored.
    return code == 0x0000 or 0xB000 <= code <= 0xBFFF


def _send_dimse(
    dest: Destination,
    files: list[str],
    calling_ae: str,
    *,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
) -> SendResult:
    from pynetdicom import AE

    result = SendResult()
    if not dest.host or not dest.port or not dest.ae_title:
        for f in files:
            result.fail(f, f"destination {dest.name}: ae_title, host and port are required")
        return result

    metas: dict[str, tuple[UID, UID]] = {}
    for f in files:
        try:
            meta = read_file_meta_info(f)
            metas[f] = (UID(meta.MediaStorageSOPClassUID), UID(meta.TransferSyntaxUID))
        except Exception as e:  # missing, unreadable or not DICOM Part 10
            result.fail(f, f"cannot read file meta: {e}", permanent=True)
    contexts, overflow = _contexts_for(metas)
    for f in overflow:
        result.fail(f, "more than 128 presentation contexts in one batch")
    sendable = [f for f in files if f in metas and f not in set(overflow)]
    if not sendable:
        return result

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = min(timeout, 10.0)
    for sop_class, tss in contexts:
        ae.add_requested_context(sop_class, tss)
    tls_args = None
    if dest.tls or ssl_context is not None:
        tls_args = (ssl_context or _tls_context(dest), dest.host)
    try:
        assoc = ae.associate(
            dest.host,
            dest.port,
            ae_title=dest.ae_title,
            tls_args=tls_args,
            evt_handlers=scu_handlers(),
        )
    except (OSError, ssl.SSLError) as e:
        for f in sendable:
            result.fail(f, f"cannot connect to {dest.host}:{dest.port}: {e}")
        return result
    if not assoc.is_established:
        if assoc.is_rejected:
            why = "association rejected"
        elif assoc.is_aborted:
            why = "association aborted"
        else:
            why = f"cannot connect to {dest.host}:{dest.port}"
        for f in sendable:
            result.fail(f, why)
        return result
    try:
        for i, f in enumerate(sendable):
            if not assoc.is_established or assoc.is_aborted:
                for rest in sendable[i:]:
                    result.fail(rest, "association ended before this instance was sent")
                break
            try:
                status = assoc.send_c_store(f)
            except ValueError as e:  # no accepted presentation context for it
                result.fail(f, f"not accepted by {dest.ae_title}: {e}", permanent=True)
                continue
            except Exception as e:  # file vanished or cannot be decoded
                result.fail(f, f"cannot send: {e}", permanent=True)
                continue
            code, text = _status_text(status)
            if code is None:  # no response: the association is gone (abort or timeout)
                result.fail(f, text)
                for rest in sendable[i + 1 :]:
                    result.fail(rest, "association ended before this instance was sent")
                if assoc.is_established:
                    assoc.abort()
                break
            if _is_ok_status(code):
                result.ok.append(f)
            else:
                permanent = 0xA900 <= code <= 0xA9FF or code in _PERMANENT_DIMSE
                result.fail(f, text, permanent=permanent)
    finally:
        if assoc.is_established:
            assoc.release()
    return result


# --- STOW-RS -----------------------------------------------------------------------------


def _batches(files: Iterable[str], max_bytes: int) -> Iterable[list[str]]:
    batch: list[str] = []
    size = 0
    for f in files:
        try:
            n = os.path.getsize(f)
        except OSError:
            n = 0
        if batch and size + n > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(f)
        size += n
    if batch:
        yield batch


def _stow_response(resp: object) -> Dataset | None:
    """The STOW response dataset of a ``requests`` response, if its body has one."""
    try:
        ctype = resp.headers.get("Content-Type", "")  # type: ignore[attr-defined]
        if resp.content and "json" in ctype:  # type: ignore[attr-defined]
            return Dataset.from_json(resp.json())  # type: ignore[attr-defined]
    except Exception:
        return None
    return None


def _apply_stow_response(
    result: SendResult, uid_to_path: dict[str, str], resp: Dataset | None, http: str
) -> None:
    """Mark each instance of the request stored or failed from the response dataset."""
    pending = dict(uid_to_path)
    if resp is not None:
        for item in resp.get("ReferencedSOPSequence", None) or []:
            path = pending.pop(str(item.get("ReferencedSOPInstanceUID", "")), None)
            if path is not None:
                result.ok.append(path)
        for item in resp.get("FailedSOPSequence", None) or []:
            path = pending.pop(str(item.get("ReferencedSOPInstanceUID", "")), None)
            if path is not None:
                reason = item.get("FailureReason", None)
                text = f"{http}, FailureReason 0x{int(reason):04X}" if reason is not None else http
                # 0xA7xx out of resources and 0x0110 processing failure may pass later.
                permanent = reason is not None and not (
                    0xA700 <= int(reason) <= 0xA7FF or int(reason) == 0x0110
                )
                result.fail(path, text, permanent=permanent)
    for path in pending.values():
        result.fail(path, f"{http}, instance not acknowledged")


def _send_stow(dest: Destination, files: list[str], *, timeout: float) -> SendResult:
    import requests
    from dicomweb_client.api import DICOMwebClient

    result = SendResult()
    if not dest.url:
        for f in files:
            result.fail(f, f"destination {dest.name}: url is required for kind = stow")
        return result
    client = DICOMwebClient(url=dest.url.rstrip("/"), timeout=timeout)
    client.set_http_retry_params(retry=False)  # the worker owns retries and backoff
    for batch in _batches(files, STOW_BATCH_BYTES):
        datasets: list[Dataset] = []
        uid_to_path: dict[str, str] = {}
        for f in batch:
            try:
                ds = dcmread(f)
                uid_to_path[str(ds.SOPInstanceUID)] = f
                datasets.append(ds)
            except Exception as e:
                result.fail(f, f"cannot read: {e}", permanent=True)
        if not datasets:
            continue
        try:
            resp_ds = client.store_instances(datasets)
            if len(resp_ds):
                _apply_stow_response(result, uid_to_path, resp_ds, "HTTP 200")
            else:  # 200 without a body: PS3.18 says every instance was stored
                result.ok.extend(uid_to_path.values())
        except requests.HTTPError as e:
            r = e.response
            code = r.status_code if r is not None else 0
            resp = _stow_response(r) if r is not None else None
            if resp is not None and (
                "ReferencedSOPSequence" in resp or "FailedSOPSequence" in resp
            ):
                _apply_stow_response(result, uid_to_path, resp, f"HTTP {code}")
            else:
                permanent = 400 <= code < 500 and code not in (408, 409, 429)
                for path in uid_to_path.values():
                    result.fail(path, f"HTTP {code}", permanent=permanent)
        except (requests.RequestException, OSError) as e:
            for path in uid_to_path.values():
                result.fail(path, f"cannot reach {dest.url}: {type(e).__name__}: {e}")
    return result


def paths_of(directory: str | os.PathLike[str]) -> list[str]:
    """Every regular file under ``directory``, sorted (a convenience for tools and tests)."""
    return sorted(os.fspath(p) for p in Path(directory).rglob("*") if p.is_file())
