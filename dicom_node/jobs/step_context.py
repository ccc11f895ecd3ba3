"""What a worker hands to each step of a job (:mod:`~dicom_node.jobs.process_step`,
:mod:`~dicom_node.jobs.export_step`): its database, settings, name, engines, data
directory and the lease renewal that also notices the node stopping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dicom_node.data_dir import DataDir
from dicom_node.jobs.engines import EngineCache
from dicom_node.store.jobs import Jobs


class Stopping(Exception):
    """The node is stopping (or the claim went to another worker): leave the job
    resumable."""


@dataclass(frozen=True)
class StepContext:
    """One worker's view of the node, shared by the steps of every job it works."""

    jobs: Jobs
    settings: Any
    name: str  # the worker's claim name
    engines: EngineCache
    data_dir: DataDir
    renew: Callable[[int], None]  # renew the job's lease; raises Stopping
