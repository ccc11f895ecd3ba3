"""The pynetdicom fast path: with :mod:`~dicom_node.receive.fastpath_dul` (the DUL loop and
the C-STORE reader's link) and :mod:`~dicom_node.receive.fastpath_reactor` (the association
loop), the only modules that use pynetdicom's private internals (every other internal the
node relies on is in :mod:`dicom_node.compat`). This one holds their table and installs them.

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
in the three modules with its signature; tests/test_fastpath.py checks them against the
installed release.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import pynetdicom
from pynetdicom import evt

from dicom_node import net
from dicom_node.receive.fastpath_dul import DATA_TRANSFER, tune_association
from dicom_node.receive.fastpath_reactor import run_reactor

log = logging.getLogger(__name__)

__all__ = ["DATA_TRANSFER", "install", "installed", "run_reactor", "scp_handlers", "supported"]

#: the pynetdicom release whose internals the fast path was written against
PYNETDICOM = "3.0.4"

#: every pynetdicom callable the fast path uses or replaces: (module, class, name) -> its
#: parameters
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
