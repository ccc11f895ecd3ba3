"""Durable receive rate of `srnode serve` against Orthanc, same sender, same run.

500 CT instances of 512x512 16-bit are sent by dcmtk's storescu (TCP_NODELAY=1) over 1
and over 4 associations, to srnode (durable receive: fsync + database row before each
Success) with and without its pynetdicom fast path (``node.fast_receive``), and to Orthanc
with its defaults (``SyncStorageArea`` on: it fsyncs too; plugins off). dcmtk's storescp
(no fsync) can be added as a reference row. Prints instances/s and the ratios.

    .venv/bin/python bench/receive.py [--count 500] [--repeat 3] [--storescp] [--keep DIR]

Target: srnode >= 1.5x Orthanc on 1 association, with the receive path it ships.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.node_helpers import free_port, wait_port  # noqa: E402

SRNODE = ROOT / ".venv" / "bin" / "srnode"
STORESCU, STORESCP = "/usr/bin/storescu", "/usr/bin/storescp"
ORTHANC = "/usr/sbin/Orthanc"


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["TCP_NODELAY"] = "1"
    return e


def make_instances(out: Path, count: int) -> list[Path]:
    """``count`` 512x512 16-bit CT slices of one series, CT_small's header, fresh UIDs."""
    out.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((xx - 256) ** 2 + (yy - 256) ** 2 < 200**2).astype(np.int16) * 1040
    files = []
    for i in range(count):
        ds = base.copy()
        ds.file_meta = base.file_meta
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        img = body + rng.integers(-20, 20, size=(512, 512), dtype=np.int16)
        ds.PixelData = img.astype("<i2").tobytes()
        p = out / f"ct{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        files.append(p)
    return files


def send(port: int, files: list[Path], assocs: int, called: str) -> float:
    """Wall seconds for ``assocs`` parallel storescu runs to send all ``files``."""
    chunks = [files[i::assocs] for i in range(assocs)]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [STORESCU, "-aet", "BENCH", "-aec", called, "127.0.0.1", str(port), *map(str, c)],
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for c in chunks
    ]
    errs = [p.communicate()[1] for p in procs]
    dt = time.perf_counter() - t0
    for p, e in zip(procs, errs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {e.decode(errors='replace')[-500:]}")
    return dt


def start_srnode(
    work: Path, port: int, fsync: bool = True, receivers: int = 1, fast: bool = True
) -> subprocess.Popen:
    cfg = work / "srnode.toml"
    lines = [
        "[node]",
        'host = "127.0.0.1"',
        f"port = {port}",
        f'data_dir = "{work / "node"}"',
        "max_associations = 16",
        f"receivers = {receivers}",
        f"fast_receive = {'true' if fast else 'false'}",
        "[scheduler]",
        "stable_age = 3600",  # receive only: no processing during the run
        "[web]",
        "enabled = false",
        "[spool]",
        f"fsync = {'true' if fsync else 'false'}",
        "[[allow]]",
        'ae_title = "BENCH"',
    ]
    cfg.write_text("\n".join(lines) + "\n")
    with open(work / "srnode.log", "ab") as log:
        p = subprocess.Popen(
            [str(SRNODE), "serve", "--config", str(cfg)],
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_port(port, 60, p)
    except (RuntimeError, TimeoutError) as e:
        tail = (work / "srnode.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"srnode did not start: {e}\n{tail}") from None
    return p


def start_storescp(work: Path, port: int) -> subprocess.Popen:
    out = work / "storescp"
    out.mkdir(exist_ok=True)
    p = subprocess.Popen(
        [STORESCP, "-aet", "STORESCP", "-od", str(out), str(port)],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, 60, p)
    return p


def start_orthanc(work: Path, port: int) -> subprocess.Popen:
    """Orthanc with its defaults for storage (SyncStorageArea true: fsync before Success),
    no plugins, any calling AE accepted."""
    cfg = {
        "Name": "bench",
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "HttpPort": free_port(),
        "RemoteAccessAllowed": False,
        "StorageDirectory": str(work / "orthanc"),
        "IndexDirectory": str(work / "orthanc"),
        "SyncStorageArea": True,
        "StorageCompression": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "Plugins": [],
    }
    (work / "orthanc.json").write_text(json.dumps(cfg))
    with open(work / "orthanc.log", "ab") as log:
        p = subprocess.Popen(
            [ORTHANC, str(work / "orthanc.json")], env=env(), stdout=log, stderr=log
        )
    wait_port(port, 60, p)
    return p


def disk_ms(folder: Path, n: int = 100) -> tuple[float, float]:
    """Median ms to store one 512 KiB file the spool's way (dicom_node.spool.atomic_write),
    without and with the fsyncs: the floor the durable receive pays per instance."""
    from dicom_node.spool import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(512 * 1024)
    out = []
    for fsync in (False, True):
        times = []
        for i in range(n):
            t = time.perf_counter()
            atomic_write(folder / f"{fsync}-{i}.dcm", data, fsync=fsync, parent_exists=True)
            times.append((time.perf_counter() - t) * 1000)
        out.append(statistics.median(times))
    return out[0], out[1]


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all threads) and its live children, from /proc."""
    pids = [pid]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(_stat(int(d.name))[1]) == pid:
                    pids.append(int(d.name))
    total = 0
    for p in pids:
        with contextlib.suppress(OSError, IndexError):
            f = _stat(p)
            total += int(f[11]) + int(f[12])
    return total / os.sysconf("SC_CLK_TCK")


def stop(p: subprocess.Popen) -> None:
    p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep")
    ap.add_argument(
        "--receivers",
        type=int,
        nargs="+",
        default=[1],
        help="srnode rows with this many receiver processes (node.receivers)",
    )
    ap.add_argument("--storescp", action="store_true", help="add dcmtk storescp (no fsync)")
    ap.add_argument(
        "--no-fsync-row",
        action="store_true",
        help="also measure srnode with spool.fsync = false (not durable)",
    )
    a = ap.parse_args()
    for tool in (STORESCU, STORESCP, ORTHANC):
        if not shutil.which(tool):
            print(f"{tool} missing (apt-get install dcmtk)", file=sys.stderr)
            return 2
    work = a.keep or Path(tempfile.mkdtemp(prefix="srnode-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        files = make_instances(work / "in", a.count)
        results: dict[tuple[str, int], list[float]] = {}
        cpu_ms: dict[tuple[str, int], list[float]] = {}
        receivers = []
        for r in a.receivers:
            name = "srnode" if r == 1 else f"srnode-x{r}"
            receivers += [name, f"{name}-stock"]
        receivers += ["orthanc"] + (["storescp"] if a.storescp else [])
        receivers += ["srnode-nofsync"] if a.no_fsync_row else []
        for r in range(a.repeat):
            for assocs in (1, 4):
                for name in receivers:
                    run_dir = work / f"{name}-{assocs}-{r}"
                    run_dir.mkdir()
                    port = free_port()
                    if name.startswith("srnode"):
                        kw = {
                            "fsync": name != "srnode-nofsync",
                            "receivers": int(name.split("-x")[1].split("-")[0])
                            if "-x" in name
                            else 1,
                            "fast": not name.endswith("-stock"),
                        }
                        try:
                            proc = start_srnode(run_dir, port, **kw)
                        except RuntimeError as e:  # e.g. the port was taken meanwhile
                            print(f"retrying: {e}", file=sys.stderr)
                            port = free_port()
                            proc = start_srnode(run_dir, port, **kw)
                        called = "SRNODE"
                    elif name == "orthanc":
                        proc = start_orthanc(run_dir, port)
                        called = "ORTHANC"
                    else:
                        proc = start_storescp(run_dir, port)
                        called = "STORESCP"
                    try:
                        cpu0 = cpu_seconds(proc.pid)
                        dt = send(port, files, assocs, called)
                        cpu = cpu_seconds(proc.pid) - cpu0
                    finally:
                        stop(proc)
                    results.setdefault((name, assocs), []).append(a.count / dt)
                    cpu_ms.setdefault((name, assocs), []).append(cpu / a.count * 1000)
                    shutil.rmtree(run_dir, ignore_errors=True)
        print(
            f"\n{a.count} x 512x512 16-bit CT, dcmtk storescu sender, TCP_NODELAY=1, "
            f"{os.cpu_count()} cores, median of {a.repeat}\n"
        )
        plain, durable = disk_ms(work / "disk")
        print(
            f"disk: one 512 KiB spool file {plain:.2f} ms without fsync, {durable:.2f} ms "
            "with the file and folder fsynced (medians of 100)\n"
        )
        print("| receiver | 1 association | 4 associations |")
        print("|---|---|---|")
        for name in receivers:
            cells = []
            for assocs in (1, 4):
                v = results[(name, assocs)]
                c = statistics.median(cpu_ms[(name, assocs)])
                cells.append(
                    f"{statistics.median(v):.0f}/s ({min(v):.0f}-{max(v):.0f}), "
                    f"receiver CPU {c:.2f} ms/instance"
                )
            print(f"| {name} | {cells[0]} | {cells[1]} |")

        def med(name: str, n: int) -> float:
            return statistics.median(results[(name, n)])

        for name in receivers:
            if not name.startswith("srnode"):
                continue
            r1, r4 = (med(name, n) / med("orthanc", n) for n in (1, 4))
            print(f"| ratio {name}/orthanc | {r1:.2f}x (target >= 1.5) | {r4:.2f}x |")
        for name in receivers:
            if name.startswith("srnode") and name.endswith("-stock"):
                fast = name.removesuffix("-stock")
                g1, g4 = (med(fast, n) / med(name, n) - 1 for n in (1, 4))
                print(f"| fast path gain ({fast} vs {name}) | {g1:+.0%} | {g4:+.0%} |")
    finally:
        if a.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
