"""The durable spool: every received instance on disk before anyone is told it arrived.

Layout: ``<root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. A write goes
to a temporary file in the same folder, is fsynced, renamed over the final name and the
folder is fsynced, so after a crash a file is either complete or absent. Writing the same
SOPInstanceUID again replaces the file atomically (idempotent re-sends).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class SpoolError(OSError):
    """The spool could not store a file (disk full, permissions…)."""


def valid_uid(uid: str) -> bool:
    """A DICOM UID: digits and dots, at most 64 characters (also keeps paths inside the spool)."""
    return bool(uid) and len(uid) <= 64 and bool(_UID_RE.match(uid))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirSyncer:
    """fsync of one folder, shared by concurrent writers (group commit).

    A writer needs an fsync that *starts after* its rename; one already running may not
    cover it, so it waits for that one and then for the next, which then covers every
    writer that arrived meanwhile. With parallel associations this turns N folder flushes
    into about two.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._started = 0
        self._done = 0
        self._running = False

    def sync(self, path: Path) -> None:
        with self._cond:
            need = self._started + 1
            while True:
                if self._done >= need:
                    return
                if not self._running:
                    self._running = True
                    self._started += 1
                    gen = self._started
                    break
                self._cond.wait()
        try:
            fsync_dir(path)
        finally:
            with self._cond:
                self._running = False
                self._done = max(self._done, gen)
                self._cond.notify_all()


_syncers: dict[Path, _DirSyncer] = {}
_syncers_lock = threading.Lock()


def sync_dir(path: Path) -> None:
    """fsync a folder; concurrent callers for the same folder share flushes."""
    with _syncers_lock:
        s = _syncers.get(path)
        if s is None:
            if len(_syncers) > 1000:
                _syncers.clear()
            s = _syncers[path] = _DirSyncer()
    s.sync(path)


def atomic_write(
    path: Path, chunks: bytes | Iterable[bytes], *, fsync: bool = True, parent_exists: bool = False
) -> int:
    """Write ``chunks`` to ``path`` atomically (temp file, fsync, rename, fsync dir).

    Returns the number of bytes written.
    """
    path = Path(path)
    parent = path.parent
    new_dirs = []
    if not parent_exists:
        p = parent
        while not p.exists():
            new_dirs.append(p)
            p = p.parent
        parent.mkdir(parents=True, exist_ok=True)
    # unique per thread: two writers of one SOPInstanceUID never share a temp file
    tmp = str(parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    size = 0
    try:
        try:
            if isinstance(chunks, (bytes, bytearray, memoryview)):
                chunks = (chunks,)
            for c in chunks:
                n = os.write(fd, c)
                size += n
                if n < len(c):  # short write: the rest, from where it stopped
                    view = memoryview(c)[n:]
                    while view:
                        n = os.write(fd, view)
                        size += n
                        view = view[n:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        sync_dir(parent)
        # new folders must be durable in their parents too
        for d in new_dirs:
            fsync_dir(d.parent)
    return size


class Spool:
    """Files of received instances, under ``root``."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self._dirs: set[Path] = set()

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        for name, uid in (
            ("StudyInstanceUID", study_uid),
            ("SeriesInstanceUID", series_uid),
            ("SOPInstanceUID", sop_uid),
        ):
            if not valid_uid(uid):
                raise ValueError(f"{name} {uid!r} is not a valid UID")
        return Path(f"{self._root}/{study_uid}/{series_uid}/{sop_uid}.dcm")  # one parse

    def write(
        self, study_uid: str, series_uid: str, sop_uid: str, chunks: bytes | Iterable[bytes]
    ) -> tuple[Path, int]:
        """Store one instance; returns its path and size. Raises SpoolError on I/O failure."""
        path = self.path_for(study_uid, series_uid, sop_uid)
        known = path.parent in self._dirs
        try:
            size = atomic_write(path, chunks, fsync=self.fsync, parent_exists=known)
            if not known:
                if len(self._dirs) > 10000:
                    self._dirs.clear()
                self._dirs.add(path.parent)
        except FileNotFoundError as e:
            if known:  # the folder went (retention): forget it and write again
                self._dirs.discard(path.parent)
                return self.write(study_uid, series_uid, sop_uid, chunks)
            raise SpoolError(e.errno, f"spool write failed: {e.strerror or e}") from e
        except OSError as e:
            raise SpoolError(e.errno, f"spool write failed: {e.strerror or e}") from e
        return path, size

    def clean_temp(self) -> int:
        """Remove temporary files left by a crash mid-write (never acknowledged; what was
        stored is deleted by :mod:`dicom_node.jobs.retention` only)."""
        n = 0
        for f in self.root.glob("*/*/.*.tmp"):
            with contextlib.suppress(OSError):
                f.unlink()
                n += 1
        return n
