"""At `serve` start the routed models' engines load in the background (with ``auto``, the
backend measurement a first job used to wait ~30 s for, unsaid): each step is a log line,
the dashboard and ``/api/models`` show where it stands, and a job takes the engine the
warm-up loaded. Real bundled models on onnxruntime (an explicit backend, so the test does
not spend a minute measuring)."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient

from dicom_node.config import Settings
from dicom_node.jobs import warmup
from dicom_node.jobs.engines import EngineCache
from dicom_node.store.database import Database
from dicom_node.web.app import create_app


def test_the_routed_models_are_the_ones_jobs_load():
    s = Settings.model_validate({})
    engines = EngineCache.from_settings(s)
    assert warmup.routed_models(s, engines) == ["ct-x2", "mr-x2", "general-x2"]
    s = Settings.model_validate(
        {"routes": [{"name": "scouts", "action": "ignore"}, {"name": "us", "modality": ["US"]}]}
    )
    (model,) = warmup.routed_models(s, engines)
    assert model == engines.model_for(None, "US")  # the key a worker uses


def test_warm_up_loads_in_the_background_says_so_and_is_shown(tmp_path, caplog):
    s = Settings.model_validate(
        {
            "node": {"data_dir": str(tmp_path / "data")},
            "engine": {"backend": "onnxruntime", "threads": 1},
            "routes": [{"name": "cr", "modality": ["CR"], "model": "general-x2"}],
        }
    )
    engines = EngineCache.from_settings(s)
    with caplog.at_level(logging.INFO, logger="dicom_node.jobs.warmup"):
        t = warmup.start(engines, s)
        assert t is not None
        t.join(300)
    said = [r.getMessage() for r in caplog.records if r.name == "dicom_node.jobs.warmup"]
    assert said[0] == "engine warm-up: general-x2 loading on onnxruntime"
    assert said[-1].startswith("engine warm-up: general-x2 ready on onnxruntime")
    (st,) = [x for x in warmup.status() if x["model"] == "general-x2"]
    assert st["state"] == "ready" and st["backend"].startswith("onnxruntime")
    assert engines.get(engines.model_for("general-x2", "CR")) is engines._engines["general-x2"]

    db = Database.from_settings(s)
    db.create_or_migrate()
    try:
        c = TestClient(create_app(s, lambda *a, **k: 0, db), client=("127.0.0.1", 1))
        page = c.get("/").text
        assert 'id="engines"' in page and "general-x2" in page and "loaded in" in page
        models = c.get("/api/models").json()
        assert any(w["model"] == "general-x2" for w in models["warm_up"])
    finally:
        db.close()
