"""docs/config-reference.md is generated from the settings models: it must be the current
output of the generator, and name every key."""

from pathlib import Path

from dicom_node import config, config_routing
from dicom_node.config_reference import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "config-reference.md"


def test_committed_reference_is_current() -> None:
    assert DOC.read_text() == render(), (
        "docs/config-reference.md is stale: run "
        "'.venv/bin/python -m dicom_node.config_reference > docs/config-reference.md'"
    )


def test_every_key_is_described() -> None:
    text = render()
    for model in (
        config.NodeSettings,
        config.AllowedAE,
        config_routing.DimseDestination,
        config_routing.StowDestination,
        config_routing.Route,
        config.DeriveSettings,
        config.EngineSettings,
        config.SchedulerSettings,
        config.DatabaseSettings,
        config.SpoolSettings,
        config.DerivedSettings,
        config.StorageSettings,
        config.WebSettings,
    ):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
            assert f"| `{name}` |" in text
