"""Inference only: model cards, intensity mapping, tiling, backends, data consistency.

No torch at module level: the node runs on numpy + onnxruntime.

    engine = Engine.load("ct-x2", backend="auto")
    res = engine.enhance(pixels, PixelMeta(...))   # res.pixels, res.consistency_rmse, ...
"""

from sr_engine.engine import Engine, Enhanced
from sr_engine.errors import BackendUnavailable, ModelCardError, SrEngineError, UnsupportedInput
from sr_engine.meta import PixelMeta
from sr_engine.model_card import ModelCard, load_card
from sr_engine.registry import bundled_model_dir, list_models, model_for_modality, resolve_model

__all__ = [
    "BackendUnavailable",
    "Engine",
    "Enhanced",
    "ModelCard",
    "ModelCardError",
    "PixelMeta",
    "SrEngineError",
    "UnsupportedInput",
    "bundled_model_dir",
    "list_models",
    "load_card",
    "model_for_modality",
    "resolve_model",
]
