"""The export policy after one attempt, without a network: done, refused, retried within
the budget (never scheduled past its end), given up by time or by attempts."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

from dicom_node.config_routing import DimseDestination
from dicom_node.export.result import SendResult
from dicom_node.jobs import export_outcome as eo

NOW = 1_800_000_000.0


def _dest(**kw) -> DimseDestination:
    return DimseDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=104, **kw)


def _row(attempts: int = 0, sent: int = 0, first_failed: float | None = None) -> SimpleNamespace:
    return SimpleNamespace(attempts=attempts, sent_count=sent, first_failed_at=first_failed)


def test_everything_acknowledged_is_done_and_clears_the_failure_clock():
    out = eo.after_attempt(
        _row(2, 1, NOW - 60), _dest(), ["a", "b"], SendResult(ok=["a", "b"]), NOW
    )
    assert out.state == "done" and out.level == 0
    assert out.values["sent_count"] == 3 and out.values["first_failed_at"] is None
    assert json.loads(out.values["pending"]) == []


def test_a_refused_instance_fails_the_export_at_once():
    res = SendResult(ok=["a"], failed=[("b", "0xA900 dataset does not match")], permanent=["b"])
    out = eo.after_attempt(_row(), _dest(), ["a", "b"], res, NOW)
    assert out.state == "failed" and out.values["last_error"].startswith("1 refused: 0xA900")


def test_a_transient_failure_waits_within_the_budget_and_keeps_what_is_left():
    res = SendResult(ok=["a"], failed=[("b", "connection refused")])
    out = eo.after_attempt(_row(), _dest(backoff_initial=10, backoff_max=300), ["a", "b"], res, NOW)
    assert out.state is None and out.level == logging.WARNING
    assert json.loads(out.values["pending"]) == ["b"] and out.values["first_failed_at"] == NOW
    assert NOW + 5 <= out.values["next_attempt_at"] <= NOW + 10
    assert "1 left, attempt 1" in out.message and "connection refused" in out.message


def test_the_next_attempt_is_never_after_the_end_of_the_budget():
    dest = _dest(retry_for_hours=1, backoff_initial=3000, backoff_max=3000)
    first = NOW - 3600 + 30  # 30 s of budget left
    res = SendResult(failed=[("b", "timeout")])
    out = eo.after_attempt(_row(5, 0, first), dest, ["b"], res, NOW)
    assert out.state is None and out.values["next_attempt_at"] == first + 3600


def test_past_the_budget_or_the_attempts_the_export_gives_up_and_says_why():
    res = SendResult(failed=[("b", "timeout")])
    by_time = eo.after_attempt(
        _row(40, 0, NOW - 2 * 3600), _dest(retry_for_hours=2), ["b"], res, NOW
    )
    assert by_time.state == "failed" and by_time.level == logging.ERROR
    assert by_time.values["last_error"].startswith("gave up after 41 attempts over 2.0 h")
    by_count = eo.after_attempt(_row(2, 0, NOW - 10), _dest(max_attempts=3), ["b"], res, NOW)
    assert by_count.state == "failed" and "max_attempts 3" in by_count.values["last_error"]


def test_an_unknown_destination_and_an_empty_export():
    assert eo.not_configured("gone", NOW).values["last_error"] == "destination gone not configured"
    assert eo.nothing_left(NOW).state == "done"
