"""Loaded engines, once per model and process, shared by the workers of `srnode serve` and
by `srnode enhance`; without a named model, one is picked per modality.

The node keeps the choices of ``backend = "auto"`` (measured at the first load of a model
on a host) in ``<data_dir>/cache``; ``srnode enhance`` uses the user's cache folder
(:func:`sr_engine.selection.default_cache_dir`)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dicom_node.data_dir import DataDir


class EngineCache:
    """Engines by model (a card path or a bundled model's name), loaded on first use."""

    def __init__(
        self,
        *,
        backend: str = "auto",
        threads: int = 0,
        model_dirs: Iterable[Path] = (),
        model: str | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.backend = backend
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.threads = threads
        self.model_dirs = tuple(Path(p) for p in model_dirs)
        self.model = model
        self._engines: dict[str, Any] = {}
        self._by_modality: dict[str, str] = {}
        self._named: Path | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> EngineCache:
        e = settings.engine
        return cls(
            backend=e.backend,
            threads=e.threads,
            model_dirs=e.model_dirs,
            cache_dir=node_cache_dir(settings.node.data_dir),
        )

    def model_for(self, model: str | None, modality: str | None) -> str:
        """``model`` itself, or the model for ``modality`` from the model folders."""
        if model:
            return model
        from sr_engine.registry import model_for_modality

        return str(model_for_modality(modality or "", model_dirs=self.model_dirs))

    def get(self, model: str | Path) -> Any:
        with self._lock:
            key = str(model)
            eng = self._engines.get(key)
            if eng is None:
                from sr_engine.engine import Engine

                eng = Engine.load(
                    model,
                    backend=self.backend,
                    threads=self.threads,
                    model_dirs=self.model_dirs,
                    cache_dir=self.cache_dir,
                )
                self._engines[key] = eng
            return eng

    def resolve_named(self) -> Path:
        """The card of the model named at construction (``srnode enhance --model``)."""
        if self._named is None:
            from sr_engine.registry import resolve_model

            assert self.model is not None
            self._named = Path(resolve_model(self.model, model_dirs=self.model_dirs))
        return self._named

    def for_modality(self, modality: str) -> Any:
        if self.model is not None:
            return self.get(self.resolve_named())
        if modality not in self._by_modality:
            self._by_modality[modality] = self.model_for(None, modality)
        return self.get(self._by_modality[modality])

    def close(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                close = getattr(engine, "close", None)
                if close is not None:
                    close()
            self._engines.clear()


def node_cache_dir(data_dir: str | Path) -> Path:
    """Where the node keeps the engine choices of ``auto``."""
    return DataDir.at(data_dir).cache


def cached_choices(cache_dir: Path) -> list[dict[str, Any]]:
    """The backends ``auto`` chose, as cached in ``cache_dir`` (newest first): model,
    chosen path, CPU, threads, tile and when it was measured. Empty if nothing is cached."""
    import json

    from sr_engine.selection import CACHE_FILE

    try:
        data = json.loads((Path(cache_dir) / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return []
    rows = [
        {
            "model": e.get("model"),
            "sha256": str(e.get("sha256", ""))[:12],
            "backend": e["chosen"],
            "cpu": (e.get("host") or {}).get("cpu"),
            "threads": (e.get("host") or {}).get("threads"),
            "tile": (e.get("tile") or [None])[0],
            "measured_at": e.get("measured_at", ""),
        }
        for e in (data.values() if isinstance(data, dict) else [])
        if isinstance(e, dict) and "chosen" in e
    ]
    return sorted(rows, key=lambda r: r["measured_at"], reverse=True)
