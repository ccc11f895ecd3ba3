"""The run behind ``srnode enhance``: find the input files, read them, send each image
instance through :func:`dicom_node.derive.pipeline.enhance_stream`, write the derived files
and keep a :class:`BatchReport` of what was written, skipped and failed (and print it).

The command line itself (options, exit status) is in :mod:`dicom_node.cli.batch`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dicom_node.config import DeriveSettings
from dicom_node.jobs.engines import EngineCache
from sr_engine.errors import BackendUnavailable, SrEngineError, UnsupportedInput

log = logging.getLogger(__name__)


class UsageError(Exception):
    """A problem with the command line itself (exit status 2)."""


@dataclass
class Failure:
    path: Path
    reason: str

    def __post_init__(self) -> None:  # one line per failure, whatever the exception said
        lines = [line.strip() for line in str(self.reason).splitlines() if line.strip()]
        self.reason = "; ".join(lines)


@dataclass
class BatchReport:
    """What one ``srnode enhance`` run did; printed as the closing summary."""

    out_dir: Path
    written: list[Path] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    skipped: list[Failure] = field(default_factory=list)  # not DICOM / no pixel data
    series: set[str] = field(default_factory=set)  # derived SeriesInstanceUIDs
    models: set[str] = field(default_factory=set)  # "name version (backend)"
    worst_rmse: float | None = None
    worst_max_abs: float | None = None
    seconds: float = 0.0
    consistency: bool = True  # whether the projection step ran

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def note_consistency(self, res: Any) -> None:
        rmse = getattr(res, "consistency_rmse", None)
        worst = getattr(res, "consistency_max_abs", None)
        if rmse is not None:
            self.worst_rmse = max(float(rmse), self.worst_rmse or 0.0)
        if worst is not None:
            self.worst_max_abs = max(float(worst), self.worst_max_abs or 0.0)


# -- inputs -----------------------------------------------------------------------------


def iter_input_files(inputs: Iterable[Path]) -> Iterator[Path]:
    """Files named on the command line, and every file under named folders (sorted,
    hidden files and folders left out)."""
    seen: set[Path] = set()
    for root in inputs:
        if not root.exists():
            raise UsageError(f"input {root} does not exist")
        if root.is_file():
            candidates: Iterable[Path] = [root]
        else:
            candidates = sorted(
                p
                for p in root.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(root).parts)
            )
        for p in candidates:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                yield p


def _looks_like_bare_dataset(path: Path) -> bool:
    """A DICOM data set without preamble and file meta starts with a group 0002 or 0008
    element (little endian), as some PACS exports and old tools write them."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:2] in (b"\x02\x00", b"\x08\x00") and len(head) == 4


def _read(path: Path) -> Any:
    """The dataset; None for files that are not DICOM; the exception for damaged ones."""
    try:
        return dcmread(path)
    except (InvalidDicomError, EOFError, IsADirectoryError):
        if not _looks_like_bare_dataset(path):
            return None
        try:
            ds = dcmread(path, force=True)
        except Exception:  # noqa: BLE001 - then it is not DICOM after all
            return None
        if "SOPClassUID" not in ds:
            return None
        implicit, little = ds.original_encoding
        if little is not False and "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
            )
        return ds
    except Exception as e:  # noqa: BLE001 - a damaged file is a failure with a reason
        log.debug("could not read %s: %s", path, e)
        return e


# -- engines ----------------------------------------------------------------------------


# -- the run ----------------------------------------------------------------------------


def output_path(out_dir: Path, ds: Any) -> Path:
    return out_dir / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"


class _Skip(Exception):
    """Not for the engine: not DICOM, or no pixel data (a skip, not a failure)."""


class _Unreadable(Exception):
    """A damaged DICOM file (a failure of that file only)."""


class _NoModel(Exception):
    """No model for this instance's modality (a failure of that file only)."""


def run_enhance(
    inputs: list[Path],
    out_dir: Path,
    engines: EngineCache,
    settings: DeriveSettings,
    console: Console | None = None,
    progress: bool = True,
) -> BatchReport:
    """Enhance every image instance under ``inputs`` into ``out_dir``; never raises for
    one bad file (it goes into ``report.failures``). Files go through the same pipeline
    as the node's worker (:func:`dicom_node.derive.pipeline.enhance_stream`)."""
    from contextlib import closing

    from dicom_node.derive.pipeline import enhance_stream

    console = console or Console(stderr=True)
    report = BatchReport(out_dir=out_dir, consistency=settings.data_consistency)
    files = list(iter_input_files(inputs))
    start = time.perf_counter()
    bar = Progress(
        TextColumn("[bold]enhance"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[name]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (progress and console.is_terminal),
    )
    stream = enhance_stream(files, _load, lambda ds: _engine_for(ds, engines), settings)
    with bar, closing(stream):
        task = bar.add_task("enhance", total=len(files), name="")
        for o in stream:
            bar.update(task, name=o.source.name[:40])
            _record(o, out_dir, report)
            bar.advance(task)
    report.seconds = time.perf_counter() - start
    not_dicom = sum(1 for f in report.skipped if f.reason == "not a DICOM file")
    if not_dicom == len(files):
        where = ", ".join(str(p) for p in inputs)
        seen = f" ({not_dicom} other file(s))" if not_dicom else ""
        raise UsageError(f"no DICOM files in {where}{seen}")
    return report


def _load(path: Path) -> Any:
    """The dataset of an image instance; raises _Skip or _Unreadable."""
    ds = _read(path)
    if ds is None:
        raise _Skip("not a DICOM file")
    if isinstance(ds, Exception):
        raise _Unreadable(f"unreadable DICOM file: {ds}")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise _Skip("no pixel data (not an image)")
    return ds


def _engine_for(ds: Any, engines: EngineCache) -> Any:
    modality = str(ds.get("Modality", "") or "OT")
    try:
        return engines.for_modality(modality)
    except BackendUnavailable as e:  # the chosen backend cannot run here: usage error
        raise UsageError(str(e)) from None
    except (SrEngineError, OSError, LookupError, ValueError) as e:
        if engines.model is not None:  # the named model itself is unusable: usage error
            raise UsageError(str(e)) from None
        raise _NoModel(f"no model for modality {modality}: {e}") from None


def _record(o: Any, out_dir: Path, report: BatchReport) -> None:
    """One outcome of the pipeline into the report (and its file into ``out_dir``)."""
    path, e = o.source, o.error
    if isinstance(e, UsageError):
        raise e
    if isinstance(e, _Skip):
        report.skipped.append(Failure(path, str(e)))
        return
    if isinstance(e, UnsupportedInput | _Unreadable | _NoModel):
        report.failures.append(Failure(path, str(e)))
        return
    if e is not None:  # one bad file never stops the batch
        log.debug("enhance failed for %s", path, exc_info=e)
        report.failures.append(Failure(path, f"{type(e).__name__}: {e}"))
        return
    out, engine = o.out, o.engine
    target = output_path(out_dir, out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(o.data)
    report.written.append(target)
    report.series.add(str(out.SeriesInstanceUID))
    card = engine.card
    report.models.add(f"{card.name} {card.version} ({getattr(engine, 'backend_name', '?')})")
    report.note_consistency(o.result)
    log.debug(
        "derived %s -> series %s instance %s",
        o.ds.SOPInstanceUID,
        out.SeriesInstanceUID,
        out.SOPInstanceUID,
    )


def print_summary(report: BatchReport, console: Console) -> None:
    n_ok, n_bad = len(report.written), len(report.failures)
    not_dicom = sum(1 for s in report.skipped if s.reason == "not a DICOM file")
    no_pixels = len(report.skipped) - not_dicom
    line = (
        f"[bold]{n_ok}[/] file(s) written in [bold]{len(report.series)}[/] series "
        f"to {escape(str(report.out_dir))} in {report.seconds:.1f} s"
    )
    if n_bad:
        line += f"; [red]{n_bad} failed[/]"
    if not_dicom:
        line += f"; {not_dicom} non-DICOM file(s) skipped"
    if no_pixels:
        line += f"; {no_pixels} DICOM object(s) without pixel data skipped"
    console.print(line)
    if report.models:
        console.print("model: " + ", ".join(sorted(report.models)))
    if report.worst_rmse is not None:
        label = "worst" if report.consistency else "data consistency off; worst measured"
        worst = f"{label} data-consistency error: RMSE {report.worst_rmse:.3f}"
        if report.worst_max_abs is not None:
            worst += f", max {report.worst_max_abs:.3f}"
        console.print(worst + " stored units")
    if report.failures:
        console.print(f"[red]not processed ({n_bad}):[/]")
        for f in report.failures:
            console.print(f"  {f.path}: {f.reason}", markup=False, highlight=False)
