"""srnode's Prometheus metric families, incremented where the events happen. Families read
from the database at scrape time (jobs by state, spool bytes) are collected by
:mod:`dicom_node.web.metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, disable_created_metrics

disable_created_metrics()  # no *_created series: one family per srnode_* name

INSTANCES_RECEIVED = Counter(
    "srnode_instances_received_total", "Instances stored (acknowledged)", ["via"]
)
INSTANCES_REJECTED = Counter(
    "srnode_instances_rejected_total", "Instances refused with an error status", ["via", "status"]
)
ASSOCIATIONS_REJECTED = Counter(
    "srnode_associations_rejected_total", "Associations refused (calling AE not allowed)"
)
SERIES_ROUTED = Counter(
    "srnode_series_routed_total", "Complete series a route sent to enhancement", ["route"]
)
SERIES_SKIPPED = Counter(
    "srnode_series_skipped_total", "Complete series not enhanced (ignored, no route…)", ["action"]
)
ENGINE_SECONDS = Histogram(
    "srnode_engine_seconds_per_slice",
    "Engine time to enhance one slice",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)
EXPORTS = Counter(
    "srnode_exports_total",
    "Exports of a job to a destination that ended",
    ["destination", "result"],
)
JOBS_FAILED = Counter(
    "srnode_jobs_failed_total", "Jobs that ended failed (see srnode status)", ["stage"]
)
EXPORT_RETRIES = Counter(
    "srnode_export_retries_total",
    "Export attempts that failed and were scheduled again",
    ["destination"],
)


def count_routed(action: str, route: str | None) -> None:
    """A complete series was routed: ``enhance`` (by ``route``), ``ignore`` or ``skip``."""
    if action == "enhance":
        SERIES_ROUTED.labels(route or "(default)").inc()
    else:
        SERIES_SKIPPED.labels(action).inc()


def count_export(destination: str, state: str | None) -> None:
    """One export attempt settled: ``done``, ``failed``, or None (to be tried again)."""
    if state is None:
        EXPORT_RETRIES.labels(destination).inc()
    else:
        EXPORTS.labels(destination, state).inc()


def count_failed(stage: str) -> None:
    """A job ended failed at ``stage``: ``processing`` or ``export``."""
    JOBS_FAILED.labels(stage).inc()
