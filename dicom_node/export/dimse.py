"""The DIMSE exporter: C-STORE over one association per batch (pynetdicom, TCP_NODELAY on).

Presentation contexts are built from the files' SOP classes and the transfer syntax each
file is to go in (the destination's ``transfer_syntax``, else the file's own): one context
per such syntax, and always one offering Explicit and Implicit VR Little Endian, which any
Storage SCP accepts. A file whose syntax the peer refused goes uncompressed (decoded
first), so a peer without JPEG 2000 still gets every image. TLS when the destination asks.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.config_routing import DimseDestination
from dicom_node.derive.encoding import encode, syntax_name
from dicom_node.error_text import describe
from dicom_node.export.result import SendResult
from dicom_node.implementation import identify
from dicom_node.net import quiet_pynetdicom, scu_handlers

log = logging.getLogger(__name__)

#: The fallback context: any Storage SCP accepts one of these (PS3.5 10.1).
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
    wanted: dict[str, tuple[UID, UID]],
) -> tuple[list[tuple[UID, list[UID]]], list[str]]:
    """Presentation contexts (abstract syntax, transfer syntaxes) for files wanted as
    (SOP class, transfer syntax): per SOP class one context per wanted syntax that is not
    plain little endian, then the uncompressed fallback. The paths whose fallback did not
    fit into 128 contexts come back second."""
    by_class: dict[UID, list[UID]] = {}
    for sop_class, ts in wanted.values():
        tss = by_class.setdefault(sop_class, [])
        if ts not in tss and ts not in _UNCOMPRESSED:
            tss.append(ts)
    contexts: list[tuple[UID, list[UID]]] = []
    for sop_class, tss in by_class.items():
        contexts.extend((sop_class, [ts]) for ts in tss)
        contexts.append((sop_class, list(_UNCOMPRESSED)))
    kept = contexts[:_MAX_CONTEXTS]
    fallback = {c for c, tss in kept if tss == list(_UNCOMPRESSED)}
    overflow = [p for p, (c, _) in wanted.items() if c not in fallback]
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
    timeout: float | None = None,
) -> SendResult:
    """One association: the files' contexts, then one C-STORE per file. ``timeout``
    (default: the destination's) bounds each wait for the peer."""
    result = SendResult()
    if not dest.host or not dest.port or not dest.ae_title:
        for f in files:
            result.fail(f, f"destination {dest.name}: ae_title, host and port are required")
        return result
    wanted, contexts, sendable = _plan(files, result, dest.transfer_syntax)
    if not sendable:
        return result
    timeout = dest.timeout if timeout is None else timeout
    assoc = _associate(dest, contexts, sendable, result, calling_ae, ssl_context, timeout)
    if assoc is None:
        return result
    try:
        _store_all(assoc, dest, sendable, wanted, result, timeout)
    finally:
        if assoc.is_established:
            assoc.release()
    return result


def _plan(
    files: list[str], result: SendResult, syntax: str | None
) -> tuple[dict[str, tuple[UID, UID, UID]], list[tuple[UID, list[UID]]], list[str]]:
    """Per file (SOP class, its transfer syntax, the syntax it is to go in), the
    presentation contexts, and the files that can go (the others are failed in
    ``result``)."""
    wanted: dict[str, tuple[UID, UID, UID]] = {}
    for f in files:
        try:
            meta = read_file_meta_info(f)
            ts = UID(meta.TransferSyntaxUID)
            wanted[f] = (UID(meta.MediaStorageSOPClassUID), ts, UID(syntax) if syntax else ts)
        except Exception as e:  # missing, unreadable or not DICOM Part 10
            result.fail(f, f"cannot read file meta: {describe(e)}", permanent=True)
    contexts, overflow = _contexts_for({f: (c, w) for f, (c, _, w) in wanted.items()})
    for f in overflow:
        result.fail(f, "more than 128 presentation contexts in one batch")
    return wanted, contexts, [f for f in files if f in wanted and f not in set(overflow)]


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
    ae = identify(AE(ae_title=calling_ae))
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = min(timeout, dest.connect_timeout)
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


def _accepted(assoc: Any) -> dict[UID, set[UID]]:
    """SOP class -> the transfer syntaxes the peer accepted for it."""
    out: dict[UID, set[UID]] = {}
    for cx in assoc.accepted_contexts:
        out.setdefault(UID(cx.abstract_syntax), set()).add(UID(cx.transfer_syntax[0]))
    return out


def _payload(
    path: str, have: UID, want: UID, accepted: set[UID], dest: DimseDestination, said: set
) -> str | Dataset | None:
    """What to C-STORE for ``path``: the file itself when it already is in the syntax
    that goes, else the dataset re-encoded; None when the peer accepted no context."""
    if want in accepted:
        go = want
    elif accepted & set(_UNCOMPRESSED):
        go = ExplicitVRLittleEndian
        if want not in _UNCOMPRESSED and want not in said:
            said.add(want)
            log.warning(
                "destination %s did not accept %s: sending explicit VR little endian",
                dest.name,
                syntax_name(want),
            )
    else:
        return None
    if go == have or (go in _UNCOMPRESSED and have in _UNCOMPRESSED and have in accepted):
        return path
    return encode(dcmread(path), go)


def _store_all(
    assoc: Any,
    dest: DimseDestination,
    sendable: list[str],
    wanted: dict[str, tuple[UID, UID, UID]],
    result: SendResult,
    timeout: float,
) -> None:
    """C-STORE each file; after a lost association the rest fail (to be retried)."""
    accepted = _accepted(assoc)
    said: set[UID] = set()
    for i, f in enumerate(sendable):
        if not assoc.is_established or assoc.is_aborted:
            for rest in sendable[i:]:
                result.fail(rest, "association ended before this instance was sent")
            break
        sop_class, have, want = wanted[f]
        try:
            payload = _payload(f, have, want, accepted.get(sop_class, set()), dest, said)
            if payload is None:
                result.fail(f, f"not accepted by {dest.ae_title}: {sop_class.name}", permanent=True)
                continue
            status = assoc.send_c_store(payload)
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
