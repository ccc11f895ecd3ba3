"""The bundled models: valid cards, small files, the right intensity model per modality,
and better than bicubic on real DICOM images they were not trained on (pydicom's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from sr_engine import load_card  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "sr_engine" / "models"
NAMES = ["mr-x2", "ct-x2", "general-x2", "mr-x2-gan", "ct-x2-gan", "general-x2-gan"]


@pytest.mark.parametrize("name", NAMES)
def test_card_and_weights(name: str) -> None:
    card = load_card(MODELS / f"{name}.json")  # schema + sha256 of the weights
    assert card.name == name and card.scale == 2
    assert (MODELS / card.weights).stat().st_size < 10 * 2**20
    assert card.degradation.operator == "area"
    base = name.removesuffix("-gan")
    expected = {"mr-x2": "percentile", "ct-x2": "ct_hu", "general-x2": "percentile"}[base]
    assert card.intensity.model == expected
    if base == "ct-x2":
        assert tuple(card.intensity.window) == (-1024.0, 3071.0) and card.modalities == ["CT"]
    if base == "mr-x2":
        assert card.modalities == ["MR"]
    if base == "general-x2":
        assert {"CR", "DX"} <= set(card.modalities)
    m = card.metrics
    assert m["split"] == "test" and m["psnr_model_db"] >= m["psnr_bicubic_db"]
    sess = ort.InferenceSession(str(MODELS / card.weights), providers=["CPUExecutionProvider"])
    out = sess.run(["output"], {"input": np.zeros((1, 1, 17, 23), np.float32)})[0]
    assert out.shape == (1, 1, 34, 46)


@pytest.mark.parametrize(
    "name,file,intensity",
    [
        ("mr-x2", "MR_small.dcm", {"model": "percentile", "percentiles": [0.0, 99.8]}),
        ("ct-x2", "CT_small.dcm", {"model": "ct_hu", "window": [-1024.0, 3071.0]}),
    ],
)
def test_beats_bicubic_on_unseen_dicom(name: str, file: str, intensity: dict) -> None:
    torch = pytest.importorskip("torch")
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from training.data.degradations import degrade_np
    from training.data.intensity import StoredMeta, to_unit

    ds = dcmread(get_testdata_file(file))
    meta = StoredMeta(
        ds.Modality, ds.BitsStored, ds.PixelRepresentation,
        float(getattr(ds, "RescaleSlope", 1)), float(getattr(ds, "RescaleIntercept", 0)),
    )  # fmt: skip
    hr = to_unit(ds.pixel_array, intensity, meta)
    lr = degrade_np(hr, "area", 2)
    sess = ort.InferenceSession(str(MODELS / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    sr = np.clip(sess.run(["output"], {"input": lr[None, None]})[0][0, 0], 0, None)
    bic = torch.nn.functional.interpolate(
        torch.from_numpy(lr)[None, None], scale_factor=2.0, mode="bicubic", align_corners=False
    )[0, 0].numpy()

    def psnr(a: np.ndarray) -> float:
        return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - hr) ** 2)))

    assert psnr(sr) > psnr(np.clip(bic, 0, None)) + 0.5
