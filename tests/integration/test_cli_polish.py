"""What an admin types: --version, help without Python type names, the admin commands
finding the node's data dir from the config (and never making an empty one), enhance's
usage errors, serve's --log-file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dicom_node import __version__
from tests.node_helpers import SRNODE, free_port, wait_for

pytestmark = pytest.mark.integration


def _srnode(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SRNODE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "100", "TERM": "dumb"},
    )


def test_version_flag() -> None:
    r = _srnode("--version")
    assert r.returncode == 0 and r.stdout == f"srnode {__version__}\n"


@pytest.mark.parametrize("command", [[], ["serve"], ["status"], ["gc"], ["models"], ["pull"]])
def test_help_names_values_not_python_types(command: list[str]) -> None:
    r = _srnode(*command, "--help")
    assert r.returncode == 0, r.stderr
    for internal in ("list[", "<bool>", "<path>", "Path]", "<int range>", "NoneType"):
        assert internal not in r.stdout, (internal, r.stdout)


@pytest.mark.parametrize(
    "command", [["status"], ["aet", "list"], ["aet", "add", "PACS"], ["jobs", "retry", "1"]]
)
def test_admin_commands_never_create_a_data_dir(tmp_path: Path, command: list[str]) -> None:
    data = tmp_path / "data"
    cfg = tmp_path / "srnode.toml"
    cfg.write_text(f'[node]\ndata_dir = "{data}"\n')
    r = _srnode(*command, "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"no srnode database in {data} (node.data_dir); pass the node's --config "
        "(or --data-dir), or start 'srnode serve' there first"
    )
    assert not data.exists() and not (tmp_path / "srnode-data").exists()


def test_enhance_out_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "out.dcm"
    out.write_bytes(b"x")
    src = tmp_path / "in"
    src.mkdir()
    r = _srnode("enhance", str(src), "--out", str(out))
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: --out {out} is a file; give a folder for the derived series"


def test_enhance_folder_without_dicom(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "notes.txt").write_text("hello\n")
    r = _srnode("enhance", str(src), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: no DICOM files in {src} (1 other file(s))"
    assert not (tmp_path / "out").exists()


def test_serve_log_file_follows_rotation(tmp_path: Path) -> None:
    """The log goes to --log-file; after logrotate moves it away (no copytruncate), the
    node writes to a new file of the same name (WatchedFileHandler)."""
    log = tmp_path / "log" / "srnode.log"
    cfg = tmp_path / "srnode.toml"
    cfg.write_text(
        f'[node]\nhost = "127.0.0.1"\nport = {free_port()}\ndata_dir = "{tmp_path / "data"}"\n'
        "[web]\nenabled = false\n"
    )
    p = subprocess.Popen(
        [SRNODE, "serve", "--config", str(cfg), "--log-file", str(log), "--log-level", "debug"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: log.exists() and "srnode serve started" in log.read_text(), 60, what="start"
        )
        log.rename(log.with_suffix(".log.1"))
        p.terminate()
        p.wait(60)
        out, err = p.communicate()
    finally:
        if p.poll() is None:
            p.kill()
    assert "srnode stopped" in log.read_text()  # a new file after the move
    assert "srnode serve started" in log.with_suffix(".log.1").read_text()
    assert err == "" and out == ""


def test_echo_prints_one_line(tmp_path: Path) -> None:
    from tests.node_helpers import start_storescp

    port = free_port()
    scp = start_storescp(tmp_path / "in", port, tmp_path / "scp.log")
    try:
        ok = _srnode("echo", f"DEST@127.0.0.1:{port}")
    finally:
        scp.close()
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == "" and len(ok.stdout.splitlines()) == 1
    assert ok.stdout.startswith(f"echo DEST@127.0.0.1:{port}: ok in ")
    gone = free_port()
    down = _srnode("echo", f"DEST@127.0.0.1:{gone}", "--timeout", "2")
    assert down.returncode == 2 and down.stdout == ""
    assert down.stderr.splitlines() == [
        f"echo {down.args[2]}: connection refused by 127.0.0.1:{gone}"
    ]


def test_enhance_says_a_file_it_cannot_decode_once_without_a_traceback(tmp_path: Path) -> None:
    import shutil

    from pydicom.data import get_testdata_file

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("JPEG-lossy.dcm"), src / "JPEG-lossy.dcm")  # 12-bit JPEG
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb"}
    r = subprocess.run(
        [SRNODE, "enhance", str(src), "--out", str(tmp_path / "out"), "--no-progress",
         "--backend", "onnxruntime", "--threads", "1"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "ERROR pydicom" not in out, out
    assert "JPEG-lossy.dcm: pixel data could not be decoded" in out
