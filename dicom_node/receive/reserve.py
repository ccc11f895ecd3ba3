"""The disk reserve: below ``storage.min_free_gb`` free on the data dir's file system the
node stops taking instances (new associations are refused, C-STORE and STOW-RS answer
0xA700) and takes them again once space is back. Whatever was acknowledged before stays:
the reserve only stops new work, and is what keeps the database and the derived series of
already received studies writable."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GB = 1024**3


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Free bytes for an unprivileged writer on the file system holding ``path`` (or its
    nearest existing parent: nothing is created)."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


class DiskReserve:
    """``low()`` says whether free space is below the reserve (checked at most every
    ``interval`` s); crossing the line either way is logged once."""

    def __init__(self, path: str | os.PathLike[str], min_free_gb: float, interval: float = 0.5):
        self.path = Path(path)
        self.min_free = int(min_free_gb * GB)
        self.min_free_gb = min_free_gb
        self.interval = interval
        self._checked = 0.0
        self._low = False
        self._free = -1
        self._lock = threading.Lock()

    def low(self) -> bool:
        if self.min_free <= 0:
            return False
        now = time.monotonic()
        if now - self._checked < self.interval:
            return self._low
        with self._lock:
            if now - self._checked >= self.interval:
                self.refresh()
        return self._low

    def refresh(self) -> bool:
        """Look at the disk now (after a failed write, or on a timer)."""
        try:
            free = free_bytes(self.path)
        except OSError as e:
            log.warning("free space of %s unknown: %s", self.path, e.strerror or e)
            self._checked = time.monotonic()
            return self._low
        low = free < self.min_free
        if low != self._low:
            if low:
                log.warning(
                    "disk reserve reached: %.2f GB free on %s, below storage.min_free_gb %g:"
                    " refusing new associations and instances (0xA700) until space is freed",
                    free / GB,
                    self.path,
                    self.min_free_gb,
                )
            else:
                log.info(
                    "disk space back: %.2f GB free on %s (storage.min_free_gb %g):"
                    " accepting instances again",
                    free / GB,
                    self.path,
                    self.min_free_gb,
                )
        self._low, self._free, self._checked = low, free, time.monotonic()
        return low

    def status(self) -> dict[str, Any]:
        """For ``srnode status``: free GB, the reserve, and whether instances are refused."""
        self.refresh()
        return {
            "path": str(self.path),
            "free_gb": round(self._free / GB, 2) if self._free >= 0 else None,
            "min_free_gb": self.min_free_gb,
            "refusing": self._low,
        }

    def describe(self) -> str:
        s = self.status()
        state = "REFUSING new instances (below the reserve)" if s["refusing"] else "accepting"
        reserve = f"reserve {s['min_free_gb']:g} GB"
        return f"disk: {s['free_gb']} GB free on {s['path']} ({reserve}): {state}"
