"""Benchmark of the inference engine on one 512x512 16-bit slice, x2.

Runs, in the same process and on the same threads:

* PyTorch eager (and channels-last) executing RRDBNet from ``training.archs``;
* ONNX Runtime on the ONNX export of that very network, with ORT's default session
  options and with srnode's (``sr_engine.backends.onnxruntime_backend``);
* the whole ``Engine.enhance`` (intensity, tiles, consistency) untiled and tiled.

For each: median ms per slice, achieved GFLOP/s (2 x multiply-adds of every convolution,
counted with forward hooks) and the fraction of this CPU's fp32 peak. The peak is
measured here: a C loop of independent fused multiply-adds on the widest vectors the
compiler targets (``-O3 -march=native``, 12 independent accumulators, one OpenMP thread per core
used), compiled with gcc at run time; without gcc, a large numpy sgemm stands in (a lower
bound of the peak) and the table says so.

    .venv/bin/python bench/engine.py            # RRDBNet 32/4/16, a few minutes on 2 cores
    .venv/bin/python bench/engine.py --full     # RRDBNet 64/23/32 (ESRGAN), much longer
    .venv/bin/python bench/engine.py --full --runs eager ort   # only those rows

Every row runs a warm-up and ``--repeats`` calls: on 2 AVX2 cores the quick config takes
~3 minutes, ``--full`` with every row well over an hour (eager alone is minutes a call).

Never run as a test; numbers belong in the README, not in assertions.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FMA_C = r"""
#include <omp.h>
/* the widest vectors this CPU has: 12 chains + 2 constants fit its vector registers
   (AVX-512: 32 zmm; AVX2: 16 ymm), so nothing spills and both FMA pipes stay busy */
#if defined(__AVX512F__)
#define VW 64
#elif defined(__AVX__)
#define VW 32
#else
#define VW 16
#endif
#define LANES (VW / 4)
typedef float vf __attribute__((vector_size(VW), aligned(VW)));
#define STEP(a) a = a * m + c
int fma_bits(void) { return VW * 8; }
double fma_flops(long iters, int threads) {
    double total = 0;
    #pragma omp parallel num_threads(threads) reduction(+:total)
    {
        vf m, c, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11;
        for (int l = 0; l < LANES; l++) {
            m[l] = 0.999999f; c[l] = 1e-6f;
            a0[l] = 1; a1[l] = 2; a2[l] = 3; a3[l] = 4; a4[l] = 5; a5[l] = 6;
            a6[l] = 7; a7[l] = 8; a8[l] = 9; a9[l] = 10; a10[l] = 11; a11[l] = 12;
        }
        for (long i = 0; i < iters; i++) {
            STEP(a0); STEP(a1); STEP(a2); STEP(a3); STEP(a4); STEP(a5);
            STEP(a6); STEP(a7); STEP(a8); STEP(a9); STEP(a10); STEP(a11);
        }
        vf s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
        float f = 0;
        for (int l = 0; l < LANES; l++) f += s[l];
        total += (f != 12345.f) ? 2.0 * 12 * LANES * (double)iters : 0;
    }
    return total;
}
"""


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def round_robin(runs: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """name -> (median wall ms, median process CPU ms) per call; one warm-up call each, then
    ``repeats`` rounds that visit every run in turn, so a burst of load elsewhere on the
    shared machine hits all of them alike."""
    for fn in runs.values():
        fn()
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall[name].append((time.perf_counter() - t) * 1000)
            cpu[name].append((time.process_time() - c) * 1000)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in runs}


def fp32_peak(threads: int) -> tuple[float, float, str]:
    """(GFLOP/s wall, GFLOP per CPU-second of one core, how): an FMA loop compiled with
    gcc; else numpy sgemm (a lower bound). Best of 5."""
    try:
        d = Path(tempfile.mkdtemp())
        (d / "fma.c").write_text(FMA_C)
        subprocess.run(
            ["gcc", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "fma.c", "-o", "f.so"],
            cwd=d,
            check=True,
            capture_output=True,
        )
        lib = ctypes.CDLL(str(d / "f.so"))
        lib.fma_flops.restype = ctypes.c_double
        lib.fma_flops.argtypes = [ctypes.c_long, ctypes.c_int]
        bits = int(lib.fma_bits())
        lib.fma_flops(2_000_000, threads)  # warm up, clocks up
        best, core = 0.0, 0.0
        for _ in range(5):
            t, c = time.perf_counter(), time.process_time()
            flops = lib.fma_flops(20_000_000, threads)
            best = max(best, flops / (time.perf_counter() - t) / 1e9)
            core = max(core, flops / (time.process_time() - c) / 1e9)
        return (
            best,
            core,
            f"FMA loop (gcc -O3 -march=native, 12 independent {bits}-bit FMA chains, "
            f"{threads} thr)",
        )
    except (OSError, subprocess.CalledProcessError, AttributeError):
        n = 4096
        a = np.random.rand(n, n).astype(np.float32)
        a @ a
        t, c = time.perf_counter(), time.process_time()
        for _ in range(3):
            a @ a
        gf = 3 * 2 * n**3 / (time.perf_counter() - t) / 1e9
        core = 3 * 2 * n**3 / (time.process_time() - c) / 1e9
        return gf, core, f"numpy sgemm {n}^3 (no gcc: a lower bound of the peak)"


def conv_flops(net, x) -> float:
    """2 x multiply-adds of every Conv2d for input ``x`` (FLOPs)."""
    import torch

    total = 0

    def hook(m, inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += 2 * k * out.numel()

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        net(x)
    for h in hs:
        h.remove()
    return float(total)


def load_slice() -> tuple[np.ndarray, object]:
    """A real 512x512 16-bit CT slice (pydicom-data), else a synthetic one."""
    from sr_engine import PixelMeta

    try:
        import data_store
        import pydicom

        ds = pydicom.dcmread(Path(data_store.__file__).parent / "data" / "693_UNCR.dcm")
        px = ds.pixel_array
        return px, PixelMeta.from_dataset(ds)
    except Exception:
        yy, xx = np.mgrid[0:512, 0:512]
        px = (1024 + 800 * np.sin(xx / 17) * np.cos(yy / 23)).astype(np.int16)
        return px, PixelMeta(modality="CT", bits_stored=16, pixel_representation=1)


def gpu_report(card_path: Path, px: np.ndarray, meta: object, args: argparse.Namespace) -> None:
    """Engine.enhance on the CUDA backends against ONNX Runtime on the CPU, same slice."""
    from sr_engine import Engine

    ref_engine = Engine.load(card_path, backend="onnxruntime", threads=args.threads)
    ref = ref_engine.enhance(px, meta, consistency=False).pixels.astype(np.int64)
    ort_ms = median_ms(lambda: ref_engine.enhance(px, meta), 1, warmup=0)
    print(
        f"\n{card_path.stem}: 512x512 slice x2; ONNX Runtime CPU ({args.threads} threads) "
        f"{ort_ms:.0f} ms/slice (tiled, with consistency)"
    )
    print(
        "| backend | tiled ms/slice | untiled ms/slice | max abs diff vs ORT (stored) | "
        "mean abs diff | consistency RMSE |"
    )
    print("|---|---|---|---|---|---|")
    for name in ("torch-cuda-fp16", "torch-cuda-bf16", "torch-cuda-fp32"):
        e = Engine.load(card_path, backend=name)
        out = e.enhance(px, meta, consistency=False).pixels.astype(np.int64)
        d = np.abs(out - ref)
        tiled = median_ms(lambda e=e: e.enhance(px, meta), max(3, args.repeats), warmup=2)
        whole = median_ms(
            lambda e=e: e.enhance(px, meta, untiled=True), max(3, args.repeats), warmup=2
        )
        rmse = e.enhance(px, meta).consistency_rmse
        print(
            f"| {e.backend_name} | {tiled:.1f} | {whole:.1f} | {d.max()} | {d.mean():.3f} | "
            f"{rmse:.3f} |"
        )


RUNS = [
    "eager",
    "eager-cl",
    "ort-default",
    "ort-norewrite",
    "ort",
    "engine-untiled",
    "engine-tiled",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="RRDBNet 64/23/32 (ESRGAN size)")
    ap.add_argument("--feat", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--grow", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tile", type=int, default=288, help="card tile size (max tile edge)")
    ap.add_argument("--overlap", type=int, default=16)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--runs",
        nargs="+",
        default=RUNS,
        choices=RUNS,
        metavar="RUN",
        help=f"rows to measure (eager always; the full config takes ~1 h for all): {RUNS}",
    )
    ap.add_argument(
        "--gpu",
        action="store_true",
        help="instead: Engine on torch-cuda-fp16/bf16 vs ONNX Runtime (parity, ms)",
    )
    args = ap.parse_args()
    if args.full:
        args.feat, args.blocks, args.grow = 64, 23, 32

    import torch

    from sr_engine import Engine
    from sr_engine.backends.onnxruntime_backend import OnnxRuntimeBackend
    from sr_engine.model_card import ModelCard, sha256_of
    from training.archs.rrdbnet_arch import RRDBNet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = f"RRDBNet {args.feat}/{args.blocks}/{args.grow}"
    net = RRDBNet(1, 1, 2, args.feat, args.blocks, args.grow).eval()
    params = sum(p.numel() for p in net.parameters()) / 1e6

    px, meta = load_slice()
    from sr_engine.intensity import IntensityMap
    from sr_engine.model_card import Intensity

    imap = IntensityMap.fit(Intensity(model="ct_hu", window=(-1024, 3071)), meta, px)
    x = imap.forward(px)[None, None]
    xt = torch.from_numpy(x)
    flops = conv_flops(net, xt)

    peak, core_peak, how = fp32_peak(args.threads)

    work = Path(tempfile.mkdtemp())
    onnx_path = work / "rrdb-x2.onnx"
    t = time.perf_counter()
    torch.onnx.export(
        net,
        (torch.rand(1, 1, 64, 64),),
        str(onnx_path),
        input_names=["input"],
        output_names=["output"],
        dynamic_shapes=({0: "N", 2: "H", 3: "W"},),
        dynamo=True,
        opset_version=18,
        optimize=True,
        external_data=False,  # one file: the card's sha256 covers all the weights
        verbose=False,
    )
    export_s = time.perf_counter() - t
    card = ModelCard(
        name="bench-x2",
        version="bench",
        scale=2,
        architecture={"name": "RRDBNet", "params": {"num_feat": args.feat}},
        intensity={"model": "ct_hu", "window": [-1024, 3071]},
        tile={"size": args.tile, "overlap": args.overlap, "batch": 2},
        weights=onnx_path.name,
        sha256=sha256_of(onnx_path),
    )
    card_path = work / "bench-x2.json"
    card_path.write_text(card.to_json())

    if args.gpu:
        gpu_report(card_path, px, meta, args)
        return

    import onnxruntime as ort

    with torch.inference_mode():
        ref = net(xt).numpy()
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    xcl = xt.contiguous(memory_format=torch.channels_last)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    plain = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    norw = OnnxRuntimeBackend(onnx_path, threads=args.threads, rewrite=False)
    ours = OnnxRuntimeBackend(onnx_path, threads=args.threads)
    err = float(np.abs(ours.run(x) - ref).max())
    engine = Engine.load(card_path, backend="onnxruntime", threads=args.threads)
    plan = engine.plan(*px.shape)
    seam = -1
    if "engine-tiled" in args.runs and "engine-untiled" in args.runs:
        a = engine.enhance(px, meta, consistency=False).pixels.astype(np.int64)
        b = engine.enhance(px, meta, consistency=False, untiled=True).pixels.astype(np.int64)
        seam = int(np.abs(a - b).max())

    def eager(m, inp):
        def run():
            with torch.inference_mode():
                m(inp)

        return run

    tname = f"Engine.enhance tiled {plan.count}x{plan.shape[0]}x{plan.shape[1]}"
    every = {
        "eager": ("PyTorch eager (NCHW)", eager(net, xt)),
        "eager-cl": ("PyTorch eager channels_last", eager(net_cl, xcl)),
        "ort-default": ("ONNX Runtime, default options", lambda: plain.run(None, {"input": x})),
        "ort-norewrite": ("ONNX Runtime, srnode options, no rewrite", lambda: norw.run(x)),
        "ort": ("ONNX Runtime, srnode options + rewrite", lambda: ours.run(x)),
        "engine-untiled": (
            "Engine.enhance untiled (ORT + DC)",
            lambda: engine.enhance(px, meta, untiled=True),
        ),
        "engine-tiled": (tname, lambda: engine.enhance(px, meta)),
    }
    runs = dict(every[k] for k in every if k in args.runs or k == "eager")
    res = round_robin(runs, args.repeats)

    peak2, core2, _ = fp32_peak(args.threads)  # again: the machine is shared, keep the higher
    peak, core_peak = max(peak, peak2), max(core_peak, core2)
    quiet_peak = core_peak * args.threads
    e_wall, e_cpu = res["PyTorch eager (NCHW)"]
    print(f"\n{cfg} ({params:.2f} M params), x2, 512x512 16-bit CT slice -> 1024x1024")
    print(
        f"threads {args.threads}; conv work {flops / 1e9:.1f} GFLOP per slice; "
        f"medians of {args.repeats} interleaved rounds; ONNX export {export_s:.1f} s"
    )
    print(
        f"fp32 peak by {how}: {core_peak:.0f} GFLOP per CPU-second of one core "
        f"(x {args.threads} = {quiet_peak:.0f} GFLOP/s on a quiet machine); "
        f"{peak:.0f} GFLOP/s wall-clock now"
    )
    print(
        "wall: elapsed time on the shared machine; CPU: this process's CPU time "
        "(all threads), i.e. the time the work needs with the cores to itself\n"
    )
    print(
        "| run | wall ms/slice | CPU ms/slice | GFLOP/s (wall) | GFLOP per CPU-s "
        "| % of peak (CPU) | vs eager (wall) | vs eager (CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    out = []
    for name, (wall, cpu) in res.items():
        gf = flops / (wall / 1000) / 1e9
        gfc = flops / (cpu / 1000) / 1e9
        frac = gfc / core_peak
        print(
            f"| {name} | {wall:.0f} | {cpu:.0f} | {gf:.1f} | {gfc:.1f} | {100 * frac:.1f} % "
            f"| {e_wall / wall:.2f}x | {e_cpu / cpu:.2f}x |"
        )
        out.append(
            {"run": name, "wall_ms": wall, "cpu_ms": cpu, "gflops_wall": gf, "peak_fraction": frac}
        )
    if "Engine.enhance untiled (ORT + DC)" in res and tname in res:
        (uw, uc), (tw, tc) = res["Engine.enhance untiled (ORT + DC)"], res[tname]
    else:
        uw = uc = tw = tc = float("nan")
    if uw == uw:  # both Engine rows measured (not NaN)
        print(
            f"\ntiling: {plan.count} tiles of {plan.shape[0]}x{plan.shape[1]} (card tile "
            f"{args.tile}, overlap {args.overlap}, batch 2); computed-pixel overhead "
            f"{100 * plan.overhead:.1f} %; time overhead wall {100 * (tw / uw - 1):+.1f} %, "
            f"CPU {100 * (tc / uc - 1):+.1f} %; tiled vs untiled max diff {seam} stored units"
        )
    print(f"ONNX Runtime vs PyTorch max abs diff {err:.2e} (network range [0, 1])")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": cfg,
                    "threads": args.threads,
                    "gflop": flops / 1e9,
                    "core_peak": core_peak,
                    "wall_peak": peak,
                    "peak_method": how,
                    "rows": out,
                    "tiling_overhead_wall": tw / uw - 1,
                    "tiling_overhead_cpu": tc / uc - 1,
                    "seam": seam,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
