"""Where models live and which one serves a modality.

Cards are JSON files beside their ``.onnx`` weights: the bundled ones in
``sr_engine/models`` and any in the configured ``engine.model_dirs``. A card found in a
configured directory wins over a bundled card of the same name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sr_engine.errors import ModelCardError
from sr_engine.model_card import ModelCard, load_card

log = logging.getLogger(__name__)

# modality -> preferred (PSNR-trained) model; anything else -> general-x2
DEFAULT_FOR_MODALITY = {"CT": "ct-x2", "MR": "mr-x2"}
GENERAL_MODEL = "general-x2"

_cache: dict[tuple[str, int, int], ModelCard] = {}


def bundled_model_dir() -> Path:
    return Path(__file__).resolve().parent / "models"


def _search_dirs(model_dirs: Sequence[Path | str]) -> list[Path]:
    return [Path(d).expanduser() for d in model_dirs] + [bundled_model_dir()]


def _load_cached(path: Path) -> ModelCard:
    """load_card with the sha256 check, cached by (card path, weights mtime and size)."""
    card = load_card(path, verify=False)
    w = card.weights_path(path)
    try:
        st = w.stat()
    except OSError:
        raise ModelCardError(f"model card {card.name}: weights: file {w.name} not found") from None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _cache:
        _cache[key] = load_card(path, verify=True)
    return _cache[key]


def is_gan(card: ModelCard) -> bool:
    """GAN-trained variants are named ``...-gan``; they are never picked by default."""
    return "gan" in card.name.lower().split("-")


def list_models(model_dirs: Sequence[Path | str] = ()) -> list[tuple[ModelCard, Path]]:
    """Valid cards in the configured directories, then the bundled ones; first name wins.

    Invalid cards are skipped with a warning naming the problem.
    """
    found: dict[str, tuple[ModelCard, Path]] = {}
    for d in _search_dirs(model_dirs):
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.json")):
            try:
                card = _load_cached(path)
            except ModelCardError as e:
                log.warning("skipping %s: %s", path, e)
                continue
            found.setdefault(card.name, (card, path))
    return sorted(found.values(), key=lambda cp: cp[0].name)


def resolve_model(name_or_path: str | Path, model_dirs: Sequence[Path | str] = ()) -> Path:
    """The card path of a model given by name (``ct-x2``) or by a ``.json``/``.onnx`` path."""
    p = Path(name_or_path).expanduser()
    if p.suffix.lower() in (".json", ".onnx") or p.is_file():
        card = p.with_suffix(".json") if p.suffix.lower() == ".onnx" else p
        if not card.is_file():
            raise ModelCardError(f"model card {card}: file not found")
        return card
    name = str(name_or_path)
    models = list_models(model_dirs)
    for card, path in models:
        if card.name == name or path.stem == name:
            return path
    names = ", ".join(c.name for c, _ in models) or "none"
    raise ModelCardError(f"model {name!r} not found; available: {names}")


def model_for_modality(modality: str, model_dirs: Sequence[Path | str] = ()) -> Path:
    """The default (non-GAN) model for a DICOM Modality: CT -> ct-x2, MR -> mr-x2, else
    general-x2; a card listing the modality is preferred, the named default first."""
    modality = (modality or "").upper()
    models = [(c, p) for c, p in list_models(model_dirs) if not is_gan(c)]
    preferred = DEFAULT_FOR_MODALITY.get(modality, GENERAL_MODEL)
    serving = [(c, p) for c, p in models if modality in {m.upper() for m in c.modalities}]
    for card, path in serving:
        if card.name == preferred:
            return path
    if serving:
        return serving[0][1]
    for name in (preferred, GENERAL_MODEL):
        for card, path in models:
            if card.name == name:
                return path
    for card, path in models:  # a card that names no modality serves any
        if not card.modalities:
            return path
    names = ", ".join(c.name for c, _ in models) or "none"
    raise ModelCardError(
        f"no model serves modality {modality or '?'}: available (non-GAN): {names}"
    )
