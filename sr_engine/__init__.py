"""Inference only: model cards, intensity mapping, tiling, backends, data consistency.

No torch at module level: the node runs on numpy + onnxruntime.
"""

from sr_engine.errors import BackendUnavailable, ModelCardError, SrEngineError, UnsupportedInput
from sr_engine.meta import PixelMeta
from sr_engine.model_card import ModelCard, load_card

__all__ = [
    "BackendUnavailable",
    "ModelCard",
    "ModelCardError",
    "PixelMeta",
    "SrEngineError",
    "UnsupportedInput",
    "load_card",
]
