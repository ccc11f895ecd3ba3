"""Does a destination answer? C-ECHO for DIMSE, one QIDO-RS request for DICOMweb.

One implementation for two callers: while exports to a destination wait for their next
attempt, the scheduler asks :func:`answers` every ``probe_every`` seconds (as soon as it
answers, the waiting exports are due at once: :meth:`dicom_node.store.jobs.Jobs.
retry_destination_now`); the console's and the API's test action shows :func:`check`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from dicom_node.implementation import identify
from dicom_node.net import quiet_pynetdicom, scu_handlers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    """``answered``: the peer is there (C-ECHO Success, any HTTP answer below 500);
    ``ok``: the test passed (C-ECHO Success, QIDO-RS 200/204); ``detail`` in words."""

    answered: bool
    ok: bool
    detail: str
    ms: float


def check(dest: Any, calling_ae: str, timeout: float = 5.0) -> Probe:
    """Ask ``dest`` now. Never raises for a peer that is down: that is an answer too."""
    t0 = time.monotonic()
    try:
        if dest.kind == "stow":
            answered, ok, detail = _qido(dest, timeout)
        else:
            answered, ok, detail = _echo(dest, calling_ae, timeout)
    except Exception as e:  # a broken peer is an answer, not an error
        answered, ok, detail = False, False, type(e).__name__
    return Probe(answered, ok, detail, round((time.monotonic() - t0) * 1000, 1))


def answers(dest: Any, calling_ae: str, timeout: float = 5.0) -> bool:
    """True when ``dest`` answers now (the scheduler's probe)."""
    p = check(dest, calling_ae, timeout)
    if not p.answered:
        log.debug("probe of %s: %s", dest.name, p.detail)
    return p.answered


def _echo(dest: Any, calling_ae: str, timeout: float) -> tuple[bool, bool, str]:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from dicom_node.export.dimse import _tls_context, connect_failure, rejection_text

    if not (dest.host and dest.port and dest.ae_title):
        return False, False, "ae_title, host and port are needed for a C-ECHO"
    quiet_pynetdicom()
    ae = identify(AE(ae_title=calling_ae))
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    ae.add_requested_context(Verification)
    tls_args = (_tls_context(dest), dest.host) if dest.tls else None
    assoc = ae.associate(
        dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args, evt_handlers=scu_handlers()
    )
    if not assoc.is_established:
        if assoc.is_rejected:
            return True, False, rejection_text(assoc, dest.ae_title)
        return False, False, connect_failure(str(dest.host), int(dest.port), timeout)
    try:
        code = getattr(assoc.send_c_echo(), "Status", None)
    finally:
        assoc.release()
    if code != 0x0000:
        return True, False, "no C-ECHO response" if code is None else f"C-ECHO status {code}"
    return True, True, "C-ECHO succeeded"


def _qido(dest: Any, timeout: float) -> tuple[bool, bool, str]:
    import requests

    url = str(dest.url or "")
    if not url:
        return False, False, "no url"
    verify: Any = str(dest.tls_ca) if getattr(dest, "tls_ca", None) else True
    try:
        r = requests.get(
            url.rstrip("/") + "/studies",
            params={"limit": "1"},
            headers={"Accept": "application/dicom+json"},
            timeout=timeout,
            verify=verify,
            allow_redirects=False,
        )
    except requests.RequestException as e:
        return False, False, f"no answer from {url}: {type(e).__name__}"
    return r.status_code < 500, r.status_code in (200, 204), f"QIDO-RS {r.status_code}"
