"""The C-STORE reader of the receive path, on a socket pair with hand-made PDUs.

The end-to-end behaviour (dcmtk storescu against `srnode serve`) is in the SCP tests;
these pin the protocol details: fragments across PDV items and PDUs, messages handed to
pynetdicom byte for byte, responses, and the aborts."""

from __future__ import annotations

import queue
import socket
import struct
import threading

import pytest

from dicom_node.receive.dimse_codec import encode_pdata, encode_store_rsp, parse_command
from dicom_node.receive.store_path import StoreReader

CT = "1.2.840.10008.5.1.4.1.1.2"
ECHO = "1.2.840.10008.1.1"


def _ui(tag: int, value: str) -> bytes:
    v = value.encode()
    v += b"\0" * (len(v) % 2)
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(v)) + v


def _us(tag: int, value: int) -> bytes:
    return struct.pack("<HHLH", tag >> 16, tag & 0xFFFF, 2, value)


def command(field: int, msg_id: int, sop_class: str, sop: str | None, data: bool) -> bytes:
    body = _ui(0x00000002, sop_class) + _us(0x00000100, field) + _us(0x00000110, msg_id)
    body += _us(0x00000800, 0x0000 if data else 0x0101)
    if sop is not None:
        body += _ui(0x00001000, sop)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def pdv(context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">LBB", len(data) + 2, context_id, control) + data


def pdu(*items: bytes) -> bytes:
    body = b"".join(items)
    return struct.pack(">BBL", 4, 0, len(body)) + body


class FakeLink:
    """The association side of the reader: what it handed over, and the events it raised."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.event_queue: queue.Queue = queue.Queue()
        self.decoded: list[bytes] = []

    def recv_into(self, view: memoryview, n: int) -> int:
        return self.sock.recv_into(view, n)

    def hand_over(self, raw: bytes) -> None:
        self.decoded.append(bytes(raw))
        self.event_queue.put("Evt10" if raw[0] == 4 else "Evt12")

    def closed(self) -> None:
        self.event_queue.put("Evt17")

    def invalid(self) -> None:
        self.event_queue.put("Evt19")


@pytest.fixture
def wire():
    a, b = socket.socketpair()
    dul = FakeLink(a)
    stored: list[tuple[int, dict, bytes]] = []
    sent: list[tuple[int, bytes]] = []

    def handle(cx, req, body):
        stored.append((cx, req, bytes(body)))
        return (0, "") if body[:1] != b"X" else (0xC000, "cannot understand")

    reader = StoreReader(
        dul,
        lambda cx: cx in (1, 3),
        handle,
        lambda cx, cmd: sent.append((cx, cmd)),
        lambda req, st, c: encode_store_rsp(
            req["MessageID"], req["AffectedSOPClassUID"], req["AffectedSOPInstanceUID"], st, c
        ),
    )

    def feed(data: bytes, pdus: int = 1) -> None:
        t = threading.Thread(target=b.sendall, args=(data,))
        t.start()
        for _ in range(pdus):
            reader.read_pdu()
        t.join()

    yield reader, dul, feed, stored, sent, b
    a.close()
    b.close()


def test_parse_command_reads_a_store_request():
    req = parse_command(command(0x0001, 7, CT, "1.2.3.4", True))
    assert req == {
        "AffectedSOPClassUID": CT,
        "CommandField": 1,
        "MessageID": 7,
        "CommandDataSetType": 0,
        "AffectedSOPInstanceUID": "1.2.3.4",
    }
    with pytest.raises(ValueError):
        parse_command(command(0x0001, 7, CT, "1.2.3.4", True)[:-3])


def test_store_across_items_and_pdus_is_stored_once_and_answered(wire):
    reader, dul, feed, stored, sent, _ = wire
    data = bytes(range(256)) * 40
    cmd = command(0x0001, 5, CT, "1.2.3.4.5", True)
    feed(
        pdu(pdv(1, 0x01, cmd[:10]))
        + pdu(pdv(1, 0x03, cmd[10:]), pdv(1, 0x00, data[:100]))
        + pdu(pdv(1, 0x00, data[100:5000]))
        + pdu(pdv(1, 0x02, data[5000:])),
        pdus=4,
    )
    assert [(cx, req["MessageID"], body) for cx, req, body in stored] == [(1, 5, data)]
    assert sent == [(1, encode_store_rsp(5, CT, "1.2.3.4.5", 0))]
    assert dul.decoded == [] and dul.event_queue.empty()
    # the buffer is reused: a second, smaller instance is exactly itself
    feed(pdu(pdv(3, 0x03, command(0x0001, 6, CT, "1.2.3.4.6", True)), pdv(3, 0x02, b"ab")))
    assert stored[-1][0] == 3 and stored[-1][2] == b"ab"
    assert sent[-1] == (3, encode_store_rsp(6, CT, "1.2.3.4.6", 0))


def test_handler_status_and_comment_go_into_the_response(wire):
    reader, dul, feed, stored, sent, _ = wire
    feed(pdu(pdv(1, 0x03, command(0x0001, 9, CT, "1.2.9", True)), pdv(1, 0x02, b"XY")))
    assert sent == [(1, encode_store_rsp(9, CT, "1.2.9", 0xC000, "cannot understand"))]


def test_echo_and_unaccepted_contexts_go_to_pynetdicom_byte_for_byte(wire):
    reader, dul, feed, stored, sent, _ = wire
    echo = pdu(pdv(1, 0x03, command(0x0030, 1, ECHO, None, False)))
    feed(echo)
    assert dul.decoded == [echo] and dul.event_queue.get_nowait() == "Evt10"
    # a C-STORE on a context we never accepted: its command and its data set
    cmd = pdu(pdv(2, 0x03, command(0x0001, 2, CT, "1.2.2", True)))
    data = pdu(pdv(2, 0x02, b"zz"))
    feed(cmd + data, pdus=2)
    assert dul.decoded[1:] == [cmd, data] and stored == [] and sent == []
    # then our own request again
    feed(pdu(pdv(1, 0x03, command(0x0001, 3, CT, "1.2.3", True)), pdv(1, 0x02, b"ok")))
    assert stored[-1][2] == b"ok"


def test_release_request_is_handed_over(wire):
    reader, dul, feed, stored, sent, _ = wire
    release = struct.pack(">BBL", 5, 0, 4) + b"\0\0\0\0"
    feed(release)
    assert dul.decoded == [release] and dul.event_queue.get_nowait() == "Evt12"


@pytest.mark.parametrize(
    "stream",
    [
        # a command in the middle of a data set
        pdu(pdv(1, 0x03, command(0x0001, 4, CT, "1.2.4", True)), pdv(1, 0x01, b"\0\0")),
        # a PDV item longer than its PDU
        struct.pack(">BBL", 4, 0, 8) + struct.pack(">LBB", 50, 1, 3) + b"\0\0",
    ],
    ids=["command-inside-data-set", "item-overruns-pdu"],
)
def test_broken_message_structure_aborts(wire, stream):
    reader, dul, feed, stored, sent, _ = wire
    feed(stream)
    assert dul.event_queue.get_nowait() == "Evt19"
    assert stored == [] and sent == []


def test_pdu_longer_than_our_maximum_aborts_before_reading_it(wire):
    reader, dul, feed, stored, sent, _ = wire
    reader.max_pdu = 1024
    header = struct.pack(">BBL", 4, 0, 1 << 30)  # claims 1 GiB
    feed(header)
    assert dul.event_queue.get_nowait() == "Evt19"
    assert len(reader.buf) == 1 << 16 and stored == []


def test_connection_closed_inside_a_pdu_is_transport_closed(wire):
    reader, dul, feed, stored, sent, peer = wire
    peer.sendall(pdu(pdv(1, 0x03, command(0x0001, 4, CT, "1.2.4", True)))[:9])
    peer.shutdown(socket.SHUT_WR)
    reader.read_pdu()
    assert dul.event_queue.get_nowait() == "Evt17"
    assert stored == [] and sent == []


def test_encode_pdata_is_one_last_command_fragment():
    raw = encode_pdata(3, b"abcd")
    assert raw == pdu(pdv(3, 0x03, b"abcd"))
