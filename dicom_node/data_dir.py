"""The node's data directory (``node.data_dir``), its layout in one place: :class:`DataDir`.

::

    <data_dir>/
      srnode.db                          the SQLite database (when no database.url is set)
      spool/<study>/<series>/<sop>.dcm   received instances (dicom_node.spool)
      derived/<source series>/<sop>.dcm  derived instances until sent (jobs.process_step)
      previews/<job id>/                 before/after pictures of a job (derive.preview)
      cache/                             the engine choices of ``auto`` (jobs.engines)

Who writes a folder and who deletes from it: the spool and ``derived/`` are written on the
way of a study and emptied by :mod:`dicom_node.jobs.retention` only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_node.spool import valid_uid

#: each folder (or file) of the layout: attribute of :class:`DataDir` -> name under the root
LAYOUT = {
    "database": "srnode.db",
    "spool": "spool",
    "derived": "derived",
    "previews": "previews",
    "cache": "cache",
}


@dataclass(frozen=True)
class DataDir:
    """The folders of one node's data directory (nothing is created by looking)."""

    root: Path
    database: Path = field(init=False)
    spool: Path = field(init=False)
    derived: Path = field(init=False)
    previews: Path = field(init=False)
    cache: Path = field(init=False)

    def __post_init__(self) -> None:
        for attr, name in LAYOUT.items():
            object.__setattr__(self, attr, self.root / name)

    @classmethod
    def of(cls, settings: Any) -> DataDir:
        """The data directory of ``settings`` (a Settings, or anything with ``node.data_dir``)."""
        return cls(Path(settings.node.data_dir))

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> DataDir:
        return cls(Path(path))

    def derived_series(self, source_series_uid: str) -> Path:
        """The folder of the instances derived from one source series (a UID: the path
        stays inside ``derived/``)."""
        if not valid_uid(source_series_uid):
            raise ValueError(f"SeriesInstanceUID {source_series_uid!r} is not a valid UID")
        return self.derived / source_series_uid

    def preview(self, job_id: int) -> Path:
        """The folder of one job's previews."""
        return self.previews / str(int(job_id))
