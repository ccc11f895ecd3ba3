"""The model card: a JSON file beside each ``.onnx`` that says what the network is and how
it was made. It is validated on load and its fields go into the provenance of every
derived series.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sr_engine.errors import ModelCardError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Architecture(_Strict):
    name: str  # e.g. "RRDBNet", "SRVGGNetCompact", "SRCNN"
    params: dict[str, Any] = Field(default_factory=dict)


class Intensity(_Strict):
    """How stored values map to the network's [0, 1] range.

    * ``ct_hu``: modality values (HU) clipped to ``window`` = [lo, hi] and scaled.
    * ``percentile``: per-image [p_lo, p_hi] percentiles of modality values (MR).
    * ``bits_stored``: the whole stored range (CR/DX/MG).
    """

    model: Literal["ct_hu", "percentile", "bits_stored"]
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _check(self) -> Intensity:
        if self.model == "ct_hu" and (self.window is None or self.window[0] >= self.window[1]):
            raise ValueError("ct_hu needs window [lo, hi] with lo < hi")
        if self.model == "percentile":
            p = self.percentiles or (0.0, 99.8)
            if not 0 <= p[0] < p[1] <= 100:
                raise ValueError("percentiles must satisfy 0 <= lo < hi <= 100")
            self.percentiles = p
        return self


class Tiling(_Strict):
    size: int = Field(128, ge=16)  # input-pixel edge of one tile
    overlap: int = Field(16, ge=0)
    batch: int = Field(4, ge=1)  # tiles per backend call

    @model_validator(mode="after")
    def _check(self) -> Tiling:
        if self.overlap * 2 >= self.size:
            raise ValueError("overlap must be less than half the tile size")
        return self


class Degradation(_Strict):
    """The operator that maps a high-resolution image to the model's input."""

    operator: Literal["area", "bicubic", "kspace", "blur_noise"] = "area"
    notes: str = ""


class Fidelity(_Strict):
    """The largest error a reduced-precision path may make against the fp32 reference,
    measured on real calibration slices after the data-consistency step.

    ``unit``: ``stored`` (stored units: HU for CT with slope 1) or ``range`` (fractions of
    each calibration slice's BitsStored range: 4095 for 12 bits). A path over either
    limit is never used.
    """

    p999: float = Field(gt=0)  # 99.9th percentile of |candidate - fp32|
    max: float = Field(gt=0)  # largest |candidate - fp32|
    unit: Literal["stored", "range"] = "stored"


# defaults when a card has no ``fidelity`` block
CT_FIDELITY = Fidelity(p999=1.0, max=4.0, unit="stored")
RANGE_FIDELITY = Fidelity(p999=0.001, max=0.005, unit="range")


class ModelCard(_Strict):
    name: str
    version: str
    scale: Literal[2, 4]
    channels: Literal[1] = 1
    architecture: Architecture
    intensity: Intensity
    tile: Tiling = Field(default_factory=Tiling)
    degradation: Degradation = Field(default_factory=Degradation)
    modalities: list[str] = Field(default_factory=list)  # DICOM Modality values it serves
    fidelity: Fidelity | None = None  # reduced-precision gate; None: the defaults
    training_data: dict[str, Any] = Field(default_factory=dict)  # summary, sources, split
    metrics: dict[str, Any] = Field(default_factory=dict)  # held-out metrics
    weights: str  # file name of the .onnx beside the card
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    license: str = ""
    description: str = ""

    # -- files ---------------------------------------------------------------------
    @property
    def short_sha(self) -> str:
        return self.sha256[:12]

    @property
    def is_ct(self) -> bool:
        return self.intensity.model == "ct_hu" or "CT" in {m.upper() for m in self.modalities}

    def fidelity_gate(self) -> Fidelity:
        """The card's ``fidelity`` block, else CT 1 / 4 HU, others 0.1 % / 0.5 % of the range."""
        if self.fidelity is not None:
            return self.fidelity
        return CT_FIDELITY if self.is_ct else RANGE_FIDELITY

    def weights_path(self, card_path: Path) -> Path:
        return card_path.parent / self.weights

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _first_error(name: str, err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "card"
    return f"model card {name}: {where}: {e['msg']}"


def load_card(path: str | Path, verify: bool = True) -> ModelCard:
    """Read and validate a card; with ``verify`` also check the weights' sha256.

    Raises ModelCardError with one line naming the bad field.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelCardError(f"model card {path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ModelCardError(
            f"model card {path.name}: not valid JSON ({e.msg}, line {e.lineno})"
        ) from None
    try:
        card = ModelCard.model_validate(raw)
    except ValidationError as e:
        raise ModelCardError(_first_error(path.stem, e)) from None
    if verify:
        w = card.weights_path(path)
        if not w.is_file():
            raise ModelCardError(f"model card {card.name}: weights: file {w.name} not found")
        actual = sha256_of(w)
        if actual != card.sha256:
            raise ModelCardError(
                f"model card {card.name}: sha256: weights {w.name} hash {actual[:12]}… "
                f"does not match the card's {card.sha256[:12]}…"
            )
    return card
