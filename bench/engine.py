"""Benchmark of the engine's CPU paths on a real 512x512 CT slice, for each bundled model.

For each model, in one process and on the same threads:

1. ``backend = "auto"`` as the node runs it: every candidate path timed on the card's
   tile shape and gated on the calibration slices (``sr_engine.selection``, a fresh cache),
   which path it chose;
2. the whole ``Engine.enhance`` (intensity, tiles, data consistency) on the slice with
   every candidate path, plus OpenVINO bf16 on the whole graph (no fp32 skip: what the
   mixed precision avoids), against the peer: **PyTorch eager fp32** running the same
   network (``training.archs.RRDBNet`` with the ONNX file's weights) on the whole slice, as
   BasicSR / Real-ESRGAN scripts run it. Rounds alternate the paths; medians.

Columns: ms per slice; ratio to eager (same run); error of the slice against the fp32
engine (ONNX Runtime) after data consistency, in stored units (HU here); the gate verdict
from the calibration slices; the path ``auto`` chose. The slice is pydicom-data's
``693_UNCR.dcm`` (evaluation data: measured on, never trained on).

    .venv/bin/python bench/engine.py                     # every bundled model
    .venv/bin/python bench/engine.py --models ct-x2 --repeats 5

Never run as a test; numbers belong in bench/README.md, not in assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_slice() -> tuple[np.ndarray, object, str]:
    """pydicom-data's 512x512 CT slice (evaluation data)."""
    import data_store
    import pydicom

    from sr_engine import PixelMeta

    name = "693_UNCR.dcm"
    ds = pydicom.dcmread(Path(data_store.__file__).parent / "data" / name)
    return ds.pixel_array, PixelMeta.from_dataset(ds), name


def eager_net(card, onnx_path: Path):
    """The card's RRDBNet from training.archs with the ONNX file's weights, fp32, NCHW."""
    import onnx
    import torch
    from onnx import numpy_helper

    from training.archs.rrdbnet_arch import RRDBNet

    p = dict(card.architecture.params)
    net = RRDBNet(
        1,
        1,
        scale=p.get("scale", card.scale),
        num_feat=p["num_feat"],
        num_block=p["num_block"],
        num_grow_ch=p["num_grow_ch"],
        global_skip=p.get("global_skip"),
    ).eval()
    weights = {
        i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
        for i in onnx.load(str(onnx_path)).graph.initializer
    }
    net.load_state_dict({k: v for k, v in weights.items() if k in net.state_dict()}, strict=True)
    return net


def round_robin(runs: dict, repeats: int) -> dict[str, float]:
    """name -> median ms; one warm-up call each, then rounds visiting every run in turn."""
    for fn in runs.values():
        fn()
    ms: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            ms[name].append((time.perf_counter() - t) * 1000)
    return {k: statistics.median(v) for k, v in ms.items()}


def bench_model(name: str, px: np.ndarray, meta, args) -> dict:
    import torch

    from sr_engine import Engine
    from sr_engine.backends import MixedPrecision, create_backend
    from sr_engine.backends.openvino_backend import OpenVINOBackend, bf16_native
    from sr_engine.intensity import IntensityMap
    from sr_engine.model_card import load_card
    from sr_engine.registry import resolve_model
    from sr_engine.selection import bench_candidates, candidate_names

    card_path = resolve_model(name)
    card = load_card(card_path)
    onnx_path = card.weights_path(card_path)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        sel = bench_candidates(card_path, args.threads, cache_dir=Path(cache), all_paths=False)
    auto_s = time.perf_counter() - t

    engines = {}
    for n in candidate_names(all_paths=args.torch_fp32):
        engines[n] = Engine(card, card_path, create_backend(n, card, onnx_path, args.threads))
    if bf16_native() and "openvino-bf16" in engines:
        whole = OpenVINOBackend(onnx_path, "bf16", args.threads)
        engines["openvino-bf16 whole graph"] = Engine(
            card, card_path, MixedPrecision("openvino-bf16 whole graph", whole, None)
        )
    net = eager_net(card, onnx_path)
    x = torch.from_numpy(IntensityMap.fit(card.intensity, meta, px).forward(px)[None, None])

    def eager():
        with torch.inference_mode():
            net(x)

    runs = {"PyTorch eager fp32 (peer)": eager}
    runs.update({n: (lambda e=e: e.enhance(px, meta)) for n, e in engines.items()})
    ms = round_robin(runs, args.repeats)
    ref = engines["onnxruntime"].enhance(px, meta).pixels.astype(np.int64)
    eager_ms = ms["PyTorch eager fp32 (peer)"]
    rows = []
    for n, m in ms.items():
        row = {"path": n, "ms": m, "vs_eager": eager_ms / m}
        if n in engines:
            d = np.abs(engines[n].enhance(px, meta).pixels.astype(np.int64) - ref)
            row["p999"], row["max"] = float(np.percentile(d, 99.9)), float(d.max())
            gate_row = sel.row(n)
            row["gate"] = ("pass" if gate_row.passed else "FAIL") if gate_row else "FAIL"
            row["auto"] = n == sel.chosen
        rows.append(row)
    for e in engines.values():
        e.close()
    return {"name": name, "card": card, "sel": sel, "rows": rows, "auto_s": auto_s}


def print_model(res: dict, px_name: str) -> None:
    card, sel = res["card"], res["sel"]
    g = card.fidelity_gate()
    unit = "stored units" if g.unit == "stored" else "of the BitsStored range"
    lim = (
        f"{g.p999:g} / {g.max:g}"
        if g.unit == "stored"
        else f"{100 * g.p999:g} % / {100 * g.max:g} %"
    )
    print(
        f"\n### {res['name']} (sha256 {card.short_sha}), {px_name} 512² -> 1024², gate p99.9 / max "
        f"{lim} {unit} on the calibration slices\n"
    )
    print(
        "| path | ms per slice | vs eager | error vs fp32 on this slice, p99.9 / max (HU) "
        "| gate (calibration) | auto |"
    )
    print("|---|---|---|---|---|---|")
    for r in res["rows"]:
        if "p999" not in r:
            print(f"| {r['path']} | {r['ms']:.0f} | 1.00x | – | – | |")
            continue
        print(
            f"| {r['path']} | {r['ms']:.0f} | {r['vs_eager']:.2f}x | {r['p999']:.0f} / "
            f"{r['max']:.0f} | {r['gate']} | {'**chosen**' if r['auto'] else ''} |"
        )
    chosen = next(r for r in res["rows"] if r.get("auto"))
    passing = [r for r in res["rows"] if r.get("gate") == "pass"]
    fastest = min(passing, key=lambda r: r["ms"])
    print(
        f"\nauto chose {chosen['path']} (all paths timed and gated in {res['auto_s']:.0f} s): "
        f"{chosen['vs_eager']:.2f}x eager on the slice; fastest path passing the gate "
        f"{fastest['path']} ({100 * (chosen['ms'] / fastest['ms'] - 1):+.1f} % vs it)\n"
    )
    print("auto's own table (card tile shape, calibration slices):\n")
    print(sel.table())


def main() -> None:
    from sr_engine.cpu import cpu_flags, cpu_model, resolve_threads, vector_isa
    from sr_engine.registry import list_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", help="bundled model names (default: all)")
    ap.add_argument("--threads", type=int, default=0, help="0: one per usable core")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch-fp32", action="store_true", help="also PyTorch CPU fp32 (slow)")
    args = ap.parse_args()
    args.threads = resolve_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    names = args.models or [c.name for c, _ in list_models()]
    px, meta, px_name = load_slice()
    keep = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_int8")
    print(f"CPU: {cpu_model()} [{vector_isa()}], threads {args.threads}")
    print(f"flags: {' '.join(f for f in keep if f in cpu_flags())}")
    print(f"medians of {args.repeats} alternating rounds after one warm-up each")
    t0 = time.perf_counter()
    for n in names:
        print_model(bench_model(n, px, meta, args), px_name)
        sys.stdout.flush()
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
