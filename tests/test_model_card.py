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


def test_fidelity_gate_defaults_and_card_block(tmp_path):
    ct = load_card(
        write_test_model(tmp_path, "ct-x2", intensity={"model": "ct_hu", "window": [-1024, 3071]})
    )
    assert ct.fidelity is None
    g = ct.fidelity_gate()
    assert (g.p999, g.max, g.unit) == (1.0, 4.0, "stored")  # HU
    mr = load_card(write_test_model(tmp_path, "mr-x2", modalities=["MR"]))
    g = mr.fidelity_gate()
    assert (g.p999, g.max, g.unit) == (0.001, 0.005, "range")
    path = write_test_model(tmp_path, "own-x2")
    raw = json.loads(path.read_text())
    raw["fidelity"] = {"p999": 2, "max": 8, "unit": "stored"}
    path.write_text(json.dumps(raw))
    assert load_card(path).fidelity_gate().max == 8
    raw["fidelity"] = {"p999": 0, "max": 8}
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match="fidelity.p999"):
        load_card(path)


def test_calibration_tiles_ship_with_their_source():
    from sr_engine.fidelity import CALIBRATION_DIR, calibration_slices

    readme = (CALIBRATION_DIR / "README.md").read_text()
    assert "BSD-3-Clause" in readme and "pydicom" in readme
    index = json.loads((CALIBRATION_DIR / "tiles.json").read_text())
    assert all(item["source"] for item in index)
    total = sum(p.stat().st_size for p in CALIBRATION_DIR.iterdir())
    assert total < 400_000
    ct = load_card(next(iter(sorted(CALIBRATION_DIR.parent.glob("ct-x2.json")))), verify=False)
    slices = calibration_slices(ct)
    assert slices and {s.meta.modality for s in slices} == {"CT"}
    assert all(s.pixels.dtype.kind in "ui" and min(s.pixels.shape) >= 64 for s in slices)
