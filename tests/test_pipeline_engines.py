"""``srnode models --bench`` prints the measured table per model; the node keeps the
choices of ``backend = "auto"`` in its data folder and ``srnode status`` shows them. Real
engine on the small ONNX graph of tests/onnx_models.py (the table takes seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dicom_node.cli import batch as cli_batch
from dicom_node.config import Settings
from dicom_node.jobs.engines import EngineCache, cached_choices, node_cache_dir
from tests.onnx_models import write_test_model


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> Path:
    return write_test_model(tmp_path_factory.mktemp("models"), "test-x2", modalities=["CT"])


def _run(*args: str):
    app = typer.Typer(add_completion=False)
    cli_batch.register(app)
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_models_bench_prints_the_table_and_the_choice(card: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SRNODE_CACHE_DIR", str(tmp_path / "cache"))
    r = _run("models", "--bench", str(card), "--threads", "1")
    assert r.exit_code == 0, r.output
    assert "[1/1] test-x2: timing and gating" in r.output  # the progress line
    assert "| path | ms per tile |" in r.output
    rows = [line for line in r.output.splitlines() if line.startswith("| onnxruntime |")]
    assert len(rows) == 1 and "pass" in rows[0]
    chosen = [line for line in r.output.splitlines() if line.startswith("auto: ")]
    assert len(chosen) == 1 and chosen[0].removeprefix("auto: ") in r.output.split("| path |")[1]


def test_models_bench_unknown_model_and_name_without_bench_exit_2(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SRNODE_CACHE_DIR", str(tmp_path / "cache"))
    r = _run("models", "--bench", "no-such-model")
    assert r.exit_code == 2 and "no-such-model" in r.output
    r = _run("models", "ct-x2")
    assert r.exit_code == 2 and "--bench" in r.output


def test_the_node_keeps_the_auto_choice_in_its_data_folder(card: Path, tmp_path, monkeypatch):
    monkeypatch.setenv("SRNODE_CACHE_DIR", str(tmp_path / "user-cache"))
    settings = Settings.model_validate(
        {"node": {"data_dir": str(tmp_path / "data")}, "engine": {"threads": 1}}
    )
    engines = EngineCache.from_settings(settings)
    assert engines.backend == "auto"
    try:
        engine = engines.get(str(card))
    finally:
        engines.close()
    cache = node_cache_dir(settings.node.data_dir)
    assert not (tmp_path / "user-cache").exists()
    (choice,) = cached_choices(cache)
    assert choice["model"] == "test-x2" and choice["backend"] == engine.backend_name
    assert choice["threads"] == 1 and choice["cpu"]
    assert cached_choices(tmp_path / "nowhere") == []
    json.dumps(choice)  # what srnode status --json prints
