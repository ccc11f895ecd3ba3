"""srnode's own identity in DICOM: the Implementation Class UID and Version Name it
announces on every association and writes into file meta (PS3.7 D.3.3.2, PS3.10 7.1),
and the InstanceCreatorUID of the instances it creates. All are ``2.25`` UIDs (PS3.5 B.2)
made from fixed names, so they never change for a given srnode version."""

from __future__ import annotations

import uuid
from typing import Any

from pydicom.uid import UID

from dicom_node import __version__

#: uuid5(NAMESPACE_URL, "https://srnode.invalid/implementation"), fixed forever
_NAMESPACE = uuid.UUID("00abb782-5ae5-553b-a6e4-b8fea94396e9")


def _uid(name: str) -> UID:
    return UID(f"2.25.{uuid.uuid5(_NAMESPACE, name).int}")


#: the same for every srnode release: "made by srnode"
INSTANCE_CREATOR_UID = _uid("srnode:instance-creator")
#: one per release: a peer can tell srnode versions apart in its association log
IMPLEMENTATION_CLASS_UID = _uid(f"srnode:implementation:{__version__}")
#: SH, at most 16 characters
IMPLEMENTATION_VERSION_NAME = f"SRNODE_{__version__}"[:16]


def identify(ae: Any) -> Any:
    """Announce srnode (not pynetdicom) on the associations of a pynetdicom ``AE``."""
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    return ae


def identify_file_meta(meta: Any) -> Any:
    """srnode's implementation in a file meta group (instead of pydicom's)."""
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta
