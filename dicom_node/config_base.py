"""What every settings section shares: a base that refuses unknown keys, and the AE title
check (PS3.5 VR AE) the node, its allowlist and its DIMSE destinations use."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def ae_title_problem(value: str) -> str | None:
    """What is wrong with an AE title (PS3.5 6.2, VR AE), or None. Leading and trailing
    spaces are not significant and are not counted."""
    v = value.strip()
    if not v:
        return "AE title is empty"
    if len(v) > 16:
        return f"AE title '{v}' has more than 16 characters ({len(v)})"
    if "\\" in v:
        return f"AE title '{v}': backslash not allowed"
    bad = [c for c in v if not 0x20 <= ord(c) <= 0x7E]
    if bad:
        return f"AE title '{v}': only printable ASCII characters allowed (not {bad[0]!r})"
    return None


def _check_ae(v: str) -> str:
    problem = ae_title_problem(v)
    if problem:
        raise ValueError(problem)
    return v.strip()
