"""Is a destination answering again? C-ECHO for DIMSE, one HTTP request for DICOMweb.

While exports to a destination wait for their next attempt, the scheduler asks this
every ``probe_every`` seconds; as soon as it answers, the waiting exports are due at once
(:meth:`dicom_node.jobs.states.Jobs.retry_destination_now`) instead of sitting out their
backoff.
"""

from __future__ import annotations

import logging
from typing import Any

from dicom_node.net import quiet_pynetdicom, scu_handlers

log = logging.getLogger(__name__)


def answers(dest: Any, calling_ae: str, timeout: float = 5.0) -> bool:
    """True when ``dest`` answers now (C-ECHO Success; any HTTP response below 500)."""
    try:
        if dest.kind == "stow":
            return _http_answers(str(dest.url or ""), timeout)
        return _echo(dest, calling_ae, timeout)
    except Exception as e:  # a probe never fails the scheduler
        log.debug("probe of %s failed: %s", dest.name, type(e).__name__)
        return False


def _echo(dest: Any, calling_ae: str, timeout: float) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    if not (dest.host and dest.port and dest.ae_title):
        return False
    quiet_pynetdicom()
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    ae.add_requested_context(Verification)
    tls_args = None
    if dest.tls:
        from dicom_node.export.dimse import _tls_context

        tls_args = (_tls_context(dest), dest.host)
    assoc = ae.associate(
        dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args, evt_handlers=scu_handlers()
    )
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return getattr(status, "Status", None) == 0x0000
    finally:
        assoc.release()


def _http_answers(url: str, timeout: float) -> bool:
    import requests

    if not url:
        return False
    try:
        r = requests.get(url.rstrip("/") + "/studies?limit=1", timeout=timeout)
    except requests.RequestException:
        return False
    return r.status_code < 500
