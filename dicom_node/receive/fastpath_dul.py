"""The fast path's DUL side (installed per association by
:func:`dicom_node.receive.fastpath.tune_association`, written against the pynetdicom release
:data:`dicom_node.receive.fastpath.PYNETDICOM`): the DUL loop idling in ``select`` on the
socket and a wake-up pipe, C-STORE responses encoded and sent directly, and the link through
which :class:`dicom_node.receive.store_path.StoreReader` reads C-STORE requests in data
transfer."""

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

from pynetdicom.pdu_primitives import P_DATA

from dicom_node.receive.dimse_codec import encode_pdata, encode_store_rsp
from dicom_node.receive.fastpath_reactor import run_reactor
from dicom_node.receive.store_path import StoreReader

log = logging.getLogger(__name__)

#: the association state in which C-STORE requests are read by our reader (PS3.8 Sta6)
DATA_TRANSFER = "Sta6"
_DUL_DELAY = 0.0002  # pause after a failed select
_DUL_IDLE = 0.02  # longest idle wait: timers (ARTIM, idle timeout) are checked this often


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
    from dicom_node.receive.header_scan import WireMeta

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
