"""TCP details of DICOM sockets.

pynetdicom never sets TCP_NODELAY; with Nagle's algorithm on, small C-STORE exchanges
wait for delayed ACKs and run ~100x slower on these machines (../shared/FACTS.md). We set
it on every socket pynetdicom opens (SCP accept and SCU connect), and tell dcmtk tools and
Orthanc to do the same with ``TCP_NODELAY=1`` in their environment.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import socket
import time
from typing import Any

from pynetdicom import transport

log = logging.getLogger(__name__)

_installed = False


def _set_nodelay(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not a TCP socket (e.g. already closed)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def install_tcp_nodelay() -> None:
    """Make every pynetdicom socket set TCP_NODELAY. Idempotent, process-wide."""
    global _installed
    if _installed:
        return
    original_get_request = transport.AssociationServer.get_request
    original_create_socket = transport.AssociationSocket._create_socket

    def get_request(self: Any) -> tuple[socket.socket, Any]:
        client_socket, address = original_get_request(self)
        _set_nodelay(client_socket)
        return client_socket, address

    def create_socket(self: Any, address: Any) -> socket.socket:
        sock = original_create_socket(self, address)
        _set_nodelay(sock)
        return sock

    transport.AssociationServer.get_request = get_request  # type: ignore[method-assign]
    transport.AssociationSocket._create_socket = create_socket  # type: ignore[method-assign]
    _installed = True


def nodelay_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for dcmtk tools and Orthanc with Nagle's algorithm off."""
    out = dict(os.environ if env is None else env)
    out["TCP_NODELAY"] = "1"
    return out


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
    from pynetdicom import evt

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


def scu_without_request_serving(event: Any) -> None:
    """EVT_CONN_OPEN handler for SCU associations that serve no requests from the peer
    (C-STORE, C-ECHO; not C-GET): see :func:`run_reactor`."""
    event.assoc._run_reactor = functools.partial(run_reactor, event.assoc, serve_requests=False)
