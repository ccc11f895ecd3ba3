"""`srnode serve` started from flags only, the admin commands against it, and a clean
stop on SIGTERM while an association is sending."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import threading

import pytest

from dicom_node.config import Settings
from dicom_node.store import audit
from dicom_node.store.database import Database
from tests.node_helpers import (
    SRNODE,
    STORESCP,
    STORESCU,
    dest_config,
    free_port,
    received,
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


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SRNODE, *args], capture_output=True, text=True, timeout=60)


def test_serve_from_flags_echo_status_and_aet(tmp_path, srnode_node):
    card = write_test_model(tmp_path / "models")
    port, dport = free_port(), free_port()
    # only what flags cannot say goes in the environment: the test model, no web console
    env_extra = {
        "SRNODE_WEB__ENABLED": "false",
        "SRNODE_NODE__HOST": "127.0.0.1",
        "SRNODE_ENGINE__BACKEND": "onnxruntime",
    }
    cfg = tmp_path / "routes.toml"
    cfg.write_text(
        f'[engine]\nmodel_dirs = ["{card.parent}"]\n[[routes]]\nname = "all"\nmodel = "{card}"\n'
    )
    import os

    env = dict(os.environ, TCP_NODELAY="1", **env_extra)
    scp = start_storescp(tmp_path / "out", dport, tmp_path / "storescp.log", ae="PACSOUT")
    node = srnode_node(
        tmp_path / "node.log",
        "--config",
        str(cfg),
        "--data-dir",
        str(tmp_path / "data"),
        "--aet",
        "SRX",
        "--port",
        str(port),
        "--allow",
        "PACS@127.0.0.1",
        "--destination",
        f"PACSOUT@127.0.0.1:{dport}",
        "--stable-age",
        "1",
        env=env,
    )
    try:
        r = _run("echo", f"SRX@127.0.0.1:{port}", "--aet", "PACS")
        assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
        r = _run("echo", f"SRX@127.0.0.1:{port}", "--aet", "STRANGER")
        assert r.returncode != 0 and "rejected" in r.stderr
        study, _, files = write_series(tmp_path / "ct", "CT_small.dcm", 2)
        r = subprocess.run(
            [STORESCU, "-aet", "PACS", "-aec", "SRX", "127.0.0.1", str(port), *map(str, files)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        wait_for(
            lambda: (
                len(
                    [
                        d
                        for d in received(tmp_path / "out").values()
                        if str(d.StudyInstanceUID) == study
                    ]
                )
                == 2
            ),
            90,
            what="2 derived at PACSOUT",
        )
        dd = ["--config", str(cfg), "--data-dir", str(tmp_path / "data")]
        st = _run("status", *dd)
        assert st.returncode == 0 and "done" in st.stdout, st.stdout + st.stderr
        assert _run("aet", "add", "MODALITY1@127.0.0.1", *dd).returncode == 0
        lst = _run("aet", "list", *dd)
        assert "MODALITY1\t127.0.0.1\tdatabase" in lst.stdout
        assert _run("aet", "remove", "MODALITY1@127.0.0.1", *dd).returncode == 0
        assert "MODALITY1" not in _run("aet", "list", *dd).stdout
        assert _run("jobs", "retry", "1", *dd).returncode == 0
        assert _run("jobs", "retry", "999", *dd).returncode != 0
        db = Database.from_settings(
            Settings.model_validate({"node": {"data_dir": str(tmp_path / "data")}})
        )
        try:  # audited like the API's retry
            _, rows = audit.query(db.engine, kind="job.retried")
        finally:
            db.close()
        assert [(r["user"].startswith("cli:"), r["target"]) for r in rows] == [(True, "1")]
        bad = _run("serve", "--destination", "no-port-here", *dd)
        assert bad.returncode == 2 and "destinations" in bad.stderr
    finally:
        node.close()
        scp.close()


def test_sigterm_lets_the_sending_association_finish(tmp_path, srnode_node):
    card = write_test_model(tmp_path / "models")
    port = free_port()
    data = tmp_path / "data"
    cfg = write_config(
        tmp_path / "srnode.toml",
        data_dir=data,
        port=port,
        model_card=card,
        destinations=[],
        stable_age=30,
    )
    _, series, files = write_series(tmp_path / "ct", "CT_small.dcm", 80)
    node = srnode_node(tmp_path / "node.log", "--config", str(cfg))
    try:
        result: dict = {}
        sender = threading.Thread(target=lambda: result.update(r=storescu(port, files)))
        sender.start()

        def some_stored():
            try:
                con = sqlite3.connect(f"file:{data / 'srnode.db'}?mode=ro", uri=True)
                (n,) = con.execute("SELECT count(*) FROM instances").fetchone()
                con.close()
                return n >= 5
            except sqlite3.Error:
                return False

        wait_for(some_stored, 60, interval=0.02, what="first instances stored")
        node.p.send_signal(signal.SIGTERM)
        sender.join(120)
        assert node.p.wait(60) == 0
        r = result["r"]
        assert r.returncode == 0, r.stderr  # every instance acknowledged with Success
        con = sqlite3.connect(str(data / "srnode.db"))
        (n,) = con.execute("SELECT count(*) FROM instances").fetchone()
        con.close()
        assert n == 80
        assert "srnode stopped" in node.text()
    finally:
        node.close()


def test_two_receiver_processes_share_the_port(tmp_path, srnode_node):
    """node.receivers = 2: associations spread over two processes, nothing lost, and both
    stop on SIGTERM."""
    import os

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
    env = dict(os.environ, TCP_NODELAY="1", SRNODE_NODE__RECEIVERS="2")
    scp = start_storescp(tmp_path / "out", dport, tmp_path / "storescp.log")
    node = srnode_node(tmp_path / "node.log", "--config", str(cfg), env=env)
    try:
        wait_for(
            lambda: "2 receiver processes share port" in node.text(), 60, what="second receiver up"
        )
        studies, batches = [], []
        for i in range(4):
            study, _, files = write_series(tmp_path / f"s{i}", "CT_small.dcm", 5)
            studies.append(study)
            batches.append(files)
        results = []
        threads = [
            threading.Thread(target=lambda f=f: results.append(storescu(port, f))) for f in batches
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [r.returncode for r in results] == [0, 0, 0, 0]
        got = wait_for(
            lambda: (
                (
                    g := [
                        d
                        for d in received(tmp_path / "out").values()
                        if str(d.StudyInstanceUID) in studies
                    ]
                )
                and len(g) >= 20
                and g
            ),
            120,
            what="20 derived instances",
        )
        assert len(got) == 20
        node.p.send_signal(signal.SIGTERM)
        assert node.p.wait(60) == 0
        out = subprocess.run(
            ["pgrep", "-f", f"srnode-receiver|{cfg}"], capture_output=True, text=True
        )
        assert str(node.p.pid) not in out.stdout
    finally:
        node.close()
        scp.close()
