"""The test action of a destination (console and API): C-ECHO for DIMSE, a QIDO-RS ping
for STOW-RS, through the export side's probe."""

from __future__ import annotations

from typing import Any

from dicom_node.export.probe import check


def test_destination(dest: Any, calling_ae: str, timeout: float = 5.0) -> dict[str, Any]:
    """``{"ok": bool, "kind", "detail", "ms"}``; never raises for a peer that is down."""
    p = check(dest, calling_ae, timeout)
    return {"ok": p.ok, "kind": dest.kind, "detail": p.detail, "ms": p.ms}
