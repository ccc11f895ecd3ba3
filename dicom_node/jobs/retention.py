"""What the node may delete from disk, and deleting it: the one place retention lives.

Every file belongs to a series whose job ended (done, failed or skipped); how long it
stays after that is a setting:

* derived files of a job that is done: at once (:func:`after_export`), or
  ``derived.retention_hours`` with ``derived.keep``;
* source files of a job that is done: at once (:func:`after_export`, when the export
  step settles the job), or
  ``spool.retention_hours`` with ``spool.keep_after_export``;
* source files of skipped series (no route, a route said ignore, no image the engine
  takes): ``spool.skipped_retention_hours``;
* source and derived files of failed jobs: ``spool.failed_retention_hours`` (time to
  ``srnode jobs retry``).

A retention of 0 hours keeps those files for good. Folders left empty go too (in the spool
and under ``derived/``) once they have been empty for a minute, so a receive that just
made one is not raced. Files of jobs still running are never touched.
:func:`plan` looks; :func:`apply` deletes and marks the instances removed in the database.
``srnode gc`` shows a plan and applies it on request; a running node applies one every
10 minutes (:class:`dicom_node.jobs.scheduler.NodeScheduler`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_node.data_dir import DataDir
from dicom_node.store.jobs import Jobs
from dicom_node.store.states import JobState

#: a folder must have been empty this long before it is removed (seconds)
EMPTY_FOLDER_AGE = 60.0


@dataclass
class Bucket:
    """Files of one kind that retention allows to delete now."""

    label: str
    files: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # whole derived series folders
    instance_ids: list[int] = field(default_factory=list)  # spool rows to mark removed
    size: int = 0

    @property
    def count(self) -> int:
        return len(self.files)


@dataclass
class Plan:
    buckets: list[Bucket]
    empty_folders: list[Path]
    roots: tuple[Path, ...] = ()  # the spool and derived folders (never removed)

    @property
    def size(self) -> int:
        return sum(b.size for b in self.buckets)

    @property
    def count(self) -> int:
        return sum(b.count for b in self.buckets)


def _hours_ago(hours: float, now: float) -> float | None:
    """The cutoff for a retention of ``hours`` (None: keep for good)."""
    return None if hours <= 0 else now - hours * 3600.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _spool_bucket(db: Any, label: str, state: JobState, cutoff: float | None) -> Bucket:
    b = Bucket(label)
    if cutoff is None:
        return b
    jobs = Jobs(db)
    for iid, path in jobs.source_rows([j for j, _, _ in jobs.ended_jobs(state, cutoff)]):
        p = Path(path)
        b.instance_ids.append(iid)
        b.files.append(p)
        b.size += _size(p)
    return b


def _derived_bucket(
    db: Any, derived_root: Path, label: str, state: JobState, cutoff: float | None
) -> Bucket:
    b = Bucket(label)
    if cutoff is None:
        return b
    for _, series_uid, _ in Jobs(db).ended_jobs(state, cutoff):
        folder = derived_root / series_uid
        if not folder.is_dir():
            continue
        b.folders.append(folder)
        for f in folder.iterdir():
            if f.is_file():
                b.files.append(f)
                b.size += _size(f)
    return b


def _empty_folders(root: Path, now: float) -> Iterator[Path]:
    """Folders under ``root`` (not root itself) without a file anywhere below, deepest
    first, untouched for :data:`EMPTY_FOLDER_AGE` seconds."""
    if not root.is_dir():
        return
    has_files: set[Path] = set()
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        d = Path(dirpath)
        if filenames or d in has_files:
            has_files.update([d, *d.parents])
            continue
        try:
            old = now - d.stat().st_mtime >= EMPTY_FOLDER_AGE
        except OSError:
            continue
        if d != root and old:
            yield d
        elif d != root:
            has_files.add(d.parent)  # too new to go: its parent stays too


def plan(db: Any, settings: Any, now: float | None = None) -> Plan:
    """What the retention settings allow to delete at ``now``."""
    now = time.time() if now is None else now
    data = DataDir.of(settings)
    derived_root = data.derived
    sp, dv = settings.spool, settings.derived
    after_export = _hours_ago(sp.retention_hours, now) if sp.keep_after_export else now
    buckets = [
        _derived_bucket(
            db,
            derived_root,
            "derived, sent to every destination",
            JobState.DONE,
            _hours_ago(dv.retention_hours, now) if dv.keep else now,
        ),
        _derived_bucket(
            db,
            derived_root,
            "derived, of failed jobs",
            JobState.FAILED,
            _hours_ago(sp.failed_retention_hours, now),
        ),
        _spool_bucket(db, "received, exported", JobState.DONE, after_export),
        _spool_bucket(
            db,
            "received, not enhanced (skipped)",
            JobState.SKIPPED,
            _hours_ago(sp.skipped_retention_hours, now),
        ),
        _spool_bucket(
            db,
            "received, of failed jobs",
            JobState.FAILED,
            _hours_ago(sp.failed_retention_hours, now),
        ),
    ]
    empty = [*_empty_folders(data.spool, now), *_empty_folders(derived_root, now)]
    return Plan(buckets, empty, (data.spool, derived_root))


def apply(db: Any, p: Plan) -> tuple[int, int]:
    """Delete what ``p`` lists; returns (files removed, bytes freed)."""
    files = freed = 0
    jobs = Jobs(db)
    for b in p.buckets:
        for f in b.files:
            size = _size(f)
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                files += 1
                freed += size
        for folder in b.folders:
            shutil.rmtree(folder, ignore_errors=True)
        if b.instance_ids:
            for i in range(0, len(b.instance_ids), 500):
                jobs.mark_removed(b.instance_ids[i : i + 500])
        for f in b.files:  # the series / study folders they leave empty
            root = next((r for r in p.roots if r in f.parents), None)
            if root is not None:
                remove_empty_parents(f.parent, root)
    for d in p.empty_folders:
        with contextlib.suppress(OSError):
            d.rmdir()
    return files, freed


def remove_empty_parents(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``stop`` while empty."""
    d = folder
    while d != stop and stop in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


def after_export(jobs: Jobs, settings: Any, job_id: int, series_uid: str) -> int:
    """When a job is done (sent to every destination): its source files go at once unless
    ``spool.keep_after_export``, its derived files unless ``derived.keep``; returns how many
    files were removed."""
    data = DataDir.of(settings)
    n = 0
    if not settings.spool.keep_after_export:
        n += _drop_sources(jobs, data.spool, job_id)
    if not settings.derived.keep:
        n += _drop_derived(data, series_uid)
    return n


def _drop_sources(jobs: Jobs, spool_root: Path, job_id: int) -> int:
    """The job's source files (received before it started) and the folders they leave."""
    rows = jobs.source_files(job_id)
    for r in rows:
        with contextlib.suppress(OSError):
            Path(r.path).unlink(missing_ok=True)
    if rows:
        jobs.mark_removed([r.id for r in rows])
        for folder in {Path(r.path).parent for r in rows}:  # empty series/study folders
            remove_empty_parents(folder, spool_root)
    return len(rows)


def _drop_derived(data: DataDir, series_uid: str) -> int:
    try:
        folder = data.derived_series(series_uid)
    except ValueError:
        return 0
    if not folder.is_dir():
        return 0
    n = sum(1 for f in folder.iterdir() if f.is_file())
    shutil.rmtree(folder, ignore_errors=True)
    return n


def collect(db: Any, settings: Any, now: float | None = None) -> tuple[int, int]:
    """Plan and apply (the node's periodic run); returns (files removed, bytes freed)."""
    return apply(db, plan(db, settings, now))
