"""The unseen benchmark: real DICOM images no model was trained on, through the node's path.

Data: every CT, MR and CR/DX/MG image in pydicom's test files and in ``pydicom-data`` with
pixel data of at least 128x128, decompressed by pydicom (each frame of a multi-frame
object is an image; byte-identical pixel arrays, e.g. the same image stored with another
transfer syntax, count once, their other names listed). These files are evaluation only:
nothing in :mod:`training.data` reads them.

Each image (cropped to even edges) is the high-resolution truth ``HR``; its 2x2 block mean,
rounded to the stored integer type, is the input ``LR`` (area x2). Methods, all returning
stored integers of the input's type:

* ``nearest``; ``bicubic``: the order-3 spline (:mod:`sr_engine.resample`, equal to
  ``scipy.ndimage.zoom(order=3, grid_mode=True)``: pixel areas aligned, mirrored
  edges), rounded and clipped to the stored range;
* ``floor``: bicubic, then the exact area projection (:func:`sr_engine.consistency.project`):
  the image the node's data-consistency step would make of bicubic. A model below it
  does harm;
* each model card given (the bundled models by default; SRCNN when a card is given) through
  the node's own path: ``sr_engine.Engine.enhance`` with data consistency, the pixel facts
  from :meth:`sr_engine.PixelMeta.from_dataset`. A model runs on the modalities its card
  serves.

Metrics per image: PSNR with the data range ``max(HR) - min(HR)`` (stored units, whole
image, no border crop) and SSIM with the same range.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sr_engine import consistency as dc
from sr_engine.intensity import stored_limits
from sr_engine.meta import PixelMeta
from sr_engine.pixels import read_pixels
from sr_engine.resample import upsample_spline
from sr_engine.selfcheck import floor_frame
from training.evaluate.metrics import psnr, ssim
from training.evaluate.unseen_noise import apart

log = logging.getLogger(__name__)

MIN_EDGE = 128
MODALITY_GROUP = {"CT": "CT", "MR": "MR", "CR": "CR/DX/MG", "DX": "CR/DX/MG", "MG": "CR/DX/MG"}
INTERPOLATION = ("nearest", "bicubic", "floor")


@dataclass
class UnseenImage:
    name: str  # file name (and frame)
    modality: str
    hr: np.ndarray  # stored values, even edges
    meta: PixelMeta
    aliases: list[str] = field(default_factory=list)
    note: str = ""  # how the stored pixels were read (see own_resolution)

    @property
    def group(self) -> str:
        return MODALITY_GROUP[self.modality]


def data_folders() -> list[Path]:
    """pydicom's test files and pydicom-data's files (installed packages; never downloads)."""
    import pydicom.data

    out = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store
    except ImportError:
        log.warning("pydicom-data is not installed: the benchmark uses pydicom's files only")
    else:
        out.append(Path(data_store.__file__).parent / "data")
    return [p for p in out if p.is_dir()]


def _frames(ds: Any) -> Iterator[tuple[int | None, np.ndarray]]:
    """(frame index, stored values) of each frame; ``None`` for an object of one frame."""
    arr = read_pixels(ds)
    if arr.ndim == 2 or arr.shape[0] == 1:
        yield None, arr.reshape(arr.shape[-2:])
    else:
        for i in range(arr.shape[0]):
            yield i, arr[i]


REPLICA_RATIO = 0.25


def own_resolution(hr: np.ndarray) -> tuple[np.ndarray, str]:
    """The image at the resolution its pixels carry, and a note when that is not the stored
    one. A frame stored as 2x2 pixel replicas (nearest-neighbour upsampled before it was
    saved) has, as its x2 "truth", the replication itself, which no interpolator or network is
    meant to reproduce; it is benchmarked at its own resolution (the block means) instead.
    Replicas show as neighbour differences inside the 2x2 blocks far smaller than across
    them (a ratio near 1 in a natural image, below :data:`REPLICA_RATIO` in a replicated one).
    """
    h, w = hr.shape
    if h % 2 or w % 2 or min(h, w) < 4:
        return hr, ""
    x = hr.astype(np.float64)
    inside = np.abs(x[:, 1::2] - x[:, 0::2]).mean() + np.abs(x[1::2] - x[0::2]).mean()
    across = np.abs(x[:, 2::2] - x[:, 1:-1:2]).mean() + np.abs(x[2::2] - x[1:-1:2]).mean()
    if across == 0 or inside / across >= REPLICA_RATIO:
        return hr, ""
    own = np.rint(x.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))).astype(hr.dtype)
    note = (
        f"stored as 2x2 pixel replicas, benchmarked at its own {h // 2}x{w // 2} "
        f"(differences inside the blocks {100 * inside / across:.0f} % of those across)"
    )
    return own, note


def unseen_images(
    folders: Sequence[Path] | None = None, min_edge: int = MIN_EDGE
) -> tuple[list[UnseenImage], list[dict[str, str]]]:
    """The benchmark images and the files left out with the reason (decode errors)."""
    import warnings

    import pydicom

    images: dict[str, UnseenImage] = {}
    skipped: list[dict[str, str]] = []
    paths = sorted(p for d in folders or data_folders() for p in d.rglob("*") if p.is_file())
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, force=True)
        except Exception:  # noqa: BLE001 - not a DICOM file
            continue
        mod = str(ds.get("Modality", "") or "")
        if mod not in MODALITY_GROUP or "PixelData" not in ds:
            continue
        if min(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)) < min_edge:
            continue
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frames = list(_frames(ds))
        except Exception as e:  # noqa: BLE001 - report, do not stop the benchmark
            skipped.append({"file": path.name, "reason": f"{type(e).__name__}: {e}"[:120]})
            continue
        for frame, arr in frames:
            h, w = arr.shape
            hr, note = own_resolution(np.ascontiguousarray(arr[: h - h % 2, : w - w % 2]))
            hr = hr[: hr.shape[0] - hr.shape[0] % 2, : hr.shape[1] - hr.shape[1] % 2]
            if min(hr.shape) < min_edge:
                continue
            name = path.name if frame is None else f"{path.name}[{frame}]"
            key = hashlib.sha1(hr.tobytes() + str(hr.shape).encode()).hexdigest()
            if key in images:
                images[key].aliases.append(name)
                continue
            meta = PixelMeta.from_dataset(ds, frame)
            images[key] = UnseenImage(name, mod, hr, meta, note=note)
    return sorted(images.values(), key=lambda i: (i.group, i.name)), skipped


# -- methods -------------------------------------------------------------------------------
def area_lr(img: UnseenImage) -> np.ndarray:
    return np.rint(dc.area_down(img.hr, 2)).astype(img.hr.dtype)


def spline_bicubic(lr: np.ndarray, s: int = 2) -> np.ndarray:
    """Order-3 spline upsampling by ``s`` with pixel areas aligned (float64), the engine's."""
    return upsample_spline(lr, s)


def interpolate(name: str, lr: np.ndarray, meta: PixelMeta, s: int = 2) -> np.ndarray:
    """``nearest``, ``bicubic`` or ``floor`` in stored integers. The floor is the node's own
    (:func:`sr_engine.selfcheck.floor_frame`: bicubic, padding kept, exact area projection),
    so a frame the self-check gives the floor scores exactly the floor."""
    if name == "nearest":
        return np.repeat(np.repeat(lr, s, 0), s, 1).astype(np.float64)
    lo, hi = stored_limits(meta, lr.dtype)
    if name == "bicubic":
        return np.clip(np.rint(spline_bicubic(lr, s)), lo, hi)
    if name == "floor":
        return floor_frame(lr, meta, s, lo, hi, "area").astype(np.float64)
    raise ValueError(f"unknown interpolation {name!r}")


class ModelRunner:
    """A model card behind sr_engine.Engine, as the node runs it (data consistency on)."""

    def __init__(self, card: str | Path, label: str | None = None, threads: int = 2) -> None:
        from sr_engine.engine import Engine

        self.engine = Engine.load(Path(card), backend="onnxruntime", threads=threads)
        self.label = label or self.engine.card.name
        self.modalities = set(self.engine.card.modalities)

    def serves(self, modality: str) -> bool:
        return not self.modalities or modality in self.modalities

    def __call__(self, lr: np.ndarray, meta: PixelMeta) -> np.ndarray:
        return self.engine.enhance(lr, meta, consistency=True).pixels.astype(np.float64)


def score(pred: np.ndarray, hr: np.ndarray) -> dict[str, float]:
    """PSNR (range = max(HR) - min(HR)) and SSIM of one prediction."""
    ref = hr.astype(np.float64)
    rng = float(ref.max() - ref.min()) or 1.0
    return {"psnr": psnr(pred, ref, rng), "ssim": ssim(pred, ref, rng)}


def run_benchmark(
    images: Sequence[UnseenImage],
    runners: Sequence[ModelRunner],
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Per-image rows ``{image, modality, group, shape, method: {psnr, ssim, seconds}}`` and
    the outputs kept for crops (``outputs[image][method]``)."""
    rows: list[dict[str, Any]] = []
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for img in images:
        lr = area_lr(img)
        row: dict[str, Any] = {"image": img.name, "modality": img.modality, "group": img.group,
                               "shape": f"{img.hr.shape[0]}x{img.hr.shape[1]}",
                               "aliases": img.aliases, "note": img.note,
                               "methods": {}}  # fmt: skip
        outs: dict[str, np.ndarray] = {}
        for name in INTERPOLATION:
            t0 = time.perf_counter()
            outs[name] = interpolate(name, lr, img.meta)
            row["methods"][name] = score(outs[name], img.hr) | {"seconds": time.perf_counter() - t0}
        for r in runners:
            if not r.serves(img.modality):
                continue
            t0 = time.perf_counter()
            outs[r.label] = r(lr, img.meta)
            row["methods"][r.label] = score(outs[r.label], img.hr) | {
                "seconds": time.perf_counter() - t0
            }
        if progress:
            progress(img.name)
        rows.append(row)
        outputs[img.name] = outs
    return rows, outputs


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per modality group and method: n, mean/median/min PSNR gain over bicubic (dB), mean
    SSIM, and how many images are below the floor (PSNR lower than the floor's)."""
    out = []
    groups = sorted({r["group"] for r in rows})
    for g in groups:
        grp = [r for r in rows if r["group"] == g]
        methods: list[str] = []
        for r in grp:
            methods += [m for m in r["methods"] if m not in methods]
        for m in methods:
            have = [r for r in grp if m in r["methods"]]
            gain = np.array([r["methods"][m]["psnr"] - r["methods"]["bicubic"]["psnr"]
                             for r in have])  # fmt: skip
            below = sum(r["methods"][m]["psnr"] < r["methods"]["floor"]["psnr"] for r in have)
            out.append({
                "group": g, "method": m, "n": len(have),
                "psnr_mean": float(np.mean([r["methods"][m]["psnr"] for r in have])),
                "gain_mean": float(gain.mean()), "gain_median": float(np.median(gain)),
                "gain_min": float(gain.min()),
                "ssim_mean": float(np.mean([r["methods"][m]["ssim"] for r in have])),
                "below_floor": int(below) if m not in ("nearest", "bicubic") else None,
            })  # fmt: skip
    return out


def flat_patches(hu: np.ndarray, size: int = 32, count: int = 4) -> list[tuple[int, int]]:
    """Top-left corners of the ``count`` flattest non-overlapping ``size`` patches inside the
    body (mean above -500 HU, not touching padding)."""
    cands = []
    for y in range(0, hu.shape[0] - size + 1, size // 2):
        for x in range(0, hu.shape[1] - size + 1, size // 2):
            b = hu[y : y + size, x : x + size]
            if b.mean() > -500 and b.min() > -1024:
                cands.append((float(b.std()), y, x))
    cands.sort()
    return apart(cands, size, count)


def noise_in_flat_patches(
    images: Sequence[UnseenImage], runner: ModelRunner, size: int = 32
) -> list[dict[str, Any]]:
    """Noise std (HU) in flat ``size``² patches of real CT: the original image, the node's
    derived image of that original (x2, each patch's area = 2·size squared), and the x2
    result from the area-downsampled image against its truth (same patches)."""
    rows = []
    for img in images:
        if img.modality != "CT" or not runner.serves("CT"):
            continue
        m = img.meta
        hu = img.hr * float(m.rescale_slope) + float(m.rescale_intercept)
        derived = runner(img.hr, m) * float(m.rescale_slope) + float(m.rescale_intercept)
        bench = runner(area_lr(img), m) * float(m.rescale_slope) + float(m.rescale_intercept)
        for y, x in flat_patches(hu, size):
            d = derived[2 * y : 2 * (y + size), 2 * x : 2 * (x + size)]
            rows.append({
                "image": img.name, "y": y, "x": x,
                "std_original": float(hu[y : y + size, x : x + size].std()),
                "std_derived": float(d.std()),
                "std_from_lr": float(bench[y : y + size, x : x + size].std()),
                "mean_original": float(hu[y : y + size, x : x + size].mean()),
                "mean_derived": float(d.mean()),
            })  # fmt: skip
    return rows


def fmt_db(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:+.2f}"


def heldout_images(
    data_dir: str | Path, datasets: Sequence[str], split: str = "val", per_dataset: int = 3
) -> list[UnseenImage]:
    """Held-out slices of prepared training sources as benchmark images (stored values and
    pixel facts as a DICOM would hold them), so a choice made on them follows the unseen
    benchmark's protocol without looking at it."""
    from training.data.prepare import load_prepared

    out = []
    for doc in load_prepared(data_dir, datasets):
        meta = PixelMeta(**doc["meta"])
        idx = [i for a, b in doc["slabs"].get(split, []) for i in range(a, b)]
        if not idx:
            continue
        pick = sorted({idx[int(round(k))] for k in np.linspace(0, len(idx) - 1, per_dataset)})
        for i in pick:
            hr = doc["volume"][i]
            hr = np.ascontiguousarray(
                hr[: hr.shape[0] - hr.shape[0] % 2, : hr.shape[1] - hr.shape[1] % 2]
            )
            if min(hr.shape) < 64 or hr.max() == hr.min():
                continue
            mod = meta.modality if meta.modality in MODALITY_GROUP else "CR"
            out.append(UnseenImage(f"{doc['name']}[{i}]", mod, hr, meta))
    return out
