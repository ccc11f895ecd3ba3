"""The DIMSE exporter: C-STORE over one association per batch (pynetdicom, TCP_NODELAY on).

Presentation contexts are built from the files' SOP classes and transfer syntaxes
(uncompressed files also offer Explicit and Implicit VR Little Endian so any Storage SCP
can accept them); TLS when the destination asks for it.
"""

from __future__ import annotations

import os
import ssl
import time
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.config import DimseDestination
from dicom_node.export.result import SendResult
from dicom_node.jobs.errors import describe
from dicom_node.net import quiet_pynetdicom, scu_handlers

#: Transfer syntaxes pynetdicom can convert between without decoding pixel data.
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: PS3.8: at most 128 presentation contexts per association.
_MAX_CONTEXTS = 128
#: DIMSE statuses that say the data, not the peer's state, is the problem (retrying the
#: same file will not help): 0xA9xx data set does not match SOP class, 0x0122 SOP class
#: not supported, 0x0117 invalid SOP instance.
_PERMANENT_DIMSE = (0x0117, 0x0122)


def _tls_context(dest: DimseDestination) -> ssl.SSLContext:
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


def connect_failure(host: str, port: int, timeout: float) -> str:
    """What stops a TCP connection to ``host:port`` now, in words ("connection refused by
    …"): pynetdicom only logs it, so a failed association request is followed by one plain
    connection attempt that names the cause."""
    import socket

    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return f"cannot connect to {where} (it accepts connections again now)"
    except ConnectionRefusedError:
        return f"connection refused by {where}"
    except TimeoutError:
        return f"connection to {where} timed out after {timeout:g} s"
    except OSError as e:
        return f"cannot connect to {where}: {e.strerror or type(e).__name__}"


def rejection_text(assoc: Any, called: str | None) -> str:
    """'association rejected by AE (permanent, service user: calling AE title not
    recognised)' from the A-ASSOCIATE-RJ pynetdicom received."""
    rsp = getattr(getattr(assoc, "acceptor", None), "primitive", None)
    detail = ""
    if rsp is not None:
        try:
            kind = {1: "permanent", 2: "transient"}.get(int(rsp.result), f"result {rsp.result}")
            detail = f" ({kind}, {rsp.source_str.lower()}: {rsp.reason_str.lower()})"
        except Exception:
            detail = ""
    return f"association rejected by {called}{detail}"


def _status_text(
    status: Dataset, assoc: Any = None, timeout: float | None = None
) -> tuple[int | None, str]:
    code = status.get("Status", None)
    if code is None:
        if assoc is not None and assoc.is_aborted:
            return None, "association aborted while waiting for the C-STORE response"
        if timeout is not None:
            return None, f"no C-STORE response within {timeout:g} s (timeout)"
        return None, "no C-STORE response (association aborted or timed out)"
    comment = status.get("ErrorComment", "")
    text = f"status 0x{int(code):04X}" + (f" ({comment})" if comment else "")
    return int(code), text


def _is_ok_status(code: int) -> bool:
    # Success, and the C-STORE warnings 0xBxxx (coercion 0xB000, elements discarded
    # 0xB006, data set does not match SOP class 0xB007): the instance is stored.
    return code == 0x0000 or 0xB000 <= code <= 0xBFFF


def send(
    dest: DimseDestination,
    files: list[str],
    calling_ae: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 60.0,
) -> SendResult:
    """One association: the files' contexts, then one C-STORE per file."""
    result = SendResult()
    if not dest.host or not dest.port or not dest.ae_title:
        for f in files:
            result.fail(f, f"destination {dest.name}: ae_title, host and port are required")
        return result
    contexts, sendable = _plan(files, result)
    if not sendable:
        return result
    assoc = _associate(dest, contexts, sendable, result, calling_ae, ssl_context, timeout)
    if assoc is None:
        return result
    try:
        _store_all(assoc, dest, sendable, result, timeout)
    finally:
        if assoc.is_established:
            assoc.release()
    return result


def _plan(files: list[str], result: SendResult) -> tuple[list[tuple[UID, list[UID]]], list[str]]:
    """The presentation contexts for ``files`` and the files that can go (the others are
    failed in ``result``)."""
    metas: dict[str, tuple[UID, UID]] = {}
    for f in files:
        try:
            meta = read_file_meta_info(f)
            metas[f] = (UID(meta.MediaStorageSOPClassUID), UID(meta.TransferSyntaxUID))
        except Exception as e:  # missing, unreadable or not DICOM Part 10
            result.fail(f, f"cannot read file meta: {describe(e)}", permanent=True)
    contexts, overflow = _contexts_for(metas)
    for f in overflow:
        result.fail(f, "more than 128 presentation contexts in one batch")
    return contexts, [f for f in files if f in metas and f not in set(overflow)]


def _associate(
    dest: DimseDestination,
    contexts: list[tuple[UID, list[UID]]],
    sendable: list[str],
    result: SendResult,
    calling_ae: str,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
) -> Any:
    """The established association, or None (``sendable`` failed in ``result``)."""
    from pynetdicom import AE, evt

    quiet_pynetdicom()
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
    connected: list[bool] = []
    handlers = [*scu_handlers(), (evt.EVT_CONN_OPEN, lambda _e: connected.append(True))]
    t0 = time.monotonic()
    try:
        assoc = ae.associate(
            dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args, evt_handlers=handlers
        )
    except (OSError, ssl.SSLError) as e:
        for f in sendable:
            result.fail(f, f"cannot connect to {dest.host}:{dest.port}: {describe(e)}")
        return None
    if not assoc.is_established:
        if assoc.is_rejected:
            why = rejection_text(assoc, dest.ae_title)
        elif not connected:
            why = connect_failure(str(dest.host), int(dest.port), ae.connection_timeout or 10.0)
        elif time.monotonic() - t0 >= timeout or not assoc.is_aborted:
            # pynetdicom aborts itself when its ACSE timeout runs out
            why = f"no answer to the association request within {timeout:g} s (timeout)"
        else:
            why = f"association aborted by {dest.ae_title} during negotiation"
        for f in sendable:
            result.fail(f, why)
        return None
    return assoc


def _store_all(
    assoc: Any, dest: DimseDestination, sendable: list[str], result: SendResult, timeout: float
) -> None:
    """C-STORE each file; after a lost association the rest fail (to be retried)."""
    for i, f in enumerate(sendable):
        if not assoc.is_established or assoc.is_aborted:
            for rest in sendable[i:]:
                result.fail(rest, "association ended before this instance was sent")
            break
        try:
            status = assoc.send_c_store(f)
        except ValueError as e:  # no accepted presentation context for it
            result.fail(f, f"not accepted by {dest.ae_title}: {describe(e)}", permanent=True)
            continue
        except Exception as e:  # file vanished or cannot be decoded
            result.fail(f, f"cannot send: {describe(e)}", permanent=True)
            continue
        code, text = _status_text(status, assoc, timeout)
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
