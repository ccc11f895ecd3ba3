"""C-STORE requests read straight off the socket, in the association's DUL thread.

pynetdicom turns every P-DATA-TF PDU into several objects (PDU, P-DATA primitive, state
machine event, DIMSE fragments, a pydicom command set, a C-STORE primitive, an event) and
copies a 512 KiB slice five times on its way from the socket to the handler: about 60 % of
the CPU the node spent per received instance. While an association is in data transfer
(Sta6), :class:`StoreReader` reads P-DATA-TF PDUs itself, one presentation data value at a
time, with the data set fragments of a C-STORE request going from the kernel straight into
one reusable buffer. A complete request goes to the store handler (which answers only after
the instance is durable) and the C-STORE response is written to the socket from here.

Everything else keeps pynetdicom's exact behaviour: other PDU types (release, abort,
anything malformed), and every message that is not a C-STORE request with a data set on an
accepted presentation context (C-ECHO, a C-STORE without data set, a context we never
accepted...) are handed to pynetdicom as the very PDU bytes it would have read itself.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any, Protocol

from dicom_node.error_text import describe
from dicom_node.receive.dimse_codec import _PDATA, parse_command

log = logging.getLogger(__name__)

C_STORE_RQ = 0x0001
NO_DATA_SET = 0x0101
_COMMAND, _LAST = 0x01, 0x02

# (status, error comment) for one request: context id, command, data set bytes
StoreHandler = Callable[[int, dict[str, Any], memoryview], tuple[int, str]]


class Link(Protocol):
    """The association's side of the reader (:mod:`dicom_node.receive.fastpath` gives it
    for pynetdicom): the socket to read from and what to do with what was read."""

    def recv_into(self, view: memoryview, n: int) -> int: ...

    def hand_over(self, raw: bytes) -> None:
        """A whole PDU for pynetdicom to handle, exactly as it came."""

    def closed(self) -> None:
        """The transport closed (PS3.8 Evt17)."""

    def invalid(self) -> None:
        """An invalid PDU: abort (PS3.8 Evt19, AA-1 / AA-8)."""


class ProtocolError(Exception):
    """The peer broke the message structure of PS3.8 9.3.1 / PS3.7 E.2: abort."""


class StoreReader:
    """Reads the PDUs of one association while it is in data transfer (see module doc).

    ``link`` is the association (see :class:`Link`); ``accepted`` maps the
    accepted presentation context ids to anything truthy; ``handle`` stores one request
    and returns its status; ``respond`` sends a C-STORE response PDU (bytes)."""

    IDLE, COMMAND, OURS, THEIRS = range(4)

    def __init__(
        self,
        link: Link,
        accepted: Callable[[int], bool],
        handle: StoreHandler,
        respond: Callable[[int, bytes], None],
        encode_response: Callable[[dict[str, Any], int, str], bytes],
        max_pdu: int = 0,
    ) -> None:
        self.link = link
        self.max_pdu = max_pdu  # what we told the peer (0: no limit)
        self.accepted = accepted
        self.handle = handle
        self.respond = respond
        self.encode_response = encode_response
        self.state = self.IDLE
        self.command = bytearray()
        self.held: list[bytes] = []  # raw PDV items pynetdicom may still have to see
        self.context_id = 0
        self.request: dict[str, Any] = {}
        self.buf = bytearray(1 << 16)
        self.size = 0
        self._hdr = bytearray(6)

    # ------------------------------------------------------------------ socket
    def _recv_into(self, view: memoryview) -> None:
        got, want = 0, len(view)
        while got < want:
            n = self.link.recv_into(view[got:], want - got)
            if not n:
                raise ConnectionError("connection closed inside a PDU")
            got += n

    def _recv(self, n: int) -> bytes:
        b = bytearray(n)
        self._recv_into(memoryview(b))
        return bytes(b)

    # ------------------------------------------------------------------ PDUs
    def read_pdu(self) -> None:
        """Read one PDU and act on it (called when the socket is readable)."""
        hdr = self._hdr
        try:
            self._recv_into(memoryview(hdr))
            pdu_type, _, length = struct.unpack(">BBL", hdr)
            if pdu_type != _PDATA:
                self._to_pynetdicom(bytes(hdr), length)
                return
            if self.max_pdu and length > self.max_pdu:
                # PS3.8 9.3.1: never longer than the maximum length we negotiated; a peer
                # that ignores it must not make us allocate whatever it claims
                raise ProtocolError(f"P-DATA-TF PDU of {length} bytes exceeds {self.max_pdu}")
            theirs = self._read_pdata(length)
        except (OSError, ConnectionError, TimeoutError) as e:
            log.debug("transport closed while reading a PDU: %s", e)
            self.link.closed()
            return
        except ProtocolError as e:
            log.warning("aborting the association: %s", e)
            self.state = self.IDLE
            self.link.invalid()
            return
        if theirs:
            body = b"".join(theirs)
            self.link.hand_over(struct.pack(">BBL", _PDATA, 0, len(body)) + body)

    def _to_pynetdicom(self, hdr: bytes, length: int) -> None:
        """A PDU pynetdicom handles: read its rest and decode it as pynetdicom would."""
        if hdr[0] not in (0x01, 0x02, 0x03, 0x05, 0x06, 0x07):
            log.warning("unknown PDU type 0x%02X received", hdr[0])
            self.link.invalid()
            return
        self.link.hand_over(hdr + self._recv(length))

    def _read_pdata(self, length: int) -> list[bytes]:
        """Walk the presentation data values of one P-DATA-TF PDU; return the raw items
        that belong to pynetdicom."""
        theirs: list[bytes] = []
        left = length
        item = bytearray(6)
        while left:
            if left < 6:
                raise ProtocolError("P-DATA-TF PDU ends inside a PDV item header")
            self._recv_into(memoryview(item))
            n, context_id, control = struct.unpack(">LBB", item)
            if n < 2 or n + 4 > left:
                raise ProtocolError(f"PDV item length {n} does not fit its PDU")
            left -= 4 + n
            is_command, last = control & _COMMAND, control & _LAST
            if self.state == self.OURS:
                if is_command or context_id != self.context_id:
                    raise ProtocolError("C-STORE data set interrupted by another message")
                self._read_data_set(n - 2)
                if last:
                    self._complete()
                continue
            raw = bytes(item) + self._recv(n - 2)
            if self.state == self.THEIRS:
                theirs.append(raw)
                if last and not is_command:
                    self.state = self.IDLE
                continue
            if not is_command:  # a data set without a command: pynetdicom's to judge
                theirs.append(raw)
                continue
            self.state = self.COMMAND
            self.command += raw[6:]
            self.held.append(raw)
            if last:
                theirs += self._command_complete(context_id)
        return theirs

    def _command_complete(self, context_id: int) -> list[bytes]:
        held, self.held = self.held, []
        command, self.command = bytes(self.command), bytearray()
        try:
            req = parse_command(command)
        except (ValueError, UnicodeDecodeError):
            req = {}
        has_data = req.get("CommandDataSetType", NO_DATA_SET) != NO_DATA_SET
        if (
            req.get("CommandField") == C_STORE_RQ
            and has_data
            and "MessageID" in req
            and "AffectedSOPClassUID" in req
            and "AffectedSOPInstanceUID" in req
            and self.accepted(context_id)
        ):
            self.state, self.context_id, self.request, self.size = self.OURS, context_id, req, 0
            return []
        self.state = self.THEIRS if has_data else self.IDLE
        return held

    def _read_data_set(self, n: int) -> None:
        end = self.size + n
        if end > len(self.buf):
            self.buf.extend(bytes(max(end - len(self.buf), len(self.buf))))
        with memoryview(self.buf) as view:
            self._recv_into(view[self.size : end])
        self.size = end

    def _complete(self) -> None:
        req, context_id = self.request, self.context_id
        self.state, self.request = self.IDLE, {}
        with memoryview(self.buf) as view, view[: self.size] as body:
            try:
                status, comment = self.handle(context_id, req, body)
            except Exception as e:  # never Success on an unexpected failure
                comment = describe(e, sop_uid=req.get("AffectedSOPInstanceUID"))
                log.error("C-STORE failed: %s", comment)
                status = 0xA700
        if len(self.buf) > (64 << 20) and self.size < (16 << 20):
            self.buf = bytearray(1 << 16)  # one huge instance does not pin its buffer
        self.size = 0
        self.respond(context_id, self.encode_response(req, status, comment))
