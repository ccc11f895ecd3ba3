"""End-to-end latency of the Orthanc -> srnode -> Orthanc loop for one CT study.

A 60-slice 512x512 CT series is sent by dcmtk's storescu to a fresh Orthanc (our
orthanc/ config and auto-routing plugin); Orthanc sends it to a fresh `srnode serve`, which
sends the derived series back. The wall time runs from the first byte sent until the last
derived instance is in Orthanc, and is split into:

  send      storescu -> Orthanc
  o-stable  Orthanc waits for its StableAge, then starts the store job
  receive   Orthanc -> srnode (first to last instance in srnode's database)
  n-stable  srnode waits for its stable_age, a scheduler tick and a worker claim
  engine    super-resolution of every slice, as the node's worker measures it (the
            "(engine X s)" of its "derived" log line)
  derive    the rest of the node's processing (job start to that log line): reading the
            sources, building and writing (fsync) the derived objects
  export    srnode -> Orthanc, until the last derived instance is listed by Orthanc

and the ratio wall / (engine + Orthanc StableAge + srnode stable_age), the target being
<= 1.20 (overhead <= 20 %).

    .venv/bin/python bench/e2e.py [--model ct-x2|CARD.json|test] [--slices 60]
        [--orthanc-stable 2] [--node-stable 2] [--threads 0] [--keep DIR]

`--model test` uses the tiny ONNX test graph (tests/onnx_models.py) to time the plumbing.
Never run as a test; numbers vary with the load of the machine.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pydicom  # noqa: E402

from tests import pacs_peers as peers  # noqa: E402
from tests.node_helpers import start_node, write_config  # noqa: E402


def _resolve_model(name: str, work: Path) -> Path:
    if name == "test":
        from tests.onnx_models import write_test_model

        return write_test_model(work / "models")
    from sr_engine.registry import resolve_model

    try:
        return Path(resolve_model(name))
    except Exception as e:
        sys.exit(f"bench/e2e.py: model {name!r} not found ({e}); try --model test")


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_ENGINE_SECONDS = re.compile(r" derived study=.*\(engine ([0-9.]+) s\)")


def _log_time(text: str, needle: str) -> float | None:
    for line in text.splitlines():
        if needle in line and (m := _LOG_TIME.match(line)):
            return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def _node_times(data_dir: Path) -> dict[str, float]:
    """Receive and job-start times from the node's SQLite database."""
    import sqlite3

    con = sqlite3.connect(data_dir / "srnode.db")
    try:
        first, last = con.execute(
            "SELECT min(received_at), max(received_at) FROM instances"
        ).fetchone()
        (started,) = con.execute("SELECT min(started_at) FROM jobs").fetchone()
    finally:
        con.close()
    return {"first_received": first, "last_received": last, "job_started": started}


def run(args: argparse.Namespace) -> int:
    work = Path(args.keep or tempfile.mkdtemp(prefix="srnode-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        card = _resolve_model(args.model, work)
        files = peers.write_phantom_series(work / "ct", "CT", n=args.slices, size=512)
        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        print(f"model {card.stem}; {len(files)} slices 512x512")

        node_port = peers.free_port()
        with peers.orthanc(
            work / "orthanc", stable_age=args.orthanc_stable, srnode=f"127.0.0.1:{node_port}"
        ) as o:
            dest = {"name": "ORTHANC", "ae_title": "ORTHANC", "host": "127.0.0.1",
                    "port": o.dicom_port}  # fmt: skip
            cfg = write_config(
                work / "srnode.toml",
                data_dir=work / "data",
                port=node_port,
                model_card=card,
                destinations=[dest],
                allow=[("ORTHANC", "127.0.0.1")],
                stable_age=args.node_stable,
            )
            text = cfg.read_text().replace("threads = 1", f"threads = {args.threads}")
            cfg.write_text(text)
            node = start_node(work / "node.log", "--config", str(cfg))
            try:
                client = o.client()
                t0 = time.time()
                peers.storescu(o.dicom_port, files, "MODALITY", called_ae="ORTHANC", check=True)
                t_sent = time.time()

                def done() -> bool:
                    for s in peers.find_series(client, study):
                        if "SR x" in s["MainDicomTags"].get("SeriesDescription", ""):
                            return len(s["Instances"]) >= len(files)
                    return False

                peers.wait_until(done, 3600, interval=0.2, what="derived series in Orthanc")
                t_end = time.time()
            finally:
                node.close()
            log = node.text()
        n = _node_times(work / "data")
        t_derived = _log_time(log, " derived study=")
        if t_derived is None:
            print(log[-3000:])
            return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    processing = t_derived - n["job_started"]
    t_engine = float(_ENGINE_SECONDS.search(log).group(1))
    t_derive = processing - t_engine
    rows = [
        ("send (storescu -> Orthanc)", t_sent - t0),
        (f"o-stable (Orthanc StableAge {args.orthanc_stable} s)", n["first_received"] - t_sent),
        ("receive (Orthanc -> srnode)", n["last_received"] - n["first_received"]),
        (
            f"n-stable (srnode stable_age {args.node_stable} s)",
            n["job_started"] - n["last_received"],
        ),
        ("engine (as the worker measures it)", t_engine),
        ("derive (read, derive, write: processing - engine)", t_derive),
        ("export (srnode -> Orthanc)", t_end - t_derived),
    ]
    wall = t_end - t0
    ideal = t_engine + args.orthanc_stable + args.node_stable
    print()
    print(f"| phase ({args.slices} x 512x512 CT, model {card.stem}) | seconds | share |")
    print("|---|---:|---:|")
    for name, secs in rows:
        print(f"| {name} | {secs:.2f} | {100 * secs / wall:.0f} % |")
    print(f"| **wall** | **{wall:.2f}** | 100 % |")
    print()
    print(f"node processing as run: {processing:.2f} s (engine + derive)")
    print(
        f"ratio wall / (engine + stable ages) = {wall:.2f} / {ideal:.2f} = {wall / ideal:.2f} "
        f"(target <= 1.20)"
    )
    return 0


def _term(signum, frame):  # SIGTERM (e.g. `timeout`): unwind so peers are stopped
    raise SystemExit(128 + signum)


def main() -> int:
    import signal

    signal.signal(signal.SIGTERM, _term)
    p = argparse.ArgumentParser(description="Orthanc -> srnode -> Orthanc latency")
    p.add_argument("--model", default="ct-x2", help="model name, card path, or 'test'")
    p.add_argument("--slices", type=int, default=60)
    p.add_argument("--orthanc-stable", type=int, default=2, help="Orthanc StableAge (s)")
    p.add_argument("--node-stable", type=float, default=2.0, help="srnode stable_age (s)")
    p.add_argument("--threads", type=int, default=0, help="engine threads (0 = all cores)")
    p.add_argument("--keep", help="work in this directory and keep it")
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
