"""End-to-end latency of the Orthanc -> srnode -> Orthanc loop for one CT study.

A 60-slice 512x512 CT series is sent by dcmtk's storescu to a fresh Orthanc (our
orthanc/ config and auto-routing plugin); Orthanc sends it to a fresh `srnode serve`, which
sends the derived series back. The wall time runs from the first byte sent until the last
derived instance is in Orthanc, and is split into:

  send      storescu -> Orthanc
  o-stable  Orthanc waits for its StableAge, then starts the store job
  receive   Orthanc -> srnode (first to last instance in srnode's database)
  n-stable  srnode waits for its stable_age, a scheduler tick and a worker claim
  engine    super-resolution of every slice (sr_engine, same model and settings as the
            node, measured in this process on the same files before the loop runs)
  derive    the rest of the node's processing: reading the sources, building and
            writing the derived objects (node processing time minus engine)
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
from tests.node_helpers import SRNODE, Proc, nodelay_env, write_config  # noqa: E402


def _resolve_model(name: str, work: Path) -> Path:
    if name == "test":
        from tests.onnx_models import write_test_model

        return write_test_model(work / "models")
    from sr_engine.registry import resolve_model

    try:
        return Path(resolve_model(name))
    except Exception as e:
        sys.exit(f"bench/e2e.py: model {name!r} not found ({e}); try --model test")


def _offline(files: list[Path], card: Path, threads: int) -> tuple[float, float, str]:
    """(engine seconds, derive seconds, backend) for the series, as the worker does it."""
    import io

    from dicom_node.config import DeriveSettings
    from dicom_node.derive import derive_instance
    from dicom_node.process import enhance_pixels, uid_variant
    from sr_engine.engine import Engine

    engine = Engine.load(str(card), backend="onnxruntime", threads=threads)
    settings = DeriveSettings()
    t_engine = t_derive = 0.0
    for f in files:
        t0 = time.perf_counter()
        ds = pydicom.dcmread(f)
        res = enhance_pixels(ds, engine, consistency=settings.data_consistency)
        t1 = time.perf_counter()
        out = derive_instance(
            ds, res, engine.card, settings,
            backend=getattr(engine, "backend_name", None), variant=uid_variant(settings),
        )  # fmt: skip
        out.save_as(io.BytesIO(), enforce_file_format=True)
        t2 = time.perf_counter()
        t_engine += t1 - t0
        t_derive += t2 - t1
    return t_engine, t_derive, str(getattr(engine, "backend_name", "?"))


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


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
        files = peers.write_series(work / "ct", "CT", n=args.slices, size=512)
        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        print(f"model {card.stem}; {len(files)} slices 512x512; measuring the engine offline...")
        t_engine, t_derive_off, backend = _offline(files, card, args.threads)
        print(f"engine {t_engine:.1f} s ({backend}), derive offline {t_derive_off:.1f} s")

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
            node = Proc([SRNODE, "serve", "--config", str(cfg)], work / "node.log", nodelay_env())
            try:
                peers.wait_node_started(node)
                client = o.client()
                t0 = time.time()
                peers.storescu(o.dicom_port, files, called_ae="ORTHANC", calling_ae="MODALITY")
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
    rows = [
        ("send (storescu -> Orthanc)", t_sent - t0),
        (f"o-stable (Orthanc StableAge {args.orthanc_stable} s)", n["first_received"] - t_sent),
        ("receive (Orthanc -> srnode)", n["last_received"] - n["first_received"]),
        (
            f"n-stable (srnode stable_age {args.node_stable} s)",
            n["job_started"] - n["last_received"],
        ),
        ("engine (offline measurement)", t_engine),
        ("derive (node processing - engine)", processing - t_engine),
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


def main() -> int:
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
