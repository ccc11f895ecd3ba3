"""No module of the node or of the engine grows past 400 lines: one responsibility per
module, its name saying what it holds."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 400
PACKAGES = ("dicom_node", "sr_engine")


def test_no_module_over_the_limit():
    sizes = {
        p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines())
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
    }
    assert any(p.startswith("sr_engine/") for p in sizes)  # both packages are read
    over = {p: n for p, n in sizes.items() if n > LIMIT}
    assert not over, over
