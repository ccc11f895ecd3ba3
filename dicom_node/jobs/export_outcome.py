"""What one export attempt makes of an export row: done, failed (instances refused, the
destination gone, or the retry budget spent) or pending again after a capped backoff that
never runs past the budget. Pure: the worker sends, this decides, ``Jobs.record_export``
writes."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from dicom_node.store.states import ExportState

MAX_ERROR = 4000


@dataclass(frozen=True)
class Outcome:
    """``values``: the export row's new columns; ``level``/``message``: what to log
    (``level`` 0: nothing)."""

    values: dict[str, Any] = field(default_factory=dict)
    level: int = 0
    message: str = ""

    @property
    def state(self) -> str | None:
        """``done`` or ``failed`` once settled; None while it is to be tried again."""
        return self.values.get("state")


def not_configured(destination: str, now: float) -> Outcome:
    why = f"destination {destination} not configured"
    return Outcome({"state": ExportState.FAILED, "last_error": why, "updated_at": now})


def nothing_left(now: float) -> Outcome:
    return Outcome({"state": ExportState.DONE, "updated_at": now})


def after_attempt(row: Any, dest: Any, pending: list[str], result: Any, now: float) -> Outcome:
    """``row``: the export row before the attempt (attempts, sent_count, first_failed_at);
    ``dest``: its destination's settings; ``pending``: the paths this attempt sent;
    ``result``: what :func:`dicom_node.export.send.send` returned."""
    from dicom_node.export.send import next_retry_delay

    ok = set(result.ok)
    permanent = set(getattr(result, "permanent", []) or [])
    left = [p for p in pending if p not in ok and p not in permanent]
    attempts = row.attempts + 1
    values: dict[str, Any] = {
        "updated_at": now,
        "attempts": attempts,
        "pending": json.dumps(left),
        "sent_count": row.sent_count + len(ok & set(pending)),
    }
    err = result.failed[0][1] if result.failed else None
    first_failed = row.first_failed_at or now
    budget = dest.retry_for_hours * 3600.0
    if permanent:
        # a failed row lists what the destination does not have: a retry for this
        # destination alone (Jobs.retry_export) sends those again
        values.update(
            state=ExportState.FAILED,
            last_error=f"{len(permanent)} refused: {err}"[:MAX_ERROR],
            pending=json.dumps(left + [p for p in pending if p in permanent]),
        )
        return Outcome(values)
    if not left:
        values.update(
            state=ExportState.DONE, last_error=None, next_attempt_at=None, first_failed_at=None
        )
        return Outcome(values)
    spent = now - first_failed >= budget
    if spent or (dest.max_attempts is not None and attempts >= dest.max_attempts):
        why = (
            f"gave up after {attempts} attempts over {duration(now - first_failed)}"
            f" (retry_for_hours {dest.retry_for_hours:g}"
            + (f", max_attempts {dest.max_attempts}" if dest.max_attempts else "")
            + f"): {err}"
        )
        values.update(state=ExportState.FAILED, last_error=why[:MAX_ERROR])
        return Outcome(values, logging.ERROR, f"failed: {why}")
    delay = max(min(next_retry_delay(attempts, dest), first_failed + budget - now), 0.0)
    values.update(
        last_error=(err or "")[:MAX_ERROR],
        next_attempt_at=now + delay,
        first_failed_at=first_failed,
    )
    until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(first_failed + budget))
    message = (
        f"{len(left)} left, attempt {attempts}, again in {delay:.1f} s (retrying until {until}):"
        f" {err}"
    )
    return Outcome(values, logging.WARNING, message)


def tally(exps: list[Any]) -> str:
    """``exported 1/2``: how many of a job's destinations have every instance."""
    done = sum(1 for e in exps if e.state == ExportState.DONE)
    return f"exported {done}/{len(exps)}"


def summary(exps: list[Any]) -> str:
    """A job's exports in one line: ``exported 1/2; pacs2: gave up after ...``."""
    rest = "; ".join(
        f"{e.destination}: {e.last_error or e.state}" for e in exps if e.state != ExportState.DONE
    )
    return (tally(exps) + (f"; {rest}" if rest else ""))[:MAX_ERROR]


def duration(seconds: float) -> str:
    """``1.5 h``, ``12 min``, ``40 s``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
