"""What the dashboard and ``/api/status`` show: queue, recent jobs and exports, destinations,
received and processed per hour, failures and the engine's time per slice."""

from __future__ import annotations

import time
from typing import Any

from dicom_node import __version__
from dicom_node.store.states import ACTIVE, JobState


def destinations_of(c: Any) -> list[dict[str, Any]]:
    if c.live is not None:
        return c.live.list_destinations()
    return [d.model_dump(mode="json", exclude_none=True) for d in c.settings.destinations]


def address(d: dict[str, Any]) -> str:
    if d.get("kind") == "stow":
        return str(d.get("url") or "")
    return f"{d.get('ae_title')}@{d.get('host')}:{d.get('port')}"


def status_data(c: Any, limit: int = 20) -> dict[str, Any]:
    """``/api/status``: what ``srnode status --json`` shows, with the destinations."""
    out: dict[str, Any] = {"version": __version__, "ae_title": c.settings.node.ae_title}
    out["destinations"] = [
        {
            "name": d["name"],
            "kind": d.get("kind", "dimse"),
            "address": address(d),
            "tls": bool(d.get("tls")),
        }
        for d in destinations_of(c)
    ]
    if c.db is None:
        out.update(queue={}, jobs=[], exports=[])
        return out
    out["queue"] = c.db.queue_counts()
    out["jobs"] = c.db.recent_jobs(limit)
    exports = c.db.export_rows(only_open=False)[:limit]
    for e in exports:
        e.pop("pending", None)
    out["exports"] = exports
    return out


def engine_ms_per_slice() -> tuple[str, int]:
    """Mean engine time per slice since this process started, and the slice count."""
    from prometheus_client import REGISTRY

    total = REGISTRY.get_sample_value("srnode_engine_seconds_per_slice_sum") or 0.0
    n = int(REGISTRY.get_sample_value("srnode_engine_seconds_per_slice_count") or 0)
    return (f"{total / n * 1000:.0f}" if n else "-"), n


def chart(hours: list[dict[str, Any]], width: int = 960, height: int = 140) -> dict[str, Any]:
    peak = max([1] + [max(h["received"], h["processed"]) for h in hours])
    step = width / max(1, len(hours))
    w = max(1.0, step / 2 - 2)
    bars = []
    for i, h in enumerate(hours):
        bars.append(
            {
                "x": round(i * step + 1, 1),
                "w": round(w, 1),
                "hr": round(h["received"] / peak * (height - 16), 1),
                "hp": round(h["processed"] / peak * (height - 16), 1),
                "received": h["received"],
                "processed": h["processed"],
                "label": time.strftime("%H:00", time.localtime(h["hour"])),
            }
        )
    return {"width": width, "height": height, "bars": bars, "peak": peak}


def dashboard_data(c: Any) -> dict[str, Any]:
    from dicom_node.admin import jobs as admin_jobs
    from dicom_node.jobs import warmup

    ms, n = engine_ms_per_slice()
    data: dict[str, Any] = {
        "version": __version__,
        "engines": warmup.status(),
        "destinations": destinations_of(c),
        "engine_ms": ms,
        "engine_n": n,
        "queue": {},
        "jobs": [],
        "failures": [],
        "failed_total": 0,
        "depth": 0,
        "last": {"received": 0, "processed": 0},
        "chart": chart([]),
    }
    if c.db is None:
        return data
    queue = c.db.queue_counts()
    hours = admin_jobs.per_hour(c.db.engine)
    total_failed, failures = admin_jobs.failures(c.db.engine, 5)
    _, recent = admin_jobs.search(c.db.engine, admin_jobs.JobFilter(limit=10))
    data.update(
        queue=queue,
        depth=sum(queue.get(s, 0) for s in (JobState.RECEIVED, *ACTIVE)),
        failures=failures,
        failed_total=queue.get(JobState.FAILED, total_failed),
        jobs=recent,
        last=hours[-1] if hours else data["last"],
        chart=chart(hours),
    )
    return data
