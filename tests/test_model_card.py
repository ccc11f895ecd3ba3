import json

import pytest

from sr_engine import ModelCardError, load_card
from tests.onnx_models import write_test_model


def test_card_round_trips_and_verifies(tmp_path):
    path = write_test_model(tmp_path)
    card = load_card(path)
    assert card.scale == 2
    assert card.weights_path(path).is_file()


def test_sha256_mismatch_is_one_line_naming_the_field(tmp_path):
    path = write_test_model(tmp_path)
    weights = tmp_path / "test-x2.onnx"
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(ModelCardError) as e:
        load_card(path)
    assert "sha256" in str(e.value) and "\n" not in str(e.value)


def test_bad_field_is_named(tmp_path):
    path = write_test_model(tmp_path)
    raw = json.loads(path.read_text())
    raw["scale"] = 3
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match=r"test-x2: scale:"):
        load_card(path)


def test_ct_window_required(tmp_path):
    path = write_test_model(tmp_path)
    raw = json.loads(path.read_text())
    raw["intensity"] = {"model": "ct_hu"}
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match=r"intensity"):
        load_card(path)
