"""At ``serve`` start, the engines of the routed models are loaded in the background, so
the measurement ``backend = "auto"`` makes at a model's first load (tens of seconds on a
CPU) is done before the first job needs it; a job that comes earlier waits for the load
under way instead of starting its own. Each step is a log line and the console's dashboard
shows where it stands (:func:`status`)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from dicom_node.error_text import describe

log = logging.getLogger(__name__)

_lock = threading.Lock()
_status: dict[str, dict[str, Any]] = {}  # model -> state, backend, seconds, since
_stop = threading.Event()
_thread: threading.Thread | None = None


def routed_models(settings: Any, engines: Any) -> list[str]:
    """The models the enhance routes use, as the workers name them (a route without a model
    takes the model of each of its modalities; one for any modality, the general model)."""
    out: list[str] = []
    for r in settings.routes:
        if r.action != "enhance":
            continue
        for modality in r.modality or [""]:
            try:
                m = engines.model_for(r.model, modality)
            except Exception as e:  # no model serves it: the job will say so
                log.warning("engine warm-up: route %s: %s", r.name, describe(e))
                continue
            if m not in out:
                out.append(m)
    return out


def status() -> list[dict[str, Any]]:
    """Where each model's load stands: ``measuring`` (since), ``ready`` (backend, seconds)
    or ``failed`` (error); for the console and ``/api/models``."""
    with _lock:
        return [{"model": k, **v} for k, v in _status.items()]


def _set(model: str, **values: Any) -> None:
    with _lock:
        _status[model] = values


def _label(model: str) -> str:
    from pathlib import Path

    return Path(model).stem if model.endswith(".json") else model


def warm(engines: Any, models: list[str], backend: str) -> None:
    """Load each model's engine (measuring the backends with ``auto``), one after another."""
    for model in models:
        if _stop.is_set():
            return
        name = _label(model)
        _set(name, state="measuring" if backend == "auto" else "loading", since=time.time())
        log.info(
            "engine warm-up: %s %s",
            name,
            "measuring the backends (backend = auto); the first job waits for it"
            if backend == "auto"
            else f"loading on {backend}",
        )
        t0 = time.monotonic()
        try:
            eng = engines.get(model)
        except Exception as e:
            _set(name, state="failed", error=describe(e), since=time.time())
            log.error("engine warm-up: %s failed: %s", name, describe(e))
            continue
        took = time.monotonic() - t0
        _set(name, state="ready", backend=eng.backend_name, seconds=round(took, 1),
             since=time.time())  # fmt: skip
        log.info("engine warm-up: %s ready on %s in %.1f s", name, eng.backend_name, took)


def stop() -> bool:
    """No further model is loaded; True while a load is still under way (in native code:
    the process should leave with ``os._exit`` rather than wait for it)."""
    _stop.set()
    return _thread is not None and _thread.is_alive()


def start(engines: Any, settings: Any) -> threading.Thread | None:
    """Warm the routed models' engines in a daemon thread (None when no route enhances)."""
    global _thread
    models = routed_models(settings, engines)
    if not models:
        return None
    _stop.clear()
    t = _thread = threading.Thread(
        target=warm, args=(engines, models, settings.engine.backend), name="engine-warm-up",
        daemon=True,
    )  # fmt: skip
    t.start()
    return t
