"""The fast path's association loop (installed per association by
:mod:`dicom_node.receive.fastpath`, written against the pynetdicom release it names):
pynetdicom's ``Association._run_reactor`` without its fixed 1 ms sleep."""

from __future__ import annotations

import logging
import queue
import time
from typing import Any

from pynetdicom import evt

log = logging.getLogger(__name__)

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
            _ended(assoc, evt.EVT_RELEASED)
            return
        if assoc.acse.is_aborted():
            assoc.dul.receive_pdu(wait=False)
            assoc.is_aborted = True
            _ended(assoc, evt.EVT_ABORTED)
            return
        if not assoc.dul.is_alive():
            assoc.kill()
            return
        if assoc.dul.idle_timer_expired():
            log.warning("network timeout: aborting the association")
            assoc.abort()
            assoc.kill()
            return


def _ended(assoc: Any, event: Any) -> None:
    """The association was released or aborted: say so and stop its threads."""
    assoc.is_established = False
    evt.trigger(assoc, event, {})
    assoc.kill()
