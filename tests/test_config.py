from pathlib import Path

import pytest

from dicom_node.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_default_config_loads():
    s = load_settings(ROOT / "config" / "srnode.toml", env={})
    assert s.node.ae_title == "SRNODE"
    assert s.node.port == 11112
    assert s.scheduler.stable_age == 10.0


def test_bad_value_is_one_line_naming_the_key(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[node]\nport = "seventy"\n')
    with pytest.raises(ConfigError) as e:
        load_settings(p, env={})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("config: node.port:")


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[node]\naetitle = 'X'\n")
    with pytest.raises(ConfigError, match=r"config: node\.aetitle:"):
        load_settings(p, env={})


def test_environment_overrides_scalars():
    s = load_settings(None, env={"SRNODE_NODE__PORT": "11999", "SRNODE_NODE__AE_TITLE": "X1"})
    assert s.node.port == 11999
    assert s.node.ae_title == "X1"


def test_bad_ae_title_rejected():
    with pytest.raises(ConfigError, match=r"config: node\.ae_title:"):
        load_settings(None, env={"SRNODE_NODE__AE_TITLE": "THIS_AE_TITLE_IS_TOO_LONG"})


def test_unknown_engine_backend_names_the_choices():
    with pytest.raises(ConfigError, match=r"config: engine\.backend: must be one of auto, onnx"):
        load_settings(None, env={"SRNODE_ENGINE__BACKEND": "cuda"})


def test_web_token_from_the_environment_and_too_short_a_token_is_named():
    s = load_settings(None, env={"SRNODE_WEB__TOKEN": "a-long-enough-token"})
    assert s.web.token == "a-long-enough-token"
    with pytest.raises(ConfigError, match=r"config: web\.token:") as e:
        load_settings(None, env={"SRNODE_WEB__TOKEN": "short"})
    assert "short" not in str(e.value)  # the secret itself is never echoed


def test_destinations_are_a_union_by_kind():
    from dicom_node.config import Settings
    from dicom_node.config_routing import DimseDestination, StowDestination

    s = Settings.model_validate(
        {
            "destinations": [
                {"name": "PACS", "ae_title": "PACS", "host": "h", "port": 104},
                {"name": "WEB", "kind": "stow", "url": "http://h/dicom-web"},
            ]
        }
    )
    assert isinstance(s.destinations[0], DimseDestination)
    assert isinstance(s.destinations[1], StowDestination)


def test_a_field_of_another_kind_is_named(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[[destinations]]\nname = "WEB"\nkind = "stow"\nport = 104\n')
    with pytest.raises(ConfigError, match=r"config: destinations\.WEB\.port: ") as e:
        load_settings(p, env={})
    assert "\n" not in str(e.value) and "port" in str(e.value)
