"""Sending derived instances to a destination, through the exporter of its ``kind``.

:func:`send` makes one attempt at a batch of files and reports, per file, what went
through and what did not; the caller (the worker) keeps the per-destination attempt count
and waits :func:`next_retry_delay` seconds before trying the failed files again. Nothing
here sleeps or retries on its own, so a destination that is down never blocks a worker.

An exporter is a function with the :class:`Exporter` signature, found by the destination's
``kind`` in :data:`EXPORTERS`: :mod:`dicom_node.export.dimse` (C-STORE) and
:mod:`dicom_node.export.stow` (STOW-RS). A new kind is a ``Destination`` class in the
config, a module with its ``send`` and one line here.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from dicom_node.config_routing import Destination
from dicom_node.export import dimse, stow
from dicom_node.export.result import SendResult

log = logging.getLogger(__name__)


class Exporter(Protocol):
    def __call__(
        self,
        dest: Any,
        files: list[str],
        calling_ae: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | None = None,
    ) -> SendResult: ...


EXPORTERS: dict[str, Exporter] = {"dimse": dimse.send, "stow": stow.send}

__all__ = ["EXPORTERS", "Exporter", "SendResult", "next_retry_delay", "paths_of", "send"]


def next_retry_delay(attempt: int, dest: Destination, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first) to ``dest``.

    Exponential backoff ``backoff_initial * 2**(attempt-1)`` with "equal jitter" (a
    uniformly drawn value in [base/2, base]) so many jobs failing together do not retry
    in lock-step; never more than ``backoff_max``.
    """
    r = rng if rng is not None else random
    n = max(1, int(attempt))
    base = dest.backoff_initial * 2.0 ** min(n - 1, 62)
    base = min(base, dest.backoff_max)
    return min(dest.backoff_max, base / 2.0 + r.uniform(0.0, base / 2.0))


def send(
    dest: Destination,
    paths: Sequence[str | os.PathLike[str]],
    calling_ae: str = "SRNODE",
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float | None = None,
) -> SendResult:
    """One attempt to store ``paths`` at ``dest``; never raises for network trouble.
    ``timeout``: seconds per wait for the peer (default: the destination's ``timeout``)."""
    files = [os.fspath(p) for p in paths]
    if not files:
        return SendResult()
    result = EXPORTERS[dest.kind](dest, files, calling_ae, ssl_context=ssl_context, timeout=timeout)
    # a failed attempt is logged once, by the worker, with what it does next
    level = logging.INFO if result.all_ok else logging.DEBUG
    log.log(
        level,
        "export to %s (%s): %d ok, %d failed%s",
        dest.name,
        dest.kind,
        len(result.ok),
        len(result.failed),
        f", first error: {result.failed[0][1]}" if result.failed else "",
    )
    return result


def paths_of(directory: str | os.PathLike[str]) -> list[str]:
    """Every regular file under ``directory``, sorted (a convenience for tools and tests)."""
    return sorted(os.fspath(p) for p in Path(directory).rglob("*") if p.is_file())
