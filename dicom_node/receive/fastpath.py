"""The pynetdicom fast path: the one module that uses pynetdicom's private internals.

Per received C-STORE, pynetdicom spends most of the node's CPU in its own machinery (PDU,
primitive, event and dataset objects, five copies of a 512 KiB slice, 1 ms sleeps in two
loops). ``bench/receive.py`` measures durable receive with and without this module
(``node.fast_receive``); see bench/README.md, "Receive". What it changes, without changing
any protocol behaviour:

* ``AssociationSocket.recv`` (class-wide) reads a PDU straight into one buffer;
* per accepted association: the association loop waits on the message queue instead of
  sleeping 1 ms (:func:`run_reactor`), C-STORE responses are encoded directly, and the
  DUL loop idles in ``select`` on the socket and a wake-up pipe; in data transfer (Sta6)
  C-STORE requests are read by :class:`dicom_node.receive.store_path.StoreReader`;
* per SCU association that serves no requests (export, echo): no message is taken off
  the queue by pynetdicom's loop (see :func:`run_reactor`); :func:`install` adds that
  handler to :data:`dicom_node.net.SCU_HANDLERS`, so exporters need not know of this module.

:func:`install` patches once per process and only on the exact pynetdicom release this was
written against (:data:`PYNETDICOM`, pinned in pyproject.toml); on any other it logs a
warning and pynetdicom stays stock. :data:`TARGETS` lists every pynetdicom name used here
with its signature; tests/test_fastpath.py checks them against the installed release.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import select
import threading
import time
from typing import Any

import pynetdicom
from pynetdicom import evt
from pynetdicom.pdu_primitives import P_DATA

from dicom_node import net
from dicom_node.receive.store_path import StoreReader
from dicom_node.receive.wire import encode_pdata, encode_store_rsp

log = logging.getLogger(__name__)

#: the pynetdicom release whose internals this module was written against
PYNETDICOM = "3.0.4"

#: every pynetdicom callable used or replaced here: (module, class, name) -> its parameters
TARGETS: dict[tuple[str, str, str], str] = {
    ("transport", "AssociationSocket", "recv"): "(self, nr_bytes)",
    ("association", "Association", "_run_reactor"): "(self)",
    ("association", "Association", "_serve_request"): "(self, msg, context_id)",
    ("association", "Association", "kill"): "(self)",
    ("association", "Association", "abort"): "(self, block)",
    ("acse", "ACSE", "is_release_requested"): "(self)",
    ("acse", "ACSE", "is_aborted"): "(self, abort_type)",
    ("acse", "ACSE", "send_release"): "(self, is_response)",
    ("dimse", "DIMSEServiceProvider", "send_msg"): "(self, primitive, context_id)",
    ("dul", "DULServiceProvider", "send_pdu"): "(self, primitive)",
    ("dul", "DULServiceProvider", "receive_pdu"): "(self, wait, timeout)",
    ("dul", "DULServiceProvider", "_send"): "(self, pdu)",
    ("dul", "DULServiceProvider", "kill_dul"): "(self)",
    ("dul", "DULServiceProvider", "run_reactor"): "(self)",
    ("dul", "DULServiceProvider", "_decode_pdu"): "(self, bytestream)",
    ("dul", "DULServiceProvider", "_process_recv_primitive"): "(self)",
    ("dul", "DULServiceProvider", "_is_transport_event"): "(self)",
    ("dul", "DULServiceProvider", "idle_timer_expired"): "(self)",
}
#: instance attributes read or replaced, by the object that has them
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "Association": (
        "_accepted_cx",
        "_dul_ready",
        "_is_paused",
        "_kill",
        "_reactor_checkpoint",
        "_run_reactor",
        "acse",
        "dimse",
        "dul",
        "is_aborted",
        "is_established",
        "is_released",
    ),
    "DULServiceProvider": (
        "_idle_timer",
        "_kill_thread",
        "_recv_pdu",
        "_run_loop_delay",
        "_target",
        "artim_timer",
        "event_queue",
        "socket",
        "state_machine",
    ),
    "DIMSEServiceProvider": ("msg_queue",),
}
#: the association state in which C-STORE requests are read by our reader (PS3.8 Sta6)
DATA_TRANSFER = "Sta6"
_DUL_DELAY = 0.0002  # pause after a failed select
_DUL_IDLE = 0.02  # longest idle wait: timers (ARTIM, idle timeout) are checked this often

_installed = False


def supported() -> bool:
    return pynetdicom.__version__ == PYNETDICOM


def installed() -> bool:
    return _installed


def install() -> bool:
    """Patch pynetdicom once per process; False (and a warning) when its version is not
    :data:`PYNETDICOM`: then everything runs on pynetdicom's stock path."""
    global _installed
    if _installed:
        return True
    if not supported():
        log.warning(
            "pynetdicom %s is not %s: the receive fast path is off (stock pynetdicom)",
            pynetdicom.__version__,
            PYNETDICOM,
        )
        return False
    from pynetdicom import _config, transport

    # pynetdicom's "standard" event logging formats every DIMSE message and PDU even when
    # its logger is quiet; our own log lines say what happened, once per event
    _config.LOG_HANDLER_LEVEL = "none"
    transport.AssociationSocket.recv = _fast_recv  # type: ignore[method-assign]
    net.SCU_HANDLERS.append((evt.EVT_CONN_OPEN, _scu_without_request_serving))
    _installed = True
    return True


def scp_handlers(ingestor: Any, max_pdu: int) -> list[Any]:
    """Event handlers that put an accepted association on the fast path (none when it is
    not installed)."""
    if not _installed:
        return []
    return [(evt.EVT_CONN_OPEN, tune_association, [ingestor, max_pdu])]


def _scu_without_request_serving(event: Any) -> None:
    event.assoc._run_reactor = functools.partial(run_reactor, event.assoc, serve_requests=False)


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
                elif reader is not None and self.state_machine.current_state == DATA_TRANSFER:
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
                and dul.state_machine.current_state == DATA_TRANSFER
            ):
                sock.send(encode_pdata(context_id, cmd))  # errors become Evt17
                return
    pdata = P_DATA()
    pdata.presentation_data_value_list.append([context_id, b"\x03" + cmd])
    dul.send_pdu(pdata)


def tune_association(event: Any, ingestor: Any, max_pdu: int) -> None:
    """Per accepted association (before its threads start): the message-driven reactor,
    direct C-STORE responses, the select-based DUL loop and its C-STORE reader."""
    assoc = event.assoc
    dul = assoc.dul
    assoc._run_reactor = functools.partial(run_reactor, assoc, serve_requests=True)
    assoc.dimse.send_msg = _fast_send_msg.__get__(assoc.dimse)
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
    dul._srnode_reader = _store_reader(assoc, ingestor, max_pdu)
    dul._target = _fast_dul_reactor.__get__(dul)


class _DulLink:
    """What the C-STORE reader needs from pynetdicom's DUL (a store_path.Link)."""

    def __init__(self, dul: Any) -> None:
        self.dul = dul

    def recv_into(self, view: memoryview, n: int) -> int:
        return self.dul.socket.socket.recv_into(view, n)

    def hand_over(self, raw: bytes) -> None:
        try:
            pdu, event = self.dul._decode_pdu(bytearray(raw))
        except Exception as e:
            log.warning("unable to decode a received PDU: %s", e)
            self.invalid()
            return
        self.dul.event_queue.put(event)
        self.dul._recv_pdu.put(pdu)

    def closed(self) -> None:
        self.dul.event_queue.put("Evt17")

    def invalid(self) -> None:
        self.dul.event_queue.put("Evt19")


def _store_reader(assoc: Any, ingestor: Any, max_pdu: int) -> StoreReader:
    """The C-STORE reader of one association (its DUL thread calls it)."""
    from dicom_node.receive.wire import WireMeta

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
        st = ingestor.store_encoded(meta, body, calling, "dimse")
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
        _DulLink(assoc.dul),
        accepted,
        handle,
        lambda context_id, cmd: send_command(assoc.dul, context_id, cmd),
        encode,
        max_pdu=max_pdu,
    )


_REACTOR_WAIT = 0.005  # longest wait for a decoded message; timers are checked this often


def run_reactor(assoc: Any, serve_requests: bool) -> None:
    """pynetdicom's association loop (``Association._run_reactor``), without its fixed 1 ms
    sleep, installed per association (``assoc._run_reactor = partial(run_reactor, ...)``).

    ``serve_requests=True`` (our SCP): wait on the message queue and serve each request as
    soon as it is decoded. ``serve_requests=False`` (our C-STORE SCU): never take messages
    off the queue. pynetdicom's requestor loop polls that queue too and, when a response
    arrives within microseconds (loopback, TCP_NODELAY), can take a C-STORE response meant
    for ``send_c_store``, which then waits out the DIMSE timeout ("Received unexpected
    C-STORE service message"). An SCU that sends only C-STORE requests has nothing to serve.
    """

    assoc._is_paused = False
    msg_queue = assoc.dimse.msg_queue
    while not assoc._kill:
        assoc._is_paused = True
        assoc._reactor_checkpoint.wait()
        assoc._is_paused = False
        if serve_requests:
            try:
                context_id, msg = msg_queue.get(timeout=_REACTOR_WAIT)
            except queue.Empty:
                context_id, msg = None, None
            if msg:
                assoc._serve_request(msg, context_id)
        else:
            time.sleep(_REACTOR_WAIT)
        if assoc.is_established and assoc.acse.is_release_requested():
            assoc.acse.send_release(is_response=True)
            assoc.is_released = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_RELEASED, {})
            assoc.kill()
            return
        if assoc.acse.is_aborted():
            assoc.dul.receive_pdu(wait=False)
            assoc.is_aborted = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_ABORTED, {})
            assoc.kill()
            return
        if not assoc.dul.is_alive():
            assoc.kill()
            return
        if assoc.dul.idle_timer_expired():
            log.warning("network timeout: aborting the association")
            assoc.abort()
            assoc.kill()
            return
