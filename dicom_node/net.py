"""TCP details of DICOM sockets, with pynetdicom's public events (and the socket from
:func:`dicom_node.compat.association_socket`).

pynetdicom never sets TCP_NODELAY; with Nagle's algorithm on, small C-STORE exchanges
wait for delayed ACKs and run ~100x slower. :func:`nodelay` sets it on every association's
socket when the connection opens (SCP accept and SCU connect), and dcmtk tools and Orthanc
are told to do the same with ``TCP_NODELAY=1`` in their environment (:func:`nodelay_env`).
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

from pynetdicom import evt

from dicom_node.compat import association_socket


def nodelay(event: Any) -> None:
    """EVT_CONN_OPEN handler: TCP_NODELAY on the association's socket."""
    sock = association_socket(event.assoc)
    if sock is not None:
        with contextlib.suppress(OSError):  # not a TCP socket (e.g. already closed)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


#: extra handlers for SCU associations that serve no requests; the fast path adds its own
#: when it is installed (dicom_node.receive.fastpath.install)
SCU_HANDLERS: list[Any] = []


def scu_handlers(serves_requests: bool = False) -> list[Any]:
    """Event handlers for an association srnode requests. ``serves_requests``: the peer
    sends requests on it (C-GET's C-STOREs); otherwise (C-STORE, C-ECHO) the handlers in
    :data:`SCU_HANDLERS` come too."""
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, nodelay)]
    return handlers if serves_requests else handlers + SCU_HANDLERS


def quiet_pynetdicom() -> None:
    """pynetdicom logs 12-17 ERROR lines (with tracebacks) for one refused connection or
    aborted association; srnode logs one line of its own per failed association, naming
    what happened, so pynetdicom's logger only passes CRITICAL."""
    import logging

    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)


def nodelay_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for dcmtk tools and Orthanc with Nagle's algorithm off."""
    out = dict(os.environ if env is None else env)
    out["TCP_NODELAY"] = "1"
    return out
