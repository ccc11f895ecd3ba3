"""Deterministic UIDs of derived objects.

``2.25.<int(uuid5(namespace, role + source UID + model sha256 [+ variant] [+ recipe]))>``
(PS3.5 B.2: a UUID as a decimal integer under the 2.25 root). One UID names one content
(PS3.3 C.12.1.1.1): everything that changes the derived pixels goes into the name, so the
same source, model, variant and recipe always give the same UID (re-running a job never
duplicates a series in the PACS), and a change of any of them gives a new one. The role
keeps a series UID and an instance UID apart even when the source UIDs coincide.

``recipe`` is :func:`pixel_recipe`: the backend that ran the network (name and numeric
path: ``onnxruntime``, ``openvino-bf16``, ``torch-cuda-fp16``...; their outputs differ by
a few stored units), the model card's settings that change pixels (intensity mapping,
tiling, degradation operator), which a card can change without new weights, and the
srnode release (its padding, consistency and self-check steps shape the pixels too).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Literal

from pydicom.uid import UID

from dicom_node import __version__
from sr_engine.model_card import ModelCard

# uuid5(NAMESPACE_URL, "https://srnode.invalid/derived-uid"), fixed forever: changing it
# would give every derived object a new UID.
NAMESPACE = uuid.UUID("6f1c2c1e-3c1a-5b8e-9d57-3f0b8f2a4c10")

Role = Literal["series", "instance"]


def pixel_recipe(card: ModelCard, backend: str | None) -> str:
    """What, besides the source, the weights and the variant, decides the derived pixels:
    the backend's name (it names its precision), a digest of the card's pixel settings and
    the srnode release. Empty when the backend is unknown (a caller that passes bare
    pixels, which srnode did not make)."""
    if not backend:
        return ""
    settings = {
        "scale": card.scale,
        "intensity": card.intensity.model_dump(mode="json"),
        "tile": card.tile.model_dump(mode="json"),
        "degradation": card.degradation.model_dump(mode="json"),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return f"srnode={__version__};backend={backend.strip()};card={digest}"


def derived_uid(
    role: Role, source_uid: str, model_sha256: str, variant: str = "", recipe: str = ""
) -> UID:
    """The UID of the derived ``role`` made from ``source_uid`` with model ``model_sha256``.

    ``variant`` separates outputs of the same model made differently (e.g. without the
    data-consistency step); ``recipe`` (:func:`pixel_recipe`) the backend and card
    settings. Both empty: the standard output of an unnamed backend.
    """
    if role not in ("series", "instance"):
        raise ValueError(f"role must be 'series' or 'instance', not {role!r}")
    name = f"srnode:{role}:{str(source_uid).strip()}:{model_sha256.lower()}"
    if variant:
        name += f":{variant}"
    if recipe:
        name += f":{recipe}"
    return UID(f"2.25.{uuid.uuid5(NAMESPACE, name).int}")


def derived_series_uid(
    source_series_uid: str, model_sha256: str, variant: str = "", recipe: str = ""
) -> UID:
    return derived_uid("series", source_series_uid, model_sha256, variant, recipe)


def derived_instance_uid(
    source_sop_uid: str, model_sha256: str, variant: str = "", recipe: str = ""
) -> UID:
    return derived_uid("instance", source_sop_uid, model_sha256, variant, recipe)
