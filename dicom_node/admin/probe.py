"""The test action of a destination: C-ECHO for DIMSE, a QIDO-RS ping for STOW-RS."""

from __future__ import annotations

import time
from typing import Any


def test_destination(dest: Any, calling_ae: str, timeout: float = 5.0) -> dict[str, Any]:
    """``{"ok": bool, "kind", "detail", "ms"}``; never raises for a peer that is down."""
    t0 = time.monotonic()
    try:
        ok, detail = (_echo if dest.kind == "dimse" else _qido)(dest, calling_ae, timeout)
    except Exception as e:  # a broken peer is an answer, not an error
        ok, detail = False, f"{type(e).__name__}"
    return {
        "ok": ok,
        "kind": dest.kind,
        "detail": detail,
        "ms": round((time.monotonic() - t0) * 1000, 1),
    }


def _echo(dest: Any, calling_ae: str, timeout: float) -> tuple[bool, str]:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Verification

    from dicom_node.net import install_tcp_nodelay, scu_without_request_serving

    install_tcp_nodelay()
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeout
    ae.connection_timeout = timeout
    ae.add_requested_context(Verification)
    tls = None
    if dest.tls:
        from dicom_node.export.send import _tls_context

        tls = (_tls_context(dest), dest.host)
    assoc = ae.associate(
        dest.host,
        dest.port,
        ae_title=dest.ae_title,
        tls_args=tls,
        evt_handlers=[(evt.EVT_CONN_OPEN, scu_without_request_serving)],
    )
    if not assoc.is_established:
        if assoc.is_rejected:
            return False, "association rejected"
        return False, "no association (connection refused, timed out or aborted)"
    try:
        st = assoc.send_c_echo()
    finally:
        assoc.release()
    code = getattr(st, "Status", None)
    if code != 0:
        return False, f"C-ECHO status {code}"
    return True, "C-ECHO succeeded"


def _qido(dest: Any, calling_ae: str, timeout: float) -> tuple[bool, str]:
    import requests

    url = dest.url.rstrip("/") + "/studies"
    verify: Any = str(dest.tls_ca) if getattr(dest, "tls_ca", None) else True
    r = requests.get(
        url,
        params={"limit": "1"},
        headers={"Accept": "application/dicom+json"},
        timeout=timeout,
        verify=verify,
        allow_redirects=False,
    )
    ok = r.status_code in (200, 204)
    return ok, f"QIDO-RS {r.status_code}"
