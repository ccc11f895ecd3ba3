"""Crash and outage recovery of a real `srnode serve`: kill -9 while it processes, and a
destination that is down at first."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from tests.node_helpers import (
    SRNODE,
    STORESCP,
    STORESCU,
    dest_config,
    free_port,
    received,
    start_node,
    start_storescp,
    storescu,
    wait_for,
    write_config,
    write_series,
)
from tests.onnx_models import write_test_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not all(shutil.which(p) for p in (STORESCU, STORESCP)), reason="dcmtk missing"
    ),
]


def _expected_derived_uids(files: list[Path], card: Path) -> set[str]:
    """The SOPInstanceUIDs an uninterrupted run produces (same engine, same settings)."""
    from dicom_node.config import DeriveSettings
    from dicom_node.derive.process import enhance_instance
    from sr_engine.engine import Engine

    engine = Engine.load(card, backend="onnxruntime", threads=1)
    out = set()
    for f in files:
        ds, _ = enhance_instance(pydicom.dcmread(f), engine, DeriveSettings())
        out.add(str(ds.SOPInstanceUID))
    return out


def _db_rows(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def test_kill_9_while_processing_then_restart_sends_everything_once(tmp_path):
    card = write_test_model(tmp_path / "models")
    port, dport = free_port(), free_port()
    data = tmp_path / "data"
    dest = dest_config(dport)
    cfg = write_config(
        tmp_path / "srnode.toml",
        data_dir=data,
        port=port,
        model_card=card,
        destinations=[dest],
        stable_age=1.0,
    )
    study, series, files = write_series(tmp_path / "ct", "CT_small.dcm", 40)
    expected = _expected_derived_uids(files, card)
    assert len(expected) == 40

    scp = start_storescp(tmp_path / "out", dport, tmp_path / "storescp.log")
    node = start_node(tmp_path / "node1.log", "--config", str(cfg))
    try:
        assert storescu(port, files).returncode == 0
        derived_dir = data / "derived" / series

        def mid_processing():
            states = _db_rows(data / "srnode.db", "SELECT state FROM jobs")
            n = len(list(derived_dir.glob("*.dcm"))) if derived_dir.is_dir() else 0
            return states == [("processing",)] and 2 <= n < 40

        wait_for(mid_processing, 60, interval=0.02, what="job half processed")
        node.kill9()
        done_before = len(list(derived_dir.glob("*.dcm")))
        assert done_before < 40
        assert _db_rows(data / "srnode.db", "SELECT state FROM jobs") == [("processing",)]

        node = start_node(tmp_path / "node2.log", "--config", str(cfg))

        def all_there():
            got = {
                u for u, d in received(tmp_path / "out").items() if str(d.StudyInstanceUID) == study
            }
            return got if len(got) >= 40 else None

        got = wait_for(all_there, 120, what="40 derived instances after restart")
        assert got == expected  # the same UIDs as an uninterrupted run, none missing
        assert "jobs resumed" in node.text()
        wait_for(
            lambda: _db_rows(data / "srnode.db", "SELECT state FROM jobs") == [("done",)],
            30,
            what="job done",
        )
    finally:
        node.close()
        scp.close()


def _status_json(cfg: Path) -> dict:
    r = subprocess.run(
        [SRNODE, "status", "--config", str(cfg), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_destination_down_then_up_gets_everything_and_status_shows_retries(tmp_path):
    card = write_test_model(tmp_path / "models")
    port, dport = free_port(), free_port()
    dest = dest_config(dport, backoff_initial=1.0, backoff_max=4.0, max_attempts=60)
    cfg = write_config(
        tmp_path / "srnode.toml",
        data_dir=tmp_path / "data",
        port=port,
        model_card=card,
        destinations=[dest],
        stable_age=1.0,
    )
    study, _, files = write_series(tmp_path / "ct", "CT_small.dcm", 3)
    node = start_node(tmp_path / "node.log", "--config", str(cfg))
    scp = None
    try:
        t_sent = time.monotonic()
        assert storescu(port, files).returncode == 0

        def retrying():
            ex = _status_json(cfg)["exports"]
            return ex and ex[0]["attempts"] >= 2 and ex[0]["state"] == "pending" and ex[0]

        ex = wait_for(retrying, 30, interval=0.5, what="export retries while DEST is down")
        assert ex["last_error"] and ex["next_attempt_at"]
        text = subprocess.run(
            [SRNODE, "status", "--config", str(cfg)], capture_output=True, text=True, timeout=60
        ).stdout
        assert "destination retries" in text and "DEST" in text and "pending" in text

        time.sleep(max(0.0, 30 - (time.monotonic() - t_sent)))
        scp = start_storescp(tmp_path / "out", dport, tmp_path / "storescp.log")
        got = wait_for(
            lambda: (
                (
                    g := [
                        d
                        for d in received(tmp_path / "out").values()
                        if str(d.StudyInstanceUID) == study
                    ]
                )
                and len(g) >= 3
                and g
            ),
            60,
            what="3 derived instances once DEST is up",
        )
        assert len(got) == 3
        st = wait_for(
            lambda: (s := _status_json(cfg))["queue"]["done"] == 1 and s, 30, what="job done"
        )
        (e,) = st["exports"]
        assert e["state"] == "done" and e["attempts"] >= 4 and e["sent_count"] == 3
    finally:
        node.close()
        if scp is not None:
            scp.close()
