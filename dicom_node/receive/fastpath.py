"""The pynetdicom fast path of the storage SCP (private pynetdicom 3.0 internals).

Three costs per C-STORE are removed here, without changing any protocol behaviour:
 * ``AssociationSocket.recv`` reads a PDU in 4 KiB ``recv`` calls, each extending a
   bytearray (128 calls for a 512 KiB slice): read straight into one buffer instead;
 * the acceptor's reactor sleeps 1 ms before looking for each decoded message: wait on
   the message queue instead, so a message is served as soon as it is complete;
 * the DUL reactor sleeps 1 ms when idle before sending our response: 0.2 ms.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import select
import socket
import threading
import time
from typing import Any

from pynetdicom.pdu_primitives import P_DATA

from dicom_node.net import run_reactor
from dicom_node.receive.store_path import encode_pdata
from dicom_node.receive.wire import encode_store_rsp

log = logging.getLogger(__name__)

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


def tune_association(event: Any, scp: Any = None) -> None:
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
