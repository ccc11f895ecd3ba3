"""schemathesis against the node's own /openapi.json, over HTTP (uvicorn), with a bounded
number of examples per operation: bad input gets 4xx, never 5xx, and the node logs no
traceback. The summary is printed (``pytest -s`` shows it)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dicom_node.config import Settings
from dicom_node.service import open_intake
from dicom_node.web.app import create_app
from tests import node_helpers as nh
from tests import pacs_peers as peers

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
MAX_EXAMPLES = int(os.environ.get("SRNODE_FUZZ_EXAMPLES", "20"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which(SCHEMATHESIS), reason="schemathesis not installed"),
]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server(tmp_path):
    import uvicorn

    settings = Settings.model_validate(
        {
            "node": {"data_dir": str(tmp_path / "data")},
            "allow": [{"ae_title": "PACS", "host": "127.0.0.1"}],
            "destinations": [{"name": "pacs", "ae_title": "DEST", "host": "127.0.0.1", "port": 9}],
            "routes": [{"name": "ct", "modality": ["CT"], "destinations": ["pacs"]}],
        }
    )
    intake = open_intake(settings)
    db, ingestor = intake.db, intake.ingestor
    for p in peers.write_phantom_series(tmp_path / "s", "CT", n=2, size=32):
        ingestor.store(p.read_bytes(), "PACS", "stow")
    app = create_app(settings, ingestor.store, db)
    port = nh.free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    srv.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=srv.run, daemon=True)
    lines = _Lines()
    logging.getLogger().addHandler(lines)
    thread.start()
    nh.wait_port(port, 30)
    yield {"url": f"http://127.0.0.1:{port}", "lines": lines}
    srv.should_exit = True
    thread.join(10)
    logging.getLogger().removeHandler(lines)
    db.close()


def test_schemathesis_finds_no_server_error(server, tmp_path):
    t0 = time.monotonic()
    r = subprocess.run(
        [
            SCHEMATHESIS, "run", server["url"] + "/openapi.json",
            "--checks", "not_a_server_error",
            "--max-examples", str(MAX_EXAMPLES),
            "--phases", "examples,coverage,fuzzing",
            "--workers", "1", "--seed", "14", "--no-shrink",
            "--generation-database", "none", "--request-timeout", "30",
            "--no-color", "--report", "junit", "--report-dir", str(tmp_path / "report"),
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    summary = r.stdout[r.stdout.find("=====") :] if "=====" in r.stdout else r.stdout[-3000:]
    print(f"\nschemathesis ({time.monotonic() - t0:.0f} s, {MAX_EXAMPLES} examples max per "
          f"operation):\n{summary}")  # fmt: skip
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    ours = [x for x in server["lines"].records if x.name.startswith("dicom_node.web")]
    failed = [x for x in ours if "failed:" in x.getMessage()]  # the 500 handler's line
    tracebacks = [x for x in server["lines"].records if x.exc_info and x.levelno >= logging.WARNING]
    assert failed == [] and tracebacks == []
