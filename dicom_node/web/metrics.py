"""``/metrics``: the node's counters (:mod:`dicom_node.metrics`) and the families read from
the database when Prometheus scrapes: jobs by state, spool bytes, console users."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

import dicom_node.metrics  # noqa: F401  (registers the counters)


class DatabaseCollector:
    """Gauges read from the database at scrape time."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def collect(self) -> Any:
        jobs = GaugeMetricFamily("srnode_jobs", "Jobs by state", labels=["state"])
        for state, n in self.db.queue_counts().items():
            jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily(
            "srnode_spool_bytes",
            "Bytes of received instances kept in the spool",
            value=self.db.spool_bytes(),
        )


def exposition(db: Any) -> bytes:
    """The text format: the process's counters, then the database gauges."""
    out = generate_latest(REGISTRY)
    if db is not None:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(DatabaseCollector(db))
        out += generate_latest(reg)
    return out
