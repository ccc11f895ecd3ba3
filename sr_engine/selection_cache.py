"""The cache of ``auto``'s choices and of the fidelity gate's verdicts: one JSON file in
the cache directory, one entry per key (CPU model and flags, model sha256, tile, threads,
candidate set, library versions and gate), written atomically; a file that cannot be read
or written means measuring again, never a failed load."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from sr_engine.cpu import cpu_flags, cpu_model, vector_isa
from sr_engine.model_card import ModelCard
from sr_engine.selection_table import Candidate, Selection

log = logging.getLogger(__name__)

CACHE_FILE = "engine-backends.json"


def default_cache_dir() -> Path:
    """``$SRNODE_CACHE_DIR``, else ``$XDG_CACHE_HOME/srnode``, else ``~/.cache/srnode``."""
    if os.environ.get("SRNODE_CACHE_DIR"):
        return Path(os.environ["SRNODE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "srnode"


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return ""


def host_facts(threads: int) -> dict:
    return {
        "cpu": cpu_model(),
        "isa": vector_isa(),
        "flags_sha256": hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest(),
        "threads": threads,
    }


def cache_key(card: ModelCard, threads: int, names: list[str], purpose: str = "auto") -> str:
    """What a cached choice depends on, hashed: CPU model and flags, the weights, the
    tile, the threads, the candidate set, the library versions and the gate."""
    facts = {
        "purpose": purpose,
        **host_facts(threads),
        "sha256": card.sha256,
        "tile": [card.tile.size, card.tile.overlap, card.tile.batch],
        "candidates": names,
        "versions": {p: _version(p) for p in ("onnxruntime", "openvino", "torch", "tensorrt")},
        "gate": card.fidelity_gate().model_dump(),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _cache_path(cache_dir: Path | None) -> Path:
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / CACHE_FILE


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, key: str, entry: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path)
        data[key] = entry
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as e:  # a read-only home: measure again next time, never fail a load
        log.warning("auto: cannot write the backend cache %s: %s", path, e)


def _selection_from(entry: dict) -> Selection:
    rows = [Candidate(**r) for r in entry.get("rows", [])]
    return Selection(**{**entry, "rows": rows, "cached": True})


def _entry(sel: Selection) -> dict:
    d = asdict(sel)
    d.pop("cached")
    return d
