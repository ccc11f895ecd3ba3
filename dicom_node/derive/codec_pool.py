"""Compressed pixel data decoded and encoded in a worker process, beside the engine.

    codecs = CodecPool()                         # no process yet
    pixels = codecs.read_pixels(ds)              # JPEG 2000, JPEG-LS...: in the process
    out = codecs.encode(out, JPEG2000Lossless)   # lossless encoding: in the process
    codecs.close()                               # the process ends with it

The codecs (pylibjpeg-openjpeg, pyjpegls, pylibjpeg-libjpeg) hold the GIL while they
work, so on a thread beside the inference they stall the engine's Python between its
backend calls; in another process they only share the CPU. The work itself is the one
way srnode decodes and encodes: :func:`sr_engine.pixels.read_pixels` and
:func:`dicom_node.derive.encoding.encode` run in the process, their errors come back as
they were raised (the same type and message). Uncompressed pixel data is read in the
caller's thread, so a series without compression never starts the process; while the
process starts (about a second), the first compressed instances are still worked in the
caller's thread, so its start costs no waiting.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import numpy as np
from pydicom.dataset import Dataset

from dicom_node.derive.encoding import encode, source_syntax
from dicom_node.error_text import describe
from sr_engine.errors import UnsupportedInput
from sr_engine.pixels import read_pixels

log = logging.getLogger(__name__)

T = TypeVar("T")


def is_compressed(ds: Dataset) -> bool:
    """True when the pixel data of ``ds`` is encapsulated (JPEG, JPEG-LS, JPEG 2000, RLE)."""
    ts = source_syntax(ds)
    return bool(ts is not None and ts.is_compressed)


class CodecPool:
    """``workers`` processes (started at the first compressed instance) for the pixel
    codecs; thread-safe; :meth:`close` ends them."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._ready: Future[None] | None = None  # done once the process has started
        self._closed = False
        self._said = False  # the warning that the process could not start

    @property
    def started(self) -> bool:
        return self._pool is not None

    def start(self, wait: bool = False) -> bool:
        """Start the process (if it is not running) and say whether it is ready;
        ``wait``: until it is. False also for a process that could not start (the work
        then stays in the caller's thread, as without a pool)."""
        self._executor()
        ready = self._ready
        assert ready is not None
        if wait:
            ready.exception()  # waits, raises nothing
        if not ready.done():
            return False
        if ready.exception() is not None:
            if not self._said:
                self._said = True
                why = describe(ready.exception())
                log.warning("codec pool: no process (%s); codecs run in this thread", why)
            return False
        return True

    def read_pixels(self, ds: Dataset) -> np.ndarray:
        """:func:`sr_engine.pixels.read_pixels` of ``ds``, decoded in the process when the
        pixel data is compressed. A decoder that dies on the instance is an
        :class:`UnsupportedInput`, as any other decoding failure."""
        if not is_compressed(ds) or not self.start():
            return read_pixels(ds)
        try:
            return self._run(read_pixels, ds)
        except BrokenProcessPool:
            name = getattr(source_syntax(ds), "name", "compressed")
            raise UnsupportedInput(
                f"pixel data could not be decoded ({name}): the decoder process ended"
            ) from None

    def encode(self, ds: Dataset, syntax: str) -> Dataset:
        """:func:`dicom_node.derive.encoding.encode` of ``ds`` in the process: returns the
        encoded data set (in the caller's thread, and then ``ds`` itself, while the
        process starts)."""
        if not self.start():
            return encode(ds, syntax)
        return self._run(encode, ds, syntax)

    def close(self) -> None:
        """End the processes (work still queued is cancelled); a later call starts none."""
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> CodecPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("the codec pool is closed")
            if self._pool is None:
                # spawn: the node's process has threads (engine, SCP) that fork would copy
                ctx = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
                self._ready = self._pool.submit(_started)
                log.debug("codec pool: %d process(es) started", self.workers)
            return self._pool

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the process; once more in a fresh one if the process died (the
        work of another instance may have killed it), then BrokenProcessPool."""
        for attempt in (1, 2):
            pool = self._executor()
            try:
                return pool.submit(fn, *args).result()
            except BrokenProcessPool:
                with self._lock:
                    if self._pool is pool:
                        self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def _started() -> None:
    """Run first in a new process: its imports (this module's) are done by then."""
