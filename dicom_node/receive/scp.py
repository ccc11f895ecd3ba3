"""The Storage SCP: C-ECHO and C-STORE for the image types srnode enhances.

pynetdicom negotiates each association (allowlist, presentation contexts, TLS) and handles
release and abort. Each C-STORE's data set, exactly as it came on the wire, goes with its
file meta to :meth:`dicom_node.receive.ingest.Ingestor.store_encoded`, which writes and
fsyncs it and records it in the database before Success is answered; any failure gives an
error status. With ``node.fast_receive`` (and the pinned pynetdicom release), C-STORE
requests are read off the socket by the fast path (:mod:`dicom_node.receive.fastpath`); otherwise,
and for every other message (C-ECHO…), pynetdicom's stock handlers serve them
(``_on_store`` is the stock C-STORE handler, same ingest).

Calling AE titles are checked at association: only those in the config's ``[[allow]]``
or added with ``srnode aet add`` (optionally bound to a host) are accepted; any other is
rejected with A-ASSOCIATE-RJ "calling AE title not recognised" and audited.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.sop_class import Verification

from dicom_node.compat import OwnedServer
from dicom_node.config import Settings
from dicom_node.error_text import describe
from dicom_node.implementation import identify
from dicom_node.net import nodelay, quiet_pynetdicom
from dicom_node.receive import fastpath
from dicom_node.receive.access import Allowlist, NodeAE
from dicom_node.receive.header_scan import WireMeta
from dicom_node.receive.ingest import Ingestor
from dicom_node.receive.store_status import CANNOT_UNDERSTAND, OUT_OF_RESOURCES
from dicom_node.receive.wire import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES

log = logging.getLogger(__name__)


def _status(st: int, reason: str = "") -> Any:
    if int(st) == 0:
        return 0x0000
    rsp = Dataset()
    rsp.Status = int(st)
    if reason:
        rsp.ErrorComment = reason[:64]
    return rsp


class _SharedPortServer(OwnedServer):
    """Several receiver processes on one port (node.receivers > 1, SO_REUSEPORT): the
    kernel spreads incoming connections over them."""

    def server_bind(self) -> None:
        if hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class StorageSCP:
    """The node's listening AE. ``start()`` returns at once; ``stop()`` drains."""

    def __init__(
        self,
        settings: Settings,
        ingestor: Ingestor,
        *,
        dynamic_aes: Callable[[], Iterable[tuple[str, str]]] | None = None,
        on_reject: Callable[[str, str | None], None] | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.fast = settings.node.fast_receive and fastpath.install()
        self.reuse_port = reuse_port
        self.settings = settings
        self.ingestor = ingestor
        n = settings.node
        ae = identify(NodeAE(ae_title=n.ae_title))
        ae.allowlist = Allowlist(((a.ae_title, a.host) for a in settings.allow), dynamic_aes)
        ae.on_reject = on_reject
        ae.reserve = ingestor.reserve
        quiet_pynetdicom()
        ae.maximum_associations = n.max_associations
        ae.maximum_pdu_size = n.max_pdu
        ae.acse_timeout = n.acse_timeout
        ae.dimse_timeout = n.dimse_timeout
        ae.network_timeout = n.network_timeout
        ae.require_called_aet = False
        ae.add_supported_context(Verification)
        for uid in STORAGE_SOP_CLASSES.values():
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        self.ae = ae
        self.server: Any = None

    # ------------------------------------------------------------- handlers
    def _on_echo(self, event: Any) -> int:
        return 0x0000

    def _on_store(self, event: Any) -> Any:
        try:
            calling = str(event.assoc.requestor.ae_title).strip()
            req = event.request
            # the file meta from the request itself (pynetdicom's event.file_meta builds a
            # pydicom FileMetaDataset element by element: ~0.3 ms an instance)
            meta = WireMeta(
                MediaStorageSOPClassUID=str(req.AffectedSOPClassUID),
                MediaStorageSOPInstanceUID=str(req.AffectedSOPInstanceUID),
                TransferSyntaxUID=str(event.context.transfer_syntax),
                SourceApplicationEntityTitle=calling,
            )
            body = req.DataSet.getvalue()
        except Exception as e:  # pragma: no cover - pynetdicom gave us something odd
            log.warning("C-STORE without a readable data set: %s", describe(e))
            return _status(CANNOT_UNDERSTAND, "no data set")
        try:
            st = self.ingestor.store_encoded(meta, body, calling, "dimse")
        except Exception as e:  # never Success on an unexpected failure
            why = describe(e, sop_uid=meta.get("MediaStorageSOPInstanceUID"))
            log.error("C-STORE failed: %s", why)
            return _status(OUT_OF_RESOURCES, why)
        return _status(st, getattr(st, "reason", ""))

    def _on_aborted(self, event: Any) -> None:
        a = event.assoc
        log.warning(
            "association from %s (%s:%s) aborted",
            a.requestor.ae_title,
            a.requestor.address,
            a.requestor.port,
        )

    def _on_accepted(self, event: Any) -> None:
        a = event.assoc
        log.info(
            "association accepted: %s from %s:%s",
            a.requestor.ae_title,
            a.requestor.address,
            a.requestor.port,
        )

    # ------------------------------------------------------------- lifecycle
    def ssl_context(self) -> ssl.SSLContext | None:
        n = self.settings.node
        if not (n.tls_cert and n.tls_key):
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(n.tls_cert), str(n.tls_key))
        if n.tls_ca:
            ctx.load_verify_locations(str(n.tls_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def start(self) -> tuple[str, int]:
        n = self.settings.node
        handlers = [
            (evt.EVT_CONN_OPEN, nodelay),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_ABORTED, self._on_aborted),
        ]
        if self.fast:
            handlers += fastpath.scp_handlers(self.ingestor, int(self.ae.maximum_pdu_size or 0))
        self.server = self.ae.make_server(
            (n.host, n.port),
            evt_handlers=handlers,
            ssl_context=self.ssl_context(),
            server_class=_SharedPortServer if self.reuse_port else OwnedServer,
        )
        threading.Thread(
            target=self.server.serve_forever, name=f"srnode-scp-{n.port}", daemon=True
        ).start()
        host, port = self.server.server_address[:2]
        log.info("storage SCP %s listening on %s:%s", n.ae_title, host, port)
        return host, port

    def active_associations(self) -> list[Any]:
        if self.server is None:
            return []
        return [a for a in self.server.active_associations if a.is_alive()]

    def stop(self, drain: float = 30.0) -> None:
        """Stop accepting; let in-flight associations finish (up to ``drain`` s), then abort."""
        if self.server is None:
            return
        server, self.server = self.server, None
        server.shutdown()
        # wait for established associations; a bare connection that never asked is dropped
        active = [a for a in server.active_associations if a.is_alive() and a.is_established]
        for a in server.active_associations:
            if a.is_alive() and not a.is_established:
                a.abort()
        deadline = time.monotonic() + drain
        while active and time.monotonic() < deadline:
            active = [a for a in active if a.is_alive()]
            time.sleep(0.05)
        for a in active:
            log.warning("aborting association from %s after %.0f s", a.requestor.ae_title, drain)
            a.abort()
        log.info("storage SCP stopped")
