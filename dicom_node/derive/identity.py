"""Deterministic UIDs of derived objects.

``2.25.<int(uuid5(namespace, role + source UID + model sha256))>`` (PS3.5 B.2: a UUID as a
decimal integer under the 2.25 root). The same source, model and variant always give the
same UID, so re-running a job never duplicates a series in the PACS; the role keeps a
series UID and an instance UID apart even when the source UIDs coincide.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydicom.uid import UID

# uuid5(NAMESPACE_URL, "https://srnode.invalid/derived-uid"), fixed forever: changing it
# would give every derived object a new UID.
NAMESPACE = uuid.UUID("6f1c2c1e-3c1a-5b8e-9d57-3f0b8f2a4c10")

Role = Literal["series", "instance"]


def derived_uid(role: Role, source_uid: str, model_sha256: str, variant: str = "") -> UID:
    """The UID of the derived ``role`` made from ``source_uid`` with model ``model_sha256``.

    ``variant`` separates outputs of the same model made differently (e.g. without the
    data-consistency step); the default, empty, is the standard output.
    """
    if role not in ("series", "instance"):
        raise ValueError(f"role must be 'series' or 'instance', not {role!r}")
    name = f"srnode:{role}:{str(source_uid).strip()}:{model_sha256.lower()}"
    if variant:
        name += f":{variant}"
    return UID(f"2.25.{uuid.uuid5(NAMESPACE, name).int}")


def derived_series_uid(source_series_uid: str, model_sha256: str, variant: str = "") -> UID:
    return derived_uid("series", source_series_uid, model_sha256, variant)


def derived_instance_uid(source_sop_uid: str, model_sha256: str, variant: str = "") -> UID:
    return derived_uid("instance", source_sop_uid, model_sha256, variant)
