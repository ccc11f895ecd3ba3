"""TCP details of DICOM sockets.

pynetdicom never sets TCP_NODELAY; with Nagle's algorithm on, small C-STORE exchanges
wait for delayed ACKs and run ~100x slower on these machines (../shared/FACTS.md). We set
it on every socket pynetdicom opens (SCP accept and SCU connect), and tell dcmtk tools and
Orthanc to do the same with ``TCP_NODELAY=1`` in their environment.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

from pynetdicom import transport

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
