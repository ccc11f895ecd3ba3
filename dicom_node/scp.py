"""The Storage SCP: C-ECHO and C-STORE for the image types srnode enhances.

pynetdicom negotiates each association (allowlist, presentation contexts, TLS) and handles
release and abort. In data transfer, C-STORE requests are read off the socket by
:class:`dicom_node.store_path.StoreReader` in the association's DUL thread and the data set,
exactly as it came on the wire, goes with its file meta to
:meth:`dicom_node.ingest.Ingestor.store_encoded`, which writes and fsyncs it and records it
in the database before Success is answered. Any failure gives an error status. Other
messages (C-ECHO…) take pynetdicom's own path and handlers (``_on_store`` is that path's
C-STORE handler, same ingest).

Calling AE titles are checked at association: only those in the config's ``[[allow]]``
or added with ``srnode aet add`` (optionally bound to a host) are accepted; any other is
rejected with A-ASSOCIATE-RJ "calling AE title not recognised" and audited.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import os
import queue
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,  # noqa: F401  (documented as not accepted)
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import Verification

from dicom_node.config import Settings
from dicom_node.ingest import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, Ingestor, WireMeta
from dicom_node.net import install_tcp_nodelay, run_reactor
from dicom_node.store_path import StoreReader, encode_pdata

log = logging.getLogger(__name__)

STORAGE_SOP_CLASSES: dict[str, str] = {
    "CT Image Storage": "1.2.840.10008.5.1.4.1.1.2",
    "Enhanced CT Image Storage": "1.2.840.10008.5.1.4.1.1.2.1",
    "Legacy Converted Enhanced CT Image Storage": "1.2.840.10008.5.1.4.1.1.2.2",
    "MR Image Storage": "1.2.840.10008.5.1.4.1.1.4",
    "Enhanced MR Image Storage": "1.2.840.10008.5.1.4.1.1.4.1",
    "Legacy Converted Enhanced MR Image Storage": "1.2.840.10008.5.1.4.1.1.4.4",
    "Computed Radiography Image Storage": "1.2.840.10008.5.1.4.1.1.1",
    "Digital X-Ray Image Storage - For Presentation": "1.2.840.10008.5.1.4.1.1.1.1",
    "Digital X-Ray Image Storage - For Processing": "1.2.840.10008.5.1.4.1.1.1.1.1",
    "Digital Mammography X-Ray Image Storage - For Presentation": "1.2.840.10008.5.1.4.1.1.1.2",
    "Digital Mammography X-Ray Image Storage - For Processing": "1.2.840.10008.5.1.4.1.1.1.2.1",
    "X-Ray Angiographic Image Storage": "1.2.840.10008.5.1.4.1.1.12.1",
    "Enhanced XA Image Storage": "1.2.840.10008.5.1.4.1.1.12.1.1",
    "Secondary Capture Image Storage": "1.2.840.10008.5.1.4.1.1.7",
    "Multi-frame Single Bit Secondary Capture Image Storage": "1.2.840.10008.5.1.4.1.1.7.1",
    "Multi-frame Grayscale Byte Secondary Capture Image Storage": "1.2.840.10008.5.1.4.1.1.7.2",
    "Multi-frame Grayscale Word Secondary Capture Image Storage": "1.2.840.10008.5.1.4.1.1.7.3",
    "Multi-frame True Color Secondary Capture Image Storage": "1.2.840.10008.5.1.4.1.1.7.4",
}

TRANSFER_SYNTAXES: list[UID] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]

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


class _NodeAE(AE):
    """An AE whose calling-AE check also looks at the peer's address and audits refusals.

    pynetdicom reads ``require_calling_aet`` while negotiating in the association's own
    thread, so the property can see who is asking.
    """

    allowlist: Allowlist
    on_reject: Callable[[str, str | None], None] | None = None

    @property  # type: ignore[override]
    def require_calling_aet(self) -> list[str]:
        assoc = threading.current_thread()
        if not isinstance(assoc, Association) or assoc.requestor.primitive is None:
            return []
        decided = getattr(assoc, "_srnode_allowed", None)
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        if decided is None:
            address = assoc.requestor.address
            decided = self.allowlist.allows(calling, address)
            assoc._srnode_allowed = decided  # type: ignore[attr-defined]
            if not decided:
                log.warning(
                    "association rejected: %s from %s (%s)", calling, address, REJECT_REASON
                )
                if self.on_reject is not None:
                    try:
                        self.on_reject(calling, address)
                    except Exception:
                        log.exception("could not audit a rejected association")
        # an empty string can never equal a calling AE title: pynetdicom then rejects
        # with result 0x01, source 0x01, reason 0x03 (calling AE title not recognised)
        return [calling] if decided else [""]

    @require_calling_aet.setter
    def require_calling_aet(self, value: list[str]) -> None:  # pragma: no cover - unused
        pass


def _status(st: int, reason: str = "") -> Any:
    if int(st) == 0:
        return 0x0000
    rsp = Dataset()
    rsp.Status = int(st)
    if reason:
        rsp.ErrorComment = reason[:64]
    return rsp


# ---------------------------------------------------------------------------------------
# pynetdicom throughput (FACTS.md: a minimal pynetdicom SCP gets ~0.3-0.5x storescp).
# Three costs per C-STORE are removed here, without changing any protocol behaviour:
#  * ``AssociationSocket.recv`` reads a PDU in 4 KiB ``recv`` calls, each extending a
#    bytearray (128 calls for a 512 KiB slice): read straight into one buffer instead;
#  * the acceptor's reactor sleeps 1 ms before looking for each decoded message: wait on
#    the message queue instead, so a message is served as soon as it is complete;
#  * the DUL reactor sleeps 1 ms when idle before sending our response: 0.2 ms.
_DUL_DELAY = 0.0002
_tuned = False


def _fast_recv(self: Any, nr_bytes: int) -> bytearray:
    buf = bytearray(nr_bytes)
    view = memoryview(buf)
    got = 0
    sock = self.socket
    while got < nr_bytes:
        n = sock.recv_into(view[got:], nr_bytes - got)
        if not n:  # connection closed: what arrived so far (pynetdicom's contract)
            view.release()
            del buf[got:]
            return buf
        got += n
    view.release()
    return buf


def install_fast_receive() -> None:
    """Patch pynetdicom's socket reads once per process (SCP and SCU both gain)."""
    global _tuned
    if _tuned:
        return
    from pynetdicom import _config, transport

    original_bind = transport.AssociationServer.server_bind

    def server_bind(self: Any) -> None:
        # several receiver processes share the port (node.receivers > 1): the kernel
        # spreads incoming connections over them
        if getattr(self.ae, "_srnode_reuse_port", False) and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        original_bind(self)

    transport.AssociationServer.server_bind = server_bind  # type: ignore[method-assign]

    # pynetdicom's "standard" event logging formats every DIMSE message and PDU even when
    # its logger is quiet; our own log lines say what happened, once per event
    _config.LOG_HANDLER_LEVEL = "none"
    if hasattr(transport.AssociationSocket, "recv"):
        transport.AssociationSocket.recv = _fast_recv  # type: ignore[method-assign]
    _tuned = True


def _wake(dul: Any) -> None:
    with contextlib.suppress(OSError):  # pipe full (already awake) or closed
        os.write(dul._srnode_wake[1], b"\0")


def _fast_dul_reactor(self: Any) -> None:
    """pynetdicom's DUL loop (``DULServiceProvider.run_reactor``), idling in ``select`` on
    the socket and a wake-up pipe instead of polling every millisecond: incoming PDUs and
    our own responses are handled at once, and an idle association costs no CPU."""
    from pynetdicom.pdu import A_ABORT_RQ

    wake_r, wake_w = self._srnode_wake
    reader = getattr(self, "_srnode_reader", None)
    self._idle_timer.start()
    idle = False
    try:
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                sock = getattr(self.socket, "socket", None)
                pending = sock is not None and hasattr(sock, "pending") and sock.pending()
                if not pending:
                    waits = [wake_r] + ([sock] if sock is not None else [])
                    try:
                        ready, _, _ = select.select(waits, [], [], _DUL_IDLE)
                    except (OSError, ValueError):
                        ready = []
                        time.sleep(_DUL_DELAY)
                    if wake_r in ready:
                        with contextlib.suppress(OSError):
                            os.read(wake_r, 4096)
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif reader is not None and self.state_machine.current_state == "Sta6":
                    # data transfer: C-STORE requests are read and served by our reader
                    if self.socket is not None and self.socket.ready:
                        reader.read_pdu()
                        self._idle_timer.restart()
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                log.warning("DUL error, aborting association: %s", exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                with contextlib.suppress(Exception):
                    self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False
    finally:
        for fd in (wake_r, wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _ui(tag: int, value: str) -> bytes:
    v = value.encode("ascii")
    if len(v) % 2:
        v += b"\x00"
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(v)) + v


def _us(tag: int, value: int) -> bytes:
    return struct.pack("<HHLH", tag >> 16, tag & 0xFFFF, 2, value)


def encode_store_rsp(
    msg_id: int, sop_class: str, sop_instance: str, status: int, comment: str = ""
) -> bytes:
    """A C-STORE-RSP command set (PS3.7 9.3.1.2), Implicit VR Little Endian."""
    body = b"".join(
        (
            _ui(0x00000002, sop_class),
            _us(0x00000100, 0x8001),
            _us(0x00000120, msg_id),
            _us(0x00000800, 0x0101),
            _us(0x00000900, status),
        )
    )
    if comment:
        c = comment.encode("ascii", "replace")[:64]
        if len(c) % 2:
            c += b" "
        body += struct.pack("<HHL", 0x0000, 0x0902, len(c)) + c
    body += _ui(0x00001000, sop_instance)
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(body)) + body


def _fast_send_msg(self: Any, primitive: Any, context_id: int) -> None:
    """``DIMSEServiceProvider.send_msg`` for our C-STORE responses: the command set is
    encoded directly (pynetdicom builds and encodes a pydicom Dataset twice: ~1 ms);
    everything else goes the usual way."""
    from pynetdicom.dimse_primitives import C_STORE

    if (
        type(primitive) is C_STORE
        and primitive.MessageIDBeingRespondedTo is not None
        and isinstance(primitive.Status, int)
        and not getattr(primitive, "OffendingElement", None)
    ):
        comment = getattr(primitive, "ErrorComment", None) or ""
        cmd = encode_store_rsp(
            int(primitive.MessageIDBeingRespondedTo),
            str(primitive.AffectedSOPClassUID),
            str(primitive.AffectedSOPInstanceUID),
            int(primitive.Status),
            str(comment),
        )
        send_command(self.dul, context_id, cmd)
        return
    type(self).send_msg(self, primitive, context_id)


def send_command(dul: Any, context_id: int, cmd: bytes) -> None:
    """Send a whole command set (no data set) as one P-DATA-TF PDU.

    Straight onto the socket from the calling thread (no hand-off to the DUL thread and
    back), only in data transfer (Sta6) and only when nothing queued before is still
    unsent, so responses keep their order; the lock keeps the DUL thread's own sends
    (abort) from interleaving. Otherwise through pynetdicom's queue."""
    lock = getattr(dul, "_srnode_lock", None)
    if lock is not None:
        with lock:
            sock = dul.socket
            if (
                dul._srnode_pending == 0
                and sock is not None
                and dul.state_machine.current_state == "Sta6"
            ):
                sock.send(encode_pdata(context_id, cmd))  # errors become Evt17
                return
    pdata = P_DATA()
    pdata.presentation_data_value_list.append([context_id, b"\x03" + cmd])
    dul.send_pdu(pdata)


_DUL_IDLE = 0.02  # longest idle wait: timers (ARTIM, idle timeout) are checked this often


def _tune_association(event: Any, scp: StorageSCP | None = None) -> None:
    """Per accepted association (before its threads start): the message-driven reactor,
    the select-based DUL loop and, with ``scp``, its C-STORE reader (``store_path``)."""
    assoc = event.assoc
    dul = assoc.dul
    if hasattr(assoc, "_run_reactor") and hasattr(assoc, "_serve_request"):
        assoc._run_reactor = functools.partial(run_reactor, assoc, serve_requests=True)
    if _FAST_RSP and hasattr(assoc.dimse, "send_msg"):
        assoc.dimse.send_msg = _fast_send_msg.__get__(assoc.dimse)
    if not _FAST_DUL or not hasattr(dul, "_target") or hasattr(dul, "_srnode_wake"):
        with contextlib.suppress(AttributeError):
            dul._run_loop_delay = _DUL_DELAY
        return
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    dul._srnode_wake = (r, w)
    original_send_pdu = dul.send_pdu
    original_send = dul._send
    lock = threading.Lock()

    def send_pdu(primitive: Any) -> None:
        with lock:
            dul._srnode_pending += 1
        original_send_pdu(primitive)
        _wake(dul)

    def _send(pdu: Any) -> None:
        with lock:
            try:
                original_send(pdu)
            finally:
                dul._srnode_pending = max(0, dul._srnode_pending - 1)

    dul._srnode_pending = 0
    dul._send = _send
    dul._srnode_lock = lock

    original_kill = dul.kill_dul

    def kill_dul() -> None:
        original_kill()
        _wake(dul)

    dul.send_pdu = send_pdu
    dul.kill_dul = kill_dul
    if scp is not None and _FAST_STORE:
        dul._srnode_reader = scp.store_reader(assoc)
    dul._target = _fast_dul_reactor.__get__(dul)


_FAST_DUL = True
_FAST_RSP = True
_FAST_STORE = True


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
        install_tcp_nodelay()
        install_fast_receive()
        self.settings = settings
        self.ingestor = ingestor
        n = settings.node
        ae = _NodeAE(ae_title=n.ae_title)
        ae.allowlist = Allowlist(((a.ae_title, a.host) for a in settings.allow), dynamic_aes)
        ae.on_reject = on_reject
        ae.maximum_associations = n.max_associations
        ae.maximum_pdu_size = n.max_pdu
        ae.acse_timeout = n.acse_timeout
        ae.dimse_timeout = n.dimse_timeout
        ae.network_timeout = n.network_timeout
        ae.require_called_aet = False
        ae._srnode_reuse_port = reuse_port  # type: ignore[attr-defined]
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
            log.warning("C-STORE without a readable data set: %s", e)
            return _status(CANNOT_UNDERSTAND, "no data set")
        try:
            st = self.ingestor.store_encoded(meta, body, calling, "dimse")
        except Exception as e:  # never Success on an unexpected failure
            log.exception("C-STORE failed")
            return _status(OUT_OF_RESOURCES, f"{type(e).__name__}: {e}")
        return _status(st, getattr(st, "reason", ""))

    def store_reader(self, assoc: Association) -> StoreReader:
        """The C-STORE reader of one association (its DUL thread calls it)."""

        def accepted(context_id: int) -> bool:
            return context_id in assoc._accepted_cx

        def handle(context_id: int, req: dict[str, Any], body: memoryview) -> tuple[int, str]:
            calling = str(assoc.requestor.ae_title).strip()
            meta = WireMeta(
                MediaStorageSOPClassUID=req["AffectedSOPClassUID"],
                MediaStorageSOPInstanceUID=req["AffectedSOPInstanceUID"],
                TransferSyntaxUID=str(assoc._accepted_cx[context_id].transfer_syntax[0]),
                SourceApplicationEntityTitle=calling,
            )
            st = self.ingestor.store_encoded(meta, body, calling, "dimse")
            return int(st), ("" if int(st) == 0 else getattr(st, "reason", ""))

        def encode(req: dict[str, Any], status: int, comment: str) -> bytes:
            return encode_store_rsp(
                req["MessageID"],
                req["AffectedSOPClassUID"],
                req["AffectedSOPInstanceUID"],
                status,
                comment,
            )

        return StoreReader(
            assoc.dul,
            accepted,
            handle,
            lambda context_id, cmd: send_command(assoc.dul, context_id, cmd),
            encode,
            max_pdu=int(self.ae.maximum_pdu_size or 0),
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
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_CONN_OPEN, _tune_association, [self]),
        ]
        self.server = self.ae.start_server(
            (n.host, n.port), block=False, evt_handlers=handlers, ssl_context=self.ssl_context()
        )
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


# --------------------------------------------------------------------------- receivers
def run_receiver(settings_json: str, stop: Any, ready: Any) -> None:
    """An extra receiver process (``node.receivers > 1``): its own SCP on the shared port
    (SO_REUSEPORT), its own database connections and GIL. Stops when ``stop`` is set or
    the parent process is gone; in-flight associations finish first."""
    import multiprocessing
    import signal as _signal

    from dicom_node.db import Database
    from dicom_node.spool import Spool

    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # the parent decides when we stop
    _signal.signal(_signal.SIGTERM, lambda *_: stop.set())
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[receiver]: %(message)s"
    )
    for noisy in ("pynetdicom", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings.model_validate_json(settings_json)
    db = Database.from_settings(settings)
    spool = Spool(settings.node.data_dir / "spool", fsync=settings.spool.fsync)
    scp = StorageSCP(
        settings,
        Ingestor(db, spool),
        dynamic_aes=db.list_ae_titles,
        on_reject=lambda ae, host: db.audit(
            "association_rejected", ae_title=ae, host=host, detail="calling AE title not recognised"
        ),
        reuse_port=True,
    )
    scp.start()
    ready.set()
    parent = multiprocessing.parent_process()
    try:
        while not stop.wait(0.5):
            if parent is not None and not parent.is_alive():
                break
    finally:
        scp.stop(drain=settings.node.drain_timeout)
        db.close()
