"""Who may associate: calling AE titles from the config's ``[[allow]]`` and the database
(``srnode aet add``), optionally bound to a host; refusals are logged and audited."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pynetdicom.association import Association

from dicom_node.compat import NegotiatingAE
from dicom_node.metrics import ASSOCIATIONS_REJECTED

log = logging.getLogger(__name__)

REJECT_REASON = "calling AE title not recognised"


def _resolve(host: str) -> set[str]:
    try:
        ipaddress.ip_address(host)
        return {host}
    except ValueError:
        pass
    try:
        return {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


class Allowlist:
    """Calling AE titles (optionally bound to a host) from the config and the database."""

    def __init__(
        self,
        static: Iterable[tuple[str, str | None]],
        dynamic: Callable[[], Iterable[tuple[str, str]]] | None = None,
        refresh: float = 5.0,
    ) -> None:
        self._static = [(ae.strip(), host or None) for ae, host in static]
        self._dynamic = dynamic
        self._refresh = refresh
        self._cache: list[tuple[str, str | None]] = []
        self._loaded = 0.0
        self._lock = threading.Lock()
        self._hosts: dict[str, tuple[float, set[str]]] = {}

    def entries(self) -> list[tuple[str, str | None]]:
        if self._dynamic is not None and time.monotonic() - self._loaded > self._refresh:
            with self._lock:
                try:
                    self._cache = [(a.strip(), h or None) for a, h in self._dynamic()]
                except Exception:  # keep the last good list if the DB hiccups
                    log.exception("could not read AE titles from the database")
                self._loaded = time.monotonic()
        return self._static + self._cache

    def _host_ips(self, host: str) -> set[str]:
        hit = self._hosts.get(host)
        if hit is None or time.monotonic() - hit[0] > 60:
            hit = (time.monotonic(), _resolve(host))
            self._hosts[host] = hit
        return hit[1]

    def allows(self, ae_title: str, address: str | None) -> bool:
        ae_title = ae_title.strip()
        for ae, host in self.entries():
            if ae != ae_title:
                continue
            if host is None or host in ("*", ""):
                return True
            if address is not None and (address == host or address in self._host_ips(host)):
                return True
        return False


_VERIFICATION = "1.2.840.10008.1.1"


def _echo_only(assoc: Association) -> bool:
    try:
        cxs = assoc.requestor.requested_contexts
        return bool(cxs) and all(str(c.abstract_syntax) == _VERIFICATION for c in cxs)
    except Exception:
        return False


class NodeAE(NegotiatingAE):
    """An AE whose calling-AE check also looks at the peer's address and audits refusals,
    and that takes no new association below the disk reserve (decided per association:
    :class:`dicom_node.compat.NegotiatingAE`)."""

    allowlist: Allowlist
    on_reject: Callable[[str, str | None], None] | None = None
    #: the node's disk reserve (receive.reserve.DiskReserve); below it, no new association
    reserve: Any = None

    def association_limit(self, assoc: Association, configured: int) -> int:
        """0 while the disk is below the reserve, so the association is rejected
        (transient, local limit exceeded) and the sender retries later. Associations that
        only ask for Verification (C-ECHO) are still accepted: monitoring sees the node
        alive."""
        r = self.reserve
        if r is None or not r.low() or _echo_only(assoc):
            return configured
        if not getattr(assoc, "_srnode_full", False):
            assoc._srnode_full = True  # type: ignore[attr-defined]
            log.warning(
                "association from %s refused: free disk space below storage.min_free_gb",
                assoc.requestor.address,
            )
        return 0

    def accepts(self, assoc: Association, calling_ae: str) -> bool:
        """The allowlist's answer for this calling AE title and address, decided (and
        a refusal logged and audited) once per association."""
        decided = getattr(assoc, "_srnode_allowed", None)
        if decided is not None:
            return bool(decided)
        address = assoc.requestor.address
        decided = self.allowlist.allows(calling_ae, address)
        assoc._srnode_allowed = decided  # type: ignore[attr-defined]
        if not decided:
            ASSOCIATIONS_REJECTED.inc()
            log.warning("association rejected: %s from %s (%s)", calling_ae, address, REJECT_REASON)
            if self.on_reject is not None:
                try:
                    self.on_reject(calling_ae, address)
                except Exception:
                    log.exception("could not audit a rejected association")
        return decided
