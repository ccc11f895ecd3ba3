"""Helpers for the node tests: test series with fresh UIDs, free ports, PostgreSQL URLs."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

PG_ADMIN_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
)


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_series(
    directory: Path,
    source: str = "CT_small.dcm",
    count: int = 3,
    study_uid: str | None = None,
    description: str | None = None,
) -> tuple[str, str, list[Path]]:
    """``count`` copies of a pydicom test file as one new series; returns (study, series, files)."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    files = []
    for i in range(count):
        ds = pydicom.dcmread(get_testdata_file(source))
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        if "ImagePositionPatient" in ds:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, z + i * 2.0]
        if description is not None:
            ds.SeriesDescription = description
        p = directory / f"{ds.Modality}_{i:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        files.append(p)
    return study_uid, series_uid, files


def pg_database():
    """Create a throwaway PostgreSQL database; returns (url, drop) or (None, reason)."""
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover
        return None, f"psycopg not installed ({e})"
    name = f"srnode_test_{uuid.uuid4().hex[:12]}"
    last = "no URL tried"
    for admin in PG_ADMIN_URLS:
        plain = admin.replace("postgresql+psycopg://", "postgresql://")
        try:
            with psycopg.connect(plain, autocommit=True, connect_timeout=3) as c:
                c.execute(f'CREATE DATABASE "{name}"')
        except Exception as e:
            last = f"{admin}: {e}".splitlines()[0]
            continue
        base = admin.rsplit("/", 1)[0]

        def drop(plain=plain) -> None:
            with contextlib.suppress(Exception), psycopg.connect(plain, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        return f"{base}/{name}", drop
    return None, f"PostgreSQL at 127.0.0.1:5432 unreachable ({last})"


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


# --------------------------------------------------------------------------- processes
SRNODE = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "srnode")
STORESCU, STORESCP, ECHOSCU = "/usr/bin/storescu", "/usr/bin/storescp", "/usr/bin/echoscu"


def nodelay_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for dcmtk tools, Orthanc and srnode: Nagle's algorithm off."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    env.pop("SRNODE_WEB__ENABLED", None)
    env.update(extra or {})
    return env


def dest_config(
    port: int,
    name: str = "DEST",
    *,
    backoff_initial: float = 0.5,
    backoff_max: float = 2.0,
    max_attempts: int = 20,
) -> dict:
    """A C-STORE destination on loopback (a storescp with AE DEST) with short backoff."""
    return {
        "name": name,
        "ae_title": "DEST",
        "host": "127.0.0.1",
        "port": port,
        "backoff_initial": backoff_initial,
        "backoff_max": backoff_max,
        "max_attempts": max_attempts,
    }


def write_config(
    path: Path,
    *,
    data_dir: Path,
    port: int,
    model_card: Path,
    destinations: list[dict] | None = None,
    allow: list[tuple[str, str | None]] = (("PACS", "127.0.0.1"),),
    stable_age: float = 1.0,
    database_url: str | None = None,
    extra: str = "",
) -> Path:
    lines = [
        "[node]",
        'ae_title = "SRNODE"',
        'host = "127.0.0.1"',
        f"port = {port}",
        f'data_dir = "{data_dir}"',
        "drain_timeout = 5",
        "[scheduler]",
        f"stable_age = {stable_age}",
        "tick = 0.25",
        "job_retry_delay = 1",
        "[engine]",
        'backend = "onnxruntime"',
        "threads = 1",
        f'model_dirs = ["{model_card.parent}"]',
        "[web]",
        "enabled = false",
    ]
    if database_url:
        lines += ["[database]", f'url = "{database_url}"']
    for ae, host in allow:
        lines += ["[[allow]]", f'ae_title = "{ae}"'] + ([f'host = "{host}"'] if host else [])
    for d in destinations or []:
        lines.append("[[destinations]]")
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in d.items()]
    lines += ["[[routes]]", 'name = "all"', f'model = "{model_card}"']
    if "[storage]" not in extra:  # the disk reserve is tested on its own (a small tmpfs)
        lines += ["[storage]", "min_free_gb = 0"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


class Proc:
    """A subprocess with its log in a file; killed in ``close()``."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        import subprocess

        self.args = args
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.p = subprocess.Popen(
            args,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=env or nodelay_env(),
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.p.poll() is None

    def poll(self) -> int | None:
        return self.p.poll()

    def terminate(self, timeout: float = 30) -> int | None:
        import subprocess

        if self.alive():
            self.p.terminate()
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        return self.p.returncode

    def kill9(self) -> None:
        if self.alive():
            self.p.kill()
            self.p.wait(10)

    def close(self) -> None:
        self.terminate(10)
        self._fh.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_port(port: int, timeout: float = 30.0, proc: Any = None) -> None:
    """Until something listens on ``port``; ``proc`` (a Proc or a Popen) must not exit."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = proc.text()[-3000:] if hasattr(proc, "text") else ""
            raise RuntimeError(f"process exited early ({proc.poll()}):\n{tail}")
        with contextlib.closing(socket.socket()) as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def start_node(
    log: Path, *args: str, env: dict[str, str] | None = None, command: str = "serve"
) -> Proc:
    """``srnode serve ARGS`` (or ``worker``), the one way the tests start a node: returns
    once it logged that it started (its SCP listens by then); a node that exits first
    fails with its log. Waiting on the log keeps probe connections out of the node's log.
    The ``srnode_node`` fixture (conftest.py) also stops it after the test."""
    p = Proc([SRNODE, command, *args], log, env)
    try:
        wait_for(lambda: _started(p, command), 60, interval=0.1, what=f"srnode {command} started")
    except BaseException:
        p.close()
        raise
    return p


def _started(p: Proc, command: str) -> bool:
    if not p.alive():
        raise RuntimeError(f"srnode {command} exited early:\n{p.text()[-3000:]}")
    return f"srnode {command} started" in p.text()


def start_storescp(out_dir: Path, port: int, log: Path, ae: str = "DEST") -> Proc:
    out_dir.mkdir(parents=True, exist_ok=True)
    p = Proc([STORESCP, "-aet", ae, "-od", str(out_dir), "+xa", str(port)], log)
    wait_port(port, 20, p)
    return p


def storescu(
    port: int,
    files: list[Path],
    aet: str = "PACS",
    *extra: str,
    called_ae: str = "SRNODE",
    check: bool = False,
):
    """dcmtk storescu, one association, TCP_NODELAY on; ``check``: raise if it fails."""
    import subprocess

    return subprocess.run(
        [STORESCU, "-aet", aet, "-aec", called_ae, *extra, "127.0.0.1", str(port)]
        + [str(f) for f in files],
        env=nodelay_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


def received(out_dir: Path) -> dict[str, pydicom.Dataset]:
    """SOPInstanceUID -> dataset of every file a storescp wrote to ``out_dir``."""
    out = {}
    for f in sorted(out_dir.glob("*")):
        if f.is_file():
            with contextlib.suppress(Exception):
                ds = pydicom.dcmread(f)
                out[str(ds.SOPInstanceUID)] = ds
    return out


def wait_for(pred, timeout: float, interval: float = 0.25, what: str = "condition"):
    import time

    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout} s")
        time.sleep(interval)
