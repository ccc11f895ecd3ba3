"""The table behind ``auto``'s choice: one :class:`Candidate` row per path (times, speed
versus the fp32 reference, fidelity, gate) and the :class:`Selection` they make, with its
one-line summary and its Markdown table."""

from __future__ import annotations

from dataclasses import dataclass, field

REFERENCE = "onnxruntime"
SLICE_EDGE = 512  # the per-slice column of the table: one 512 x 512 slice


@dataclass
class Candidate:
    """One row of the table. Times are medians; ``ratio`` is speed vs ONNX Runtime fp32."""

    name: str
    ms_per_call: float | None = None  # card.tile.batch tiles of card.tile.size^2
    ms_per_tile: float | None = None
    ms_per_slice: float | None = None  # a 512^2 slice, from the per-pixel time of a tile
    ratio: float | None = None
    p999: float | None = None
    max: float | None = None
    unit: str = "stored"
    passed: bool = False
    gated: bool = False  # False: not run on the calibration slices (slower than the choice)
    chosen: bool = False
    note: str = ""  # why unavailable or refused


@dataclass
class Selection:
    model: str
    sha256: str
    host: dict
    tile: list[int]
    chosen: str
    rows: list[Candidate] = field(default_factory=list)
    cached: bool = False
    measured_at: str = ""

    def row(self, name: str) -> Candidate | None:
        return next((r for r in self.rows if r.name == name), None)

    def summary(self) -> str:
        """One line: what ``auto`` chose and why."""
        r = self.row(self.chosen)
        speed = f"{r.ms_per_slice:.0f} ms per {SLICE_EDGE}² slice, " if r and r.ms_per_slice else ""
        ratio = f"{r.ratio:.2f}x {REFERENCE}, " if r and r.ratio else ""
        fid = f"fidelity p99.9 {_fmt(r.p999, r.unit)} max {_fmt(r.max, r.unit)}" if r else ""
        return (
            f"engine: auto chose {self.chosen} for {self.model} (sha256 {self.sha256[:12]}) on "
            f"{self.host['cpu']} [{self.host['isa']}], {self.host['threads']} threads, tile "
            f"{self.tile[0]}: {speed}{ratio}{fid} ({'cached' if self.cached else 'measured'})"
        )

    def table(self) -> str:
        """The candidate table as Markdown."""
        b, size = self.tile[2], self.tile[0]
        lines = [
            f"{self.model} (sha256 {self.sha256[:12]}) on {self.host['cpu']} "
            f"[{self.host['isa']}], {self.host['threads']} threads; tile {size}² x {b} per call"
            + (f"; measured {self.measured_at}" if self.measured_at else ""),
            "",
            f"| path | ms per tile | ms per {SLICE_EDGE}² slice | vs {REFERENCE} | "
            "fidelity p99.9 | fidelity max | gate | chosen |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            if r.ms_per_tile is None:
                lines.append(f"| {r.name} | – | – | – | – | – | {r.note or 'unavailable'} | |")
                continue
            gate = ("pass" if r.passed else "FAIL") if r.gated else "not needed"
            lines.append(
                f"| {r.name} | {r.ms_per_tile:.0f} | {r.ms_per_slice:.0f} | {r.ratio:.2f}x | "
                f"{_fmt(r.p999, r.unit)} | {_fmt(r.max, r.unit)} | {gate} | "
                f"{'**yes**' if r.chosen else ''} |"
            )
        return "\n".join(lines)


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.3f} %" if unit == "range" else f"{v:.2f}"
