"""Loaded engines, once per model and process, shared by the workers of `srnode serve` and
by `srnode enhance`; without a named model, one is picked per modality."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class EngineCache:
    """Engines by model (a card path or a bundled model's name), loaded on first use."""

    def __init__(
        self,
        *,
        backend: str = "auto",
        threads: int = 0,
        model_dirs: Iterable[Path] = (),
        model: str | None = None,
    ) -> None:
        self.backend = backend
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
        return cls(backend=e.backend, threads=e.threads, model_dirs=e.model_dirs)

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
                    model, backend=self.backend, threads=self.threads, model_dirs=self.model_dirs
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
