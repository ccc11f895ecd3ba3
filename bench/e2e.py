"""End-to-end time of the Orthanc -> srnode -> Orthanc loop for one CT series, against
the time the node's engine spent on it.

A 100-slice 512x512 CT series (built from the real 512² CT slices of pydicom-data, each
slice shifted so that no two are alike, fresh UIDs) is sent by dcmtk's storescu to a
fresh Orthanc (our orthanc/ config and auto-routing plugin); Orthanc sends it to a fresh
`srnode serve`, which sends the derived series back. Phases:

  send      storescu -> Orthanc
  o-stable  Orthanc waits for its StableAge, then starts the store job
  receive   Orthanc -> srnode (first to last instance in srnode's database)
  n-stable  srnode waits for its stable_age, a scheduler tick and a worker claim
  load      the engine's load in the worker (with `auto`, the choice comes from the
            node's cache, seeded from the user's cache when that has it; else measured)
  process   job start to the worker's "derived" log line: reading, inference, derive,
            encoding and fsynced writes, pipelined; "engine" is the inference time the
            worker measured within it
  export    srnode -> Orthanc, until the last derived instance is listed by Orthanc

and the ratios the target is about: node wall (the first instance in srnode's database
to the last derived instance in Orthanc) over engine time (target <= 1.1), and node
processing + export over engine time (what the pipeline overlaps).

    .venv/bin/python bench/e2e.py [--model ct-x2|CARD.json|test] [--backend auto]
        [--slices 100] [--source-syntax explicit|j2k-lossless|jpegls-lossless]
        [--orthanc-stable 2] [--node-stable 2] [--threads 0] [--keep DIR]

`--source-syntax` sends the series compressed (pydicom's lossless encoders); the node then
decodes every slice, and writes its derived series in JPEG 2000 lossless (the default for
a losslessly compressed source).

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


#: --source-syntax choices: the transfer syntax the series is sent in
SOURCE_SYNTAXES = {
    "explicit": pydicom.uid.ExplicitVRLittleEndian,
    "j2k-lossless": pydicom.uid.JPEG2000Lossless,
    "jpegls-lossless": pydicom.uid.JPEGLSLossless,
}
#: what dcmtk's storescu must propose to send them
STORESCU_PROPOSE = {"explicit": (), "j2k-lossless": ("-xv",), "jpegls-lossless": ("-xt",)}


def _ct_series(directory: Path, n: int, syntax: str = "explicit") -> list[Path]:
    """``n`` 512² CT slices of one series from the real CT slices of pydicom-data (evaluation
    data, fine for a benchmark), each rolled by a few pixels so that no two are alike, in
    transfer syntax ``syntax`` (a :data:`SOURCE_SYNTAXES` name); the phantom series of
    tests/pacs_peers.py when pydicom-data is missing."""
    import numpy as np
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from dicom_node.derive.pixels import read_pixels

    try:
        from pydicom.data import get_testdata_file

        names = ("693_UNCR.dcm", "693_J2KR.dcm", "explicit_VR-UN.dcm")
        srcs = [get_testdata_file(name) for name in names]
        if any(x is None for x in srcs):
            raise FileNotFoundError("pydicom-data")
    except Exception as e:  # noqa: BLE001
        print(f"pydicom-data CT slices unavailable ({e}): phantom slices")
        if syntax != "explicit":
            sys.exit(f"bench/e2e.py: --source-syntax {syntax} needs pydicom-data")
        return peers.write_phantom_series(directory, "CT", n=n, size=512)
    target = SOURCE_SYNTAXES[syntax]
    template = pydicom.dcmread(srcs[0])
    bases = [read_pixels(pydicom.dcmread(x)).astype(template.pixel_array.dtype) for x in srcs]
    directory.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for i in range(n):
        ds = pydicom.dcmread(srcs[0])
        arr = np.roll(bases[i % len(bases)], (3 * i, 2 * i), axis=(0, 1))
        ds.PixelData = np.ascontiguousarray(arr).tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Modality = "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
        ds.SeriesDescription = "e2e bench"
        if target != ExplicitVRLittleEndian:
            ds.compress(target, generate_instance_uid=False)
        p = directory / f"{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def _seed_auto_cache(data_dir: Path) -> str:
    """Copy the user's cache of ``auto`` choices into the node's (so a choice measured
    before is not measured again inside the timed run)."""
    from sr_engine.selection import CACHE_FILE, default_cache_dir

    src = default_cache_dir() / CACHE_FILE
    if not src.is_file():
        return "no cached choice: auto measures at the first load (in 'load')"
    (data_dir / "cache").mkdir(parents=True, exist_ok=True)
    shutil.copy(src, data_dir / "cache" / CACHE_FILE)
    return f"auto's cache seeded from {src}"


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_ENGINE_SECONDS = re.compile(r" derived study=.*\(engine ([0-9.]+) s\)")
_BACKEND = re.compile(r"engine: model \S+ \S+ \(sha256 \w+\) on (\S+)")


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
        syntaxes = con.execute(
            "SELECT transfer_syntax, count(*) FROM instances GROUP BY transfer_syntax"
        ).fetchall()
    finally:
        con.close()
    received = ", ".join(f"{n} x {ts}" for ts, n in syntaxes)
    return {
        "first_received": first,
        "last_received": last,
        "job_started": started,
        "syntaxes": received,
    }


def run(args: argparse.Namespace) -> int:
    work = Path(args.keep or tempfile.mkdtemp(prefix="srnode-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        card = _resolve_model(args.model, work)
        from sr_engine.cpu import cpu_model, resolve_threads, vector_isa

        files = _ct_series(work / "ct", args.slices, args.source_syntax)
        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        cpu = f"{cpu_model()} [{vector_isa()}], {resolve_threads(args.threads)} engine threads"
        seeded = _seed_auto_cache(work / "data") if args.backend == "auto" else ""
        print(
            f"model {card.stem}, backend {args.backend}; {len(files)} slices 512x512 "
            f"({args.source_syntax}); {cpu}"
        )
        if seeded:
            print(seeded)

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
            text = text.replace('backend = "onnxruntime"', f'backend = "{args.backend}"')
            cfg.write_text(text)
            node = start_node(work / "node.log", "--config", str(cfg))
            try:
                client = o.client()
                t0 = time.time()
                propose = STORESCU_PROPOSE[args.source_syntax]
                peers.storescu(
                    o.dicom_port, files, "MODALITY", *propose, called_ae="ORTHANC", check=True
                )
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

    t_processing_log = _log_time(log, " processing study=")
    t_engine = float(_ENGINE_SECONDS.search(log).group(1))
    backend = m.group(1) if (m := _BACKEND.search(log)) else args.backend
    load = t_processing_log - n["job_started"]
    processing = t_derived - t_processing_log
    export = t_end - t_derived
    rows = [
        ("send (storescu -> Orthanc)", t_sent - t0),
        (f"o-stable (Orthanc StableAge {args.orthanc_stable} s)", n["first_received"] - t_sent),
        ("receive (Orthanc -> srnode)", n["last_received"] - n["first_received"]),
        (
            f"n-stable (srnode stable_age {args.node_stable} s)",
            n["job_started"] - n["last_received"],
        ),
        ("load (engine load in the worker)", load),
        ("process (read, infer, derive, write: pipelined)", processing),
        ("  of which engine (as the worker measures it)", t_engine),
        ("export (srnode -> Orthanc)", export),
    ]
    wall = t_end - t0
    node_wall = t_end - n["first_received"]
    print()
    src = args.source_syntax
    print(f"{cpu}; model {card.stem} on {backend}; {args.slices} x 512x512 CT ({src})")
    print(f"srnode received: {n['syntaxes']}")
    print()
    print(f"| phase ({args.slices} x 512² CT {src}, {card.stem}, {backend}) | seconds | share |")
    print("|---|---:|---:|")
    for name, secs in rows:
        print(f"| {name} | {secs:.2f} | {100 * secs / wall:.0f} % |")
    print(f"| **wall (storescu start -> last derived in Orthanc)** | **{wall:.2f}** | 100 % |")
    print()
    print(f"engine per slice: {t_engine / args.slices:.2f} s")
    print(
        f"node wall (first instance in srnode -> last derived in Orthanc) / engine = "
        f"{node_wall:.2f} / {t_engine:.2f} = **{node_wall / max(t_engine, 1e-9):.3f}**"
        " (target <= 1.1)"
    )
    print(
        f"without the engine load (auto measures once per host and model, then caches): "
        f"{node_wall - load:.2f} / {t_engine:.2f} = {(node_wall - load) / max(t_engine, 1e-9):.3f}"
    )
    print(
        f"(process + export) / engine = {processing + export:.2f} / {t_engine:.2f} = "
        f"{(processing + export) / max(t_engine, 1e-9):.3f}"
    )
    return 0


def _term(signum, frame):  # SIGTERM (e.g. `timeout`): unwind so peers are stopped
    raise SystemExit(128 + signum)


def main() -> int:
    import signal

    signal.signal(signal.SIGTERM, _term)
    p = argparse.ArgumentParser(description="Orthanc -> srnode -> Orthanc time vs engine time")
    p.add_argument("--model", default="ct-x2", help="model name, card path, or 'test'")
    p.add_argument("--backend", default="auto", help="engine backend (config value)")
    p.add_argument("--slices", type=int, default=100)
    p.add_argument(
        "--source-syntax",
        choices=sorted(SOURCE_SYNTAXES),
        default="explicit",
        help="transfer syntax the series is sent in (compressed: lossless)",
    )
    p.add_argument("--orthanc-stable", type=int, default=2, help="Orthanc StableAge (s)")
    p.add_argument("--node-stable", type=float, default=2.0, help="srnode stable_age (s)")
    p.add_argument("--threads", type=int, default=0, help="engine threads (0 = all cores)")
    p.add_argument("--keep", help="work in this directory and keep it")
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
