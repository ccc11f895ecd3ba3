"""Size on the wire of a derived series in each output transfer syntax.

Real sources from pydicom-data (evaluation only): a CT slice stored JPEG 2000 lossless
(693_J2KR, 512x512) and a CR (RG3_J2KR, 1760x1760, 15-bit). Each is super-resolved with
its bundled model (ct-x2, general-x2) as the node does, then sent with C-STORE to dcmtk's
storescp (+xa) once per output transfer syntax. Prints the received file sizes, the ratio
to explicit VR little endian and the encode time, and checks that the pixels came back
identical.

    .venv/bin/python bench/output_size.py [--syntax jpeg2000-lossless ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dicom_node.config_routing import DimseDestination  # noqa: E402
from dicom_node.derive.encoding import SYNTAX_NAMES, encode  # noqa: E402
from dicom_node.derive.process import enhance_instance, save_derived  # noqa: E402
from dicom_node.export.send import send  # noqa: E402
from sr_engine.cpu import cpu_model  # noqa: E402
from sr_engine.engine import Engine  # noqa: E402
from tests.node_helpers import free_port, wait_port  # noqa: E402

STORESCP = "/usr/bin/storescp"
SOURCES = [("CT", "693_J2KR.dcm", "ct-x2"), ("CR", "RG3_J2KR.dcm", "general-x2")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--syntax", action="append", choices=list(SYNTAX_NAMES))
    args = ap.parse_args()
    syntaxes = args.syntax or list(SYNTAX_NAMES)
    from pydicom.data import get_testdata_file

    work = Path(tempfile.mkdtemp(prefix="srnode-size-"))
    rows = []
    for modality, name, model in SOURCES:
        path = get_testdata_file(name)
        if path is None:
            raise SystemExit(f"{name} not found: pip install pydicom-data")
        src = pydicom.dcmread(path)
        engine = Engine.load(model, backend="onnxruntime")
        t0 = time.perf_counter()
        out, _ = enhance_instance(src, engine)
        seconds = time.perf_counter() - t0
        stored = save_derived(out, work / modality / "derived.dcm")
        want = pydicom.dcmread(stored).pixel_array
        print(
            f"{modality} {name}: {src.Rows}x{src.Columns} -> {out.Rows}x{out.Columns}, "
            f"source file {Path(path).stat().st_size:,} B, enhanced in {seconds:.1f} s"
        )
        for syntax in syntaxes:
            t0 = time.perf_counter()
            encode(pydicom.dcmread(stored), SYNTAX_NAMES[syntax])
            enc = time.perf_counter() - t0
            port = free_port()
            inbox = work / modality / syntax
            inbox.mkdir(parents=True)
            scp = subprocess.Popen(
                [STORESCP, "-aet", "DEST", "-od", str(inbox), "+xa", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_port(port, 10)
                dest = DimseDestination(
                    name="d", ae_title="DEST", host="127.0.0.1", port=port, transfer_syntax=syntax
                )
                res = send(dest, [stored], "SRNODE")
            finally:
                scp.terminate()
                scp.wait(10)
            assert res.all_ok, res.failed
            (got,) = [p for p in inbox.iterdir() if p.is_file()]
            same = np.array_equal(pydicom.dcmread(got).pixel_array, want)
            rows.append((modality, syntax, got.stat().st_size, enc, same))
    print(f"\nCPU: {cpu_model()}\n")
    print("| series | transfer syntax | received file | vs explicit LE | transcode s | pixels |")
    print("|---|---|---:|---:|---:|---|")
    base = {m: size for m, s, size, _, _ in rows if s == "explicit-vr-little-endian"}
    for modality, syntax, size, enc, same in rows:
        ratio = f"{size / base[modality]:.3f}" if modality in base else "-"
        print(
            f"| {modality} | {syntax} | {size:,} B | {ratio} | {enc:.2f} | "
            f"{'identical' if same else 'DIFFERENT'} |"
        )


if __name__ == "__main__":
    main()
