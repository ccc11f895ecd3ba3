"""``backend = "auto"``: the fastest path on this host that passes the fidelity gate.

At the first load of a model on a host, :func:`select_backend` loads every candidate
path (:func:`candidate_names`: ONNX Runtime fp32, OpenVINO fp32, bf16 and fp16 where the
CPU has them, PyTorch CPU bf16, CUDA and TensorRT where present), times them on the
card's tile shape (a real calibration tile, ``card.tile.batch`` tiles per call,
candidates alternated, medians),
runs each through the whole engine on the calibration slices against ONNX Runtime fp32
(:mod:`sr_engine.fidelity`), drops those failing the gate and keeps the fastest of the
rest. The choice is cached in a JSON file per (CPU model and flags, model sha256, tile,
threads, candidate set and library versions) and logged in one line; later loads read it
(:mod:`sr_engine.selection_cache`).

:func:`bench_candidates` measures afresh and returns the whole table (for
``srnode models --bench``; :mod:`sr_engine.selection_table`).
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import numpy as np

from sr_engine.backends import (
    REDUCED_PRECISION_CPU,
    Backend,
    create_backend,
    cuda_usable,
    tensorrt_usable,
    torch_usable,
)
from sr_engine.cpu import resolve_threads
from sr_engine.errors import BackendUnavailable
from sr_engine.fidelity import FidelityResult, calibration_slices, compare, enhance_slices
from sr_engine.intensity import IntensityMap
from sr_engine.model_card import ModelCard
from sr_engine.selection_cache import (  # noqa: F401  (CACHE_FILE, default_cache_dir: re-exported)
    CACHE_FILE,
    _cache_path,
    _entry,
    _read_cache,
    _selection_from,
    _write_cache,
    cache_key,
    default_cache_dir,
    host_facts,
)
from sr_engine.selection_table import REFERENCE, SLICE_EDGE, Candidate, Selection
from sr_engine.tiling import pad_reflect

log = logging.getLogger(__name__)


def candidate_names(all_paths: bool = False) -> list[str]:
    """The paths ``auto`` measures here, the fp32 reference first. ``all_paths`` adds
    PyTorch CPU fp32 (never faster than ONNX Runtime, slow to time) for the bench table."""
    from sr_engine.backends.openvino_backend import bf16_native, fp16_native, openvino_usable

    names = [REFERENCE]
    bf16 = bf16_native()
    if openvino_usable() is None:
        names += ["openvino-fp32"] + (["openvino-bf16", "openvino-bf16-precise"] if bf16 else [])
        names += ["openvino-fp16"] if fp16_native() else []
    if torch_usable() is None:
        names += (["torch-cpu-fp32"] if all_paths else []) + (["torch-cpu-bf16"] if bf16 else [])
        if cuda_usable() is None:
            names += ["torch-cuda-fp16", "torch-cuda-bf16", "torch-cuda-fp32"]
    if tensorrt_usable() is None:
        names.append("tensorrt")
    return names


# -- measuring ---------------------------------------------------------------------------
def _timing_input(card: ModelCard) -> np.ndarray:
    """``card.tile.batch`` real tiles of ``card.tile.size``² in the network's range."""
    slices = calibration_slices(card)
    size = card.tile.size
    tiles = []
    for k in range(card.tile.batch):
        s = slices[k % len(slices)]
        x = IntensityMap.fit(card.intensity, s.meta, s.pixels).forward(s.pixels)
        tiles.append(pad_reflect(x, max(size, x.shape[0]), max(size, x.shape[1]))[:size, :size])
    return np.stack(tiles)[:, None].astype(np.float32)


def _per_slice_factor(card: ModelCard, card_path: Path, backend: Backend) -> float:
    """Input pixels a 512² slice costs (tiles with overlap) over those of one tile."""
    from sr_engine.engine import Engine

    plan = Engine(card, card_path, backend).plan(SLICE_EDGE, SLICE_EDGE)
    return plan.count * plan.shape[0] * plan.shape[1] / card.tile.size**2


def measure(
    card: ModelCard,
    card_path: Path,
    names: list[str],
    threads: int,
    repeats: int = 3,
    keep: bool = True,
    gate_all: bool = True,
) -> tuple[list[Candidate], dict[str, Backend]]:
    """Time and gate the paths in ``names`` (the reference first). ``gate_all`` False:
    gate from the fastest down and stop at the first that passes (what ``auto`` needs).
    Returns the rows and the loaded backends of the paths that passed (``keep``), the
    others closed."""
    backends: dict[str, Backend] = {}
    rows = {n: Candidate(n, unit=card.fidelity_gate().unit) for n in names}
    for n in names:
        try:
            backends[n] = create_backend(n, card, card.weights_path(card_path), threads)
        except BackendUnavailable as e:
            rows[n].note = str(e).removeprefix(f"backend {n}: ")
            log.info("auto: %s", e)
    if REFERENCE not in backends:
        raise BackendUnavailable(f"backend {REFERENCE}: {rows[REFERENCE].note}")
    x = _timing_input(card)
    times: dict[str, list[float]] = {n: [] for n in backends}
    for n, be in list(backends.items()):  # warm-up: compiles, kernel selection
        try:
            be.run(x)
        except Exception as e:  # a backend that loads but cannot run this graph
            rows[n].note = f"run failed: {type(e).__name__}: {e}".splitlines()[0]
            backends.pop(n).close()
            times.pop(n)
    timing = list(backends)
    for _ in range(repeats):  # alternate: a burst of load elsewhere hits all alike
        for n in timing:
            t = time.perf_counter()
            backends[n].run(x)
            times[n].append((time.perf_counter() - t) * 1000)
        best = min(min(times[n]) for n in timing)  # paths 2x slower than the best cannot
        timing = [n for n in timing if min(times[n]) <= 2 * best]  # win: stop timing them
    slices = calibration_slices(card)
    reference = enhance_slices(card, card_path, backends[REFERENCE], slices)
    factor = _per_slice_factor(card, card_path, backends[REFERENCE])
    ref_ms = statistics.median(times[REFERENCE])
    for n in backends:
        r = rows[n]
        r.ms_per_call = statistics.median(times[n])
        r.ms_per_tile = r.ms_per_call / card.tile.batch
        r.ms_per_slice = r.ms_per_tile * factor
        r.ratio = ref_ms / r.ms_per_call
    for n in sorted(backends, key=lambda n: rows[n].ms_per_call):
        r = rows[n]
        out = reference if n == REFERENCE else enhance_slices(card, card_path, backends[n], slices)
        fid: FidelityResult = compare(card, reference, out, slices)
        r.p999, r.max, r.passed, r.gated = fid.p999, fid.max, fid.passed, True
        if not r.passed:
            r.note = "over the fidelity gate"
        elif not gate_all:
            break
    for n in [n for n in backends if not rows[n].passed or not keep]:
        backends.pop(n).close()
    return [rows[n] for n in names], backends


def _choose(rows: list[Candidate], eligible: list[str] | None = None) -> str:
    """The fastest path that passed the gate, among ``eligible`` (all by default)."""
    ok = [
        r
        for r in rows
        if r.passed and r.ms_per_call is not None and (eligible is None or r.name in eligible)
    ]
    best = min(ok, key=lambda r: r.ms_per_call)  # the reference always passes
    best.chosen = True
    return best.name


# -- entry points --------------------------------------------------------------------
def select_backend(
    card: ModelCard,
    card_path: Path,
    threads: int = 0,
    cache_dir: Path | None = None,
    names: list[str] | None = None,
) -> tuple[Backend, Selection]:
    """The backend ``auto`` resolves to, loaded, and the table behind the choice."""
    threads = resolve_threads(threads)
    names = names or candidate_names()
    key = cache_key(card, threads, names)
    path = _cache_path(cache_dir)
    entry = _read_cache(path).get(key)
    if entry is not None:
        sel = _selection_from(entry)
        try:
            be = create_backend(sel.chosen, card, card.weights_path(card_path), threads)
        except BackendUnavailable as e:
            log.warning("auto: cached choice %s cannot load (%s): measuring again", sel.chosen, e)
        else:
            log.info("%s", sel.summary())
            return be, sel
    sel, backends = _measure_selection(card, card_path, names, threads, keep=True, gate_all=False)
    _write_cache(path, key, _entry(sel))
    for n, be in backends.items():
        if n != sel.chosen:
            be.close()
    log.info("%s", sel.summary())
    return backends[sel.chosen], sel


def _measure_selection(
    card: ModelCard,
    card_path: Path,
    names: list[str],
    threads: int,
    keep: bool,
    gate_all: bool,
    eligible: list[str] | None = None,
) -> tuple[Selection, dict[str, Backend]]:
    rows, backends = measure(card, card_path, names, threads, keep=keep, gate_all=gate_all)
    chosen = _choose(rows, eligible)
    sel = Selection(
        model=card.name,
        sha256=card.sha256,
        host=host_facts(threads),
        tile=[card.tile.size, card.tile.overlap, card.tile.batch],
        chosen=chosen,
        rows=rows,
        measured_at=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
    return sel, backends


def bench_candidates(
    model: str | Path,
    threads: int = 0,
    model_dirs: tuple[Path, ...] | list[Path] = (),
    cache_dir: Path | None = None,
    all_paths: bool = True,
) -> Selection:
    """Measure and gate every path for ``model`` now (no cache read) and return the table
    (``.table()`` Markdown, ``.rows``, ``.chosen``). The result also refreshes the cached
    choice of ``auto`` for the same candidate set."""
    from sr_engine.model_card import load_card
    from sr_engine.registry import resolve_model

    card_path = resolve_model(model, model_dirs)
    card = load_card(card_path, verify=True)
    threads = resolve_threads(threads)
    names = candidate_names(all_paths=all_paths)
    auto_names = candidate_names()  # the table shows every path; auto chooses among its own
    sel, _ = _measure_selection(
        card, card_path, names, threads, keep=False, gate_all=True, eligible=auto_names
    )
    if names == auto_names:
        _write_cache(_cache_path(cache_dir), cache_key(card, threads, names), _entry(sel))
    return sel


def check_gate(
    name: str,
    backend: Backend,
    card: ModelCard,
    card_path: Path,
    threads: int = 0,
    cache_dir: Path | None = None,
) -> None:
    """Raise BackendUnavailable if a configured reduced-precision CPU path fails the gate
    (the result is cached like ``auto``'s choice). Other paths pass through."""
    if name not in REDUCED_PRECISION_CPU:
        return
    threads = resolve_threads(threads)
    key = cache_key(card, threads, [name], purpose="gate")
    path = _cache_path(cache_dir)
    entry = _read_cache(path).get(key)
    if entry is None:
        slices = calibration_slices(card)
        ref = create_backend(REFERENCE, card, card.weights_path(card_path), threads)
        try:
            reference = enhance_slices(card, card_path, ref, slices)
        finally:
            ref.close()
        fid = compare(card, reference, enhance_slices(card, card_path, backend, slices), slices)
        entry = {"p999": fid.p999, "max": fid.max, "passed": fid.passed, "text": fid.describe()}
        _write_cache(path, key, entry)
    if not entry["passed"]:
        raise BackendUnavailable(
            f"backend {name}: fails the fidelity gate of {card.name} against fp32 "
            f"({entry['text']}; allowed {card.fidelity_gate().model_dump()})"
        )
