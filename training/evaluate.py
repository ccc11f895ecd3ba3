"""Evaluation of super-resolution models on the held-out split: per image and aggregated.

What is compared, on the same LR inputs (HR images degraded by the card's operator,
``area`` x``scale`` by default):

* interpolation baselines (:mod:`training.baselines`): nearest, bicubic, Lanczos, wavelet;
* learned models as exported ONNX files run **through sr_engine the way the node runs them**
  (tiles, intensity model, data consistency on: "node"), and the same network with data
  consistency off ("raw"), so the effect of the consistency step is visible. Roles: SRCNN,
  SRGAN, ESRGAN-PSNR, ESRGAN-GAN and the network-interpolated model.

Metrics (:mod:`training.metrics`) are computed in the network's [0, 1] intensity space of
the HR image (the card's intensity model), predictions clipped to [0, 1], ``scale`` border
pixels cropped: PSNR (data range 1.0, the span of that space, stated in the report), SSIM,
MSE, NIQE with a pristine model fitted on HR training images (and the standard parameters
when a file is given), FID when Inception weights are given (otherwise skipped with the
reason). Aggregates: mean with a 95 % t-interval; a paired two-sided Wilcoxon signed-rank
test of every method against bicubic.

The report (markdown + PNG plots and before/after crops) states the issue's targets as met
or missed by how much. A second section evaluates on DICOM images the models never saw
(pydicom's and pydicom-data's MR / CT / CR test files) with real stored integers.

Data come as an iterable of :class:`Sample` ``(hr, meta)``; :func:`heldout_samples` builds
them from ``srnode train prepare`` output (``training.data``).
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training import baselines
from training.metrics import NiqeModel, fit_niqe_model, mse, niqe, psnr, ssim

log = logging.getLogger(__name__)

INTERPOLATION = ("nearest", "bicubic", "lanczos", "wavelet")
# learned roles, in table order
ROLES = ("srcnn", "srgan", "esrgan-psnr", "esrgan-gan", "esrgan-interp")
ROLE_LABEL = {
    "srcnn": "SRCNN",
    "srgan": "SRGAN",
    "esrgan-psnr": "ESRGAN-PSNR",
    "esrgan-gan": "ESRGAN-GAN",
    "esrgan-interp": "ESRGAN-interp",
}
# card names tried for each role, ``{b}`` = the ESRGAN-PSNR model's name
ROLE_CANDIDATES = {
    "srcnn": ("{b}-srcnn", "srcnn-{b}"),
    "srgan": ("{b}-srgan", "srgan-{b}", "srresnet-{b}-gan"),
    "esrgan-gan": ("{b}-gan",),
    "esrgan-interp": ("{b}-interp",),
}
# issue 3 targets: ESRGAN-PSNR (node) over bicubic, dB, by model family
PSNR_TARGETS = {"mr": 2.5, "ct": 2.0}
SRCNN_MARGIN = 0.5
GAN_NIQE_SHARE = 0.80
DEFAULT_DATASETS = {
    "mr": ["colin27-1mm", "colin27-05mm"],
    "ct": ["cranium-ct"],
    "general": ["colin27-1mm", "cranium-ct"],
}


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One HR image in [0, 1] (the card's intensity space) and what it is."""

    hr: np.ndarray
    id: str
    modality: str = "OT"
    info: dict[str, Any] = field(default_factory=dict)


def as_samples(items: Iterable[Any]) -> list[Sample]:
    """Accept Samples or ``(hr_float_image, meta_dict)`` pairs (meta: id, modality)."""
    out = []
    for i, it in enumerate(items):
        if isinstance(it, Sample):
            out.append(it)
            continue
        hr, meta = it
        meta = dict(meta or {})
        out.append(
            Sample(
                np.asarray(hr, np.float32),
                str(meta.pop("id", f"img{i:04d}")),
                str(meta.pop("modality", "OT")),
                meta,
            )
        )
    return out


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all when k >= n)."""
    if k <= 0 or k >= n:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


def model_family(name: str) -> str:
    low = name.lower()
    for fam in ("mr", "ct"):
        if low == fam or low.startswith(fam + "-"):
            return fam
    return "general"


def heldout_samples(
    data_dir: str | Path,
    datasets: Sequence[str],
    intensity: Any,
    split: str = "test",
    max_images: int = 30,
    axes: Sequence[int] = (0,),
) -> list[Sample]:
    """Images of ``split`` from prepared datasets, mapped by ``intensity`` (the card's),
    at most ``max_images`` spread evenly over the split."""
    from training.data.dataset import split_images
    from training.data.prepare import load_prepared

    out: list[Sample] = []
    per = max(1, max_images // max(1, len(datasets))) if max_images else 0
    for name in datasets:
        docs = load_prepared(data_dir, [name])
        imgs = split_images(docs, split, intensity, axes=axes)
        modality = docs[0]["meta"].get("modality", "OT")
        for i in _spread(len(imgs), per):
            out.append(Sample(imgs[i], f"{name}/{split}/{i:03d}", modality, {"dataset": name}))
    return out


def training_images(
    data_dir: str | Path, datasets: Sequence[str], intensity: Any, max_images: int = 120
) -> list[np.ndarray]:
    """HR training images (for the NIQE pristine model)."""
    from training.data.dataset import split_images
    from training.data.prepare import load_prepared

    imgs: list[np.ndarray] = []
    per = max(1, max_images // max(1, len(datasets)))
    for name in datasets:
        all_imgs = split_images(load_prepared(data_dir, [name]), "train", intensity)
        imgs += [all_imgs[i] for i in _spread(len(all_imgs), per)]
    return imgs


def area_down(x: np.ndarray, scale: int) -> np.ndarray:
    """Block mean (the ``area`` degradation), float64."""
    h, w = x.shape
    return np.asarray(x, np.float64).reshape(h // scale, scale, w // scale, scale).mean((1, 3))


def degrade(x: np.ndarray, scale: int, operator: str = "area") -> np.ndarray:
    if operator == "area":
        return area_down(x, scale)
    import torch

    from training.degradations import degrade as t_degrade

    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None]
    return t_degrade(t, operator, scale)[0, 0].double().numpy()


# ---------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------


@dataclass
class Method:
    """``fn(lr [0,1] float) -> (sr [0,1] float, data-consistency RMSE or nan)``."""

    name: str
    kind: str  # "interpolation" | "node" | "raw"
    fn: Callable[[np.ndarray, str], tuple[np.ndarray, float]]
    role: str = ""


def interpolation_methods(scale: int, names: Sequence[str] = INTERPOLATION) -> list[Method]:
    def make(n: str) -> Callable[[np.ndarray, str], tuple[np.ndarray, float]]:
        return lambda lr, _mod: (baselines.upscale(lr, scale, n), math.nan)

    return [Method(n, "interpolation", make(n)) for n in names]


class EngineRunner:
    """An exported model behind sr_engine: [0, 1] floats are encoded as the stored integers
    a DICOM would hold (CT: HU via the card's window; otherwise 16-bit), enhanced exactly as
    the node does, and decoded back with the same linear map."""

    def __init__(self, card_path: str | Path, threads: int = 1, backend: str = "onnxruntime"):
        from sr_engine.engine import Engine

        self.engine = Engine.load(Path(card_path), backend=backend, threads=threads)
        self.card = self.engine.card
        self._infer = self.engine.infer
        self._last: tuple[bytes, np.ndarray] | None = None
        self.engine.infer = self._cached_infer  # type: ignore[method-assign]
        self.card_path = Path(card_path)
        it = self.card.intensity
        if it.model == "ct_hu":
            self.lo, self.hi = (float(v) for v in it.window)  # type: ignore[union-attr]
            self.dtype, self.signed = np.int16, 1
        elif it.model == "bits_stored":
            self.lo, self.hi = 0.0, 65535.0  # the engine maps the whole 16-bit range to [0, 1]
            self.dtype, self.signed = np.uint16, 0
        else:  # percentile: any linear encoding maps back identically; leave headroom above 1
            self.lo, self.hi = 0.0, 50000.0
            self.dtype, self.signed = np.uint16, 0

    def _cached_infer(self, x: np.ndarray, untiled: bool = False) -> np.ndarray:
        """The network output of the previous call when the input repeats: the node and the
        raw variant of one image share one inference."""
        import hashlib

        key = hashlib.sha1(x.tobytes() + bytes([untiled]) + str(x.shape).encode()).digest()
        if self._last is not None and self._last[0] == key:
            return self._last[1].copy()
        y = self._infer(x, untiled=untiled)
        self._last = (key, y)
        return y.copy()

    def encode(self, x: np.ndarray, modality: str) -> tuple[np.ndarray, Any]:
        from sr_engine.meta import PixelMeta

        info = np.iinfo(self.dtype)
        v = np.clip(np.rint(self.lo + x * (self.hi - self.lo)), info.min, info.max)
        meta = PixelMeta(modality=modality, bits_stored=16, pixel_representation=self.signed)
        return v.astype(self.dtype), meta

    def decode(self, stored: np.ndarray) -> np.ndarray:
        return (stored.astype(np.float64) - self.lo) / (self.hi - self.lo)

    def __call__(
        self, lr: np.ndarray, modality: str, consistency: bool
    ) -> tuple[np.ndarray, float]:
        pix, meta = self.encode(lr, modality)
        res = self.engine.enhance(pix, meta, consistency=consistency)
        return self.decode(res.pixels), res.consistency_rmse / (self.hi - self.lo)


def engine_methods(runner: EngineRunner, label: str, role: str) -> list[Method]:
    return [
        Method(f"{label} node", "node", lambda lr, m: runner(lr, m, True), role),
        Method(f"{label} raw", "raw", lambda lr, m: runner(lr, m, False), role),
    ]


def interpolate_onnx(psnr_card: Path, gan_card: Path, alpha: float, out_dir: Path) -> Path:
    """ESRGAN network interpolation of two exported models with the same graph:
    ``(1 - alpha) * PSNR + alpha * GAN`` for every float initializer. Returns a card path."""
    import onnx
    from onnx import numpy_helper

    from sr_engine.model_card import load_card, sha256_of

    cp, cg = load_card(psnr_card), load_card(gan_card)
    mp = onnx.load(cp.weights_path(psnr_card))
    mg = onnx.load(cg.weights_path(gan_card))
    gan_inits = {t.name: t for t in mg.graph.initializer}
    if set(gan_inits) != {t.name for t in mp.graph.initializer}:
        raise ValueError("PSNR and GAN graphs differ: cannot interpolate their weights")
    for t in mp.graph.initializer:
        a = numpy_helper.to_array(t)
        if not np.issubdtype(a.dtype, np.floating):
            continue
        b = numpy_helper.to_array(gan_inits[t.name])
        if a.shape != b.shape:
            raise ValueError(f"initializer {t.name}: shapes differ {a.shape} vs {b.shape}")
        t.CopyFrom(numpy_helper.from_array(((1 - alpha) * a + alpha * b).astype(a.dtype), t.name))
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{cp.name}-interp"
    w = out_dir / f"{name}.onnx"
    onnx.save(mp, w)
    card = cp.model_copy(
        update={
            "name": name,
            "weights": w.name,
            "sha256": sha256_of(w),
            "description": f"network interpolation alpha={alpha} of {cp.name} and {cg.name}",
        }
    )
    path = out_dir / f"{name}.json"
    path.write_text(card.to_json())
    return path


def find_role_cards(model_card: Path, search_dirs: Sequence[Path] = ()) -> dict[str, Path]:
    """The ESRGAN-PSNR card plus the cards of the other roles found by name (see
    ``ROLE_CANDIDATES``) beside it or in ``search_dirs``."""
    from sr_engine.model_card import load_card

    base = load_card(model_card, verify=False).name
    found = {"esrgan-psnr": model_card}
    dirs = [model_card.parent, *search_dirs]
    for role, patterns in ROLE_CANDIDATES.items():
        hit = next(
            (
                Path(d) / f"{pat.format(b=base)}.json"
                for pat in patterns
                for d in dirs
                if (Path(d) / f"{pat.format(b=base)}.json").is_file()
            ),
            None,
        )
        if hit is not None:
            found[role] = hit
    return found


# ---------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    scale: int
    operator: str
    crop_border: int
    records: list[dict[str, Any]]  # one per (image, method)
    methods: list[Method]
    samples: list[Sample]
    examples: dict[str, dict[str, np.ndarray]]  # image id -> method -> SR image (+ HR, LR)
    niqe_model: NiqeModel | None
    niqe_standard: NiqeModel | None
    seconds: float = 0.0
    features: dict[str, list[np.ndarray]] = field(default_factory=dict)  # FID: method -> feats
    fid_note: str = ""

    def values(self, method: str, metric: str) -> np.ndarray:
        return np.array([r[metric] for r in self.records if r["method"] == method], float)


def evaluate(
    samples: Iterable[Any],
    methods: Sequence[Method],
    scale: int = 2,
    operator: str = "area",
    niqe_model: NiqeModel | None = None,
    niqe_standard: NiqeModel | None = None,
    keep_examples: int = 2,
    progress: bool = False,
    features: Callable[[list[np.ndarray]], np.ndarray] | None = None,
) -> Evaluation:
    """Every method on every sample; per-image records of PSNR/SSIM/MSE/NIQE.

    ``features`` (e.g. :class:`training.fid.InceptionFeatures`) maps images to feature
    vectors; with it, FID of each method's outputs against the HR images is reported.
    """
    samples = as_samples(samples)
    crop = scale
    records: list[dict[str, Any]] = []
    examples: dict[str, dict[str, np.ndarray]] = {}
    feats: dict[str, list[np.ndarray]] = {}
    keep = set(_spread(len(samples), keep_examples)) if keep_examples else set()
    t0 = time.perf_counter()
    it: Iterable[tuple[int, Sample]] = enumerate(samples)
    if progress:
        from tqdm import tqdm

        it = tqdm(list(it), desc="evaluate", unit="img")
    for i, s in it:
        h, w = s.hr.shape
        hr = np.asarray(s.hr, np.float64)[: h - h % scale, : w - w % scale]
        lr = degrade(hr, scale, operator)
        if i in keep:
            examples[s.id] = {"HR": hr, "LR": lr}
        outs: dict[str, np.ndarray] = {"HR": hr}
        for m in methods:
            sr, dc = m.fn(lr, s.modality)
            sr = np.clip(np.asarray(sr, np.float64), 0.0, 1.0)
            if sr.shape != hr.shape:
                raise RuntimeError(f"{m.name}: output {sr.shape} for HR {hr.shape}")
            rec = {
                "image": s.id,
                "method": m.name,
                "kind": m.kind,
                "psnr": psnr(sr, hr, 1.0, crop),
                "ssim": ssim(sr, hr, 1.0, crop),
                "mse": mse(sr, hr, crop),
                "dc_rmse": dc,
            }
            if niqe_model is not None:
                rec["niqe"] = niqe(sr, niqe_model)
            if niqe_standard is not None:
                rec["niqe_std"] = niqe(sr, niqe_standard)
            records.append(rec)
            outs[m.name] = sr
            if i in keep:
                examples[s.id][m.name] = sr
        if features is not None:
            names = list(outs)
            for name, f in zip(names, features([outs[n] for n in names]), strict=True):
                feats.setdefault(name, []).append(f)
        if niqe_model is not None:
            records.append({"image": s.id, "method": "HR", "kind": "reference",
                            "niqe": niqe(hr, niqe_model)})  # fmt: skip
    return Evaluation(
        scale, operator, crop, records, list(methods), samples, examples, niqe_model,
        niqe_standard, time.perf_counter() - t0, {k: list(v) for k, v in feats.items()},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (NaN for n < 2)."""
    from scipy import stats

    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) < 2:
        return float(v.mean()), math.nan
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def paired_wilcoxon(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Median of ``a - b`` and the two-sided Wilcoxon signed-rank p-value (1.0 if a == b)."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return math.nan, math.nan
    if np.all(d == 0):
        return 0.0, 1.0
    return float(np.median(d)), float(stats.wilcoxon(d, alternative="two-sided").pvalue)


def summarize(ev: Evaluation, reference: str = "bicubic") -> list[dict[str, Any]]:
    """One row per method: mean ± CI of each metric, and the Wilcoxon test vs ``reference``."""
    rows = []
    ref = {k: ev.values(reference, k) for k in ("psnr", "ssim")}
    for m in ev.methods:
        row: dict[str, Any] = {"method": m.name, "kind": m.kind, "role": m.role,
                               "n": len(ev.values(m.name, "psnr"))}  # fmt: skip
        for k in ("psnr", "ssim", "mse", "niqe", "niqe_std", "dc_rmse"):
            vals = ev.values(m.name, k) if any(k in r for r in ev.records) else np.array([])
            row[k] = mean_ci(vals) if len(vals) else (math.nan, math.nan)
        row["fid"] = math.nan
        if m.name in ev.features and "HR" in ev.features and len(ev.features["HR"]) >= 2:
            from training.fid import fid_from_features

            row["fid"] = fid_from_features(
                np.array(ev.features[m.name]), np.array(ev.features["HR"])
            )
        for k in ("psnr", "ssim"):
            if m.name == reference or len(ref[k]) == 0:
                row[f"{k}_vs_ref"] = (math.nan, math.nan)
            else:
                row[f"{k}_vs_ref"] = paired_wilcoxon(ev.values(m.name, k), ref[k])
        rows.append(row)
    return rows


def _mean(ev: Evaluation, method: str, metric: str) -> float:
    v = ev.values(method, metric)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else math.nan


def check_targets(ev: Evaluation, model_name: str) -> list[dict[str, Any]]:
    """Issue 3's targets: met / missed by how much (or not evaluated, with the reason)."""
    fam = model_family(model_name)
    names = {m.name for m in ev.methods}
    out: list[dict[str, Any]] = []
    bic = _mean(ev, "bicubic", "psnr")
    esr = "ESRGAN-PSNR node"
    if esr in names:
        p = _mean(ev, esr, "psnr")
        if fam in PSNR_TARGETS:
            need = PSNR_TARGETS[fam]
            gain = p - bic
            out.append({"target": f"ESRGAN-PSNR >= bicubic + {need} dB", "value": f"{gain:+.2f} dB",
                        "met": gain >= need, "short_by": max(0.0, need - gain)})  # fmt: skip
        else:
            out.append({"target": "ESRGAN-PSNR vs bicubic (no dB target for this family)",
                        "value": f"{p - bic:+.2f} dB", "met": None, "short_by": None})  # fmt: skip
        if "SRCNN node" in names:
            gain = p - _mean(ev, "SRCNN node", "psnr")
            out.append({"target": f"ESRGAN-PSNR >= SRCNN + {SRCNN_MARGIN} dB",
                        "value": f"{gain:+.2f} dB", "met": gain >= SRCNN_MARGIN,
                        "short_by": max(0.0, SRCNN_MARGIN - gain)})  # fmt: skip
        else:
            out.append({"target": f"ESRGAN-PSNR >= SRCNN + {SRCNN_MARGIN} dB",
                        "value": "not evaluated: no SRCNN model given", "met": None,
                        "short_by": None})  # fmt: skip
    gan = "ESRGAN-GAN node"
    if gan in names and esr in names:
        ng, npn = ev.values(gan, "niqe"), ev.values(esr, "niqe")
        if len(ng) and len(ng) == len(npn):
            ok = np.isfinite(ng) & np.isfinite(npn)
            share = float(np.mean(ng[ok] < npn[ok])) if ok.any() else math.nan
            dn = float(np.mean(ng[ok] - npn[ok])) if ok.any() else math.nan
            out.append({"target": f"GAN NIQE < PSNR NIQE on >= {GAN_NIQE_SHARE:.0%} of slices",
                        "value": f"{share:.0%} of {int(ok.sum())} (mean ΔNIQE {dn:+.2f})",
                        "met": share >= GAN_NIQE_SHARE,
                        "short_by": max(0.0, GAN_NIQE_SHARE - share)})  # fmt: skip
        pg = _mean(ev, gan, "psnr")
        out.append({"target": "GAN PSNR >= bicubic", "value": f"{pg - bic:+.2f} dB",
                    "met": pg >= bic, "short_by": max(0.0, bic - pg)})  # fmt: skip
    elif esr in names:
        out.append({"target": "GAN targets", "value": "not evaluated: no GAN model given",
                    "met": None, "short_by": None})  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------
# unseen DICOM images
# ---------------------------------------------------------------------------------------

# uncompressed grayscale test files of pydicom / pydicom-data (first frame, centre crop)
UNSEEN_FILES = {
    "MR": ["MR_small.dcm", "emri_small.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm", "MR2_UNCR.dcm"],
    "CT": ["CT_small.dcm", "693_UNCR.dcm", "eCT_Supplemental.dcm"],
    "CR": ["RG1_UNCR.dcm", "RG3_UNCR.dcm"],
}


def _testdata_path(name: str) -> Path | None:
    """A pydicom / pydicom-data test file on disk (never downloads)."""
    import pydicom.data

    local = Path(pydicom.data.__file__).parent / "test_files" / name
    if local.is_file():
        return local
    try:
        import data_store

        p = Path(data_store.__file__).parent / "data" / name
        if p.is_file():
            return p
    except ImportError:
        pass
    return None


def _windowed(stored: np.ndarray, meta: Any, window: Sequence[float]) -> np.ndarray:
    hu = stored * float(meta.rescale_slope) + float(meta.rescale_intercept)
    return np.clip(hu, window[0], window[1])


def unseen_dicom(
    runner: EngineRunner,
    modalities: Sequence[str],
    max_edge: int = 512,
    files: dict[str, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """Enhance area-downsampled real DICOM images (stored integers, real meta) and compare
    with the originals in stored units; bicubic on the same LR as the reference.

    PSNR's data range is each original image's (max - min) of stored values.
    """
    import pydicom

    from sr_engine.errors import UnsupportedInput
    from sr_engine.meta import PixelMeta

    s = runner.card.scale
    out = []
    for mod in modalities:
        for name in (files or UNSEEN_FILES).get(mod, []):
            path = _testdata_path(name)
            if path is None:
                out.append({"file": name, "modality": mod, "skipped": "not installed"})
                continue
            ds = pydicom.dcmread(path)
            arr = ds.pixel_array
            if arr.ndim == 3:
                arr = arr[len(arr) // 2]
            h, w = arr.shape
            ch, cw = min(h, max_edge), min(w, max_edge)
            ch, cw = ch - ch % s, cw - cw % s
            top, left = (h - ch) // 2, (w - cw) // 2
            hr = arr[top : top + ch, left : left + cw]
            meta = PixelMeta.from_dataset(ds)
            lr = np.rint(area_down(hr.astype(np.float64), s)).astype(hr.dtype)
            rng = float(hr.max()) - float(hr.min()) or 1.0
            row: dict[str, Any] = {"file": name, "modality": meta.modality, "shape": f"{ch}x{cw}",
                                   "bits": meta.bits_stored, "data_range": rng}  # fmt: skip
            try:
                node = runner.engine.enhance(lr, meta, consistency=True)
                raw = runner.engine.enhance(lr, meta, consistency=False)
            except UnsupportedInput as e:
                row["skipped"] = str(e)
                out.append(row)
                continue
            info = np.iinfo(hr.dtype)
            lo, hi = max(meta.stored_min, info.min), min(meta.stored_max, info.max)
            bic = np.clip(np.rint(baselines.bicubic(lr.astype(np.float64), s)), lo, hi)
            ref = hr.astype(np.float64)
            win = runner.card.intensity.window if runner.card.intensity.model == "ct_hu" else None
            for key, img in (("bicubic", bic), ("node", node.pixels), ("raw", raw.pixels)):
                img = img.astype(np.float64)
                row[f"{key}_psnr"] = psnr(img, ref, rng, s)
                row[f"{key}_ssim"] = ssim(img, ref, rng, s)
                if win is not None:  # also within the model's HU window (what it can represent)
                    a, b = (_windowed(v, meta, win) for v in (img, ref))
                    row[f"{key}_psnr_win"] = psnr(a, b, win[1] - win[0], s)
            row["node_dc_rmse"] = node.consistency_rmse
            out.append(row)
    return out


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------


def _fmt_ci(mc: tuple[float, float], digits: int = 2, scale: float = 1.0) -> str:
    m, h = mc
    if not np.isfinite(m):
        return "–"
    if not np.isfinite(h):
        return f"{m * scale:.{digits}f}"
    return f"{m * scale:.{digits}f} ± {h * scale:.{digits}f}"


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "–"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def results_table(
    rows: list[dict[str, Any]], has_niqe: bool, has_std: bool, has_fid: bool = False
) -> str:
    head = ["method", "PSNR dB", "SSIM", "MSE ×1e-4"]
    if has_niqe:
        head.append("NIQE (fitted)")
    if has_std:
        head.append("NIQE (standard)")
    if has_fid:
        head.append("FID")
    head += ["ΔPSNR vs bicubic (median)", "Wilcoxon p (PSNR)", "Wilcoxon p (SSIM)", "DC RMSE"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], _fmt_ci(r["psnr"]), _fmt_ci(r["ssim"], 4),
                 _fmt_ci(r["mse"], 2, 1e4)]  # fmt: skip
        if has_niqe:
            cells.append(_fmt_ci(r["niqe"]))
        if has_std:
            cells.append(_fmt_ci(r["niqe_std"]))
        if has_fid:
            cells.append("–" if not np.isfinite(r["fid"]) else f"{r['fid']:.1f}")
        d, p = r["psnr_vs_ref"]
        cells += [
            "–" if not np.isfinite(d) else f"{d:+.2f}",
            _fmt_p(p),
            _fmt_p(r["ssim_vs_ref"][1]),
            "–" if not np.isfinite(r["dc_rmse"][0]) else f"{r['dc_rmse'][0]:.1e}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plots(ev: Evaluation, rows: list[dict[str, Any]], out_dir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    shown = [r for r in rows if r["kind"] != "raw"]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(shown) + 1.2), dpi=80)
    ys = np.arange(len(shown))
    means = [r["psnr"][0] for r in shown]
    errs = [0 if not np.isfinite(r["psnr"][1]) else r["psnr"][1] for r in shown]
    colors = ["#999999" if r["kind"] == "interpolation" else "#3a6ea5" for r in shown]
    ax.barh(ys, means, xerr=errs, color=colors, capsize=3)
    ax.set_yticks(ys, [r["method"] for r in shown], fontsize=8)
    lo = min(means) - 2 if means else 0
    ax.set_xlim(left=max(0, lo))
    ax.set_xlabel("PSNR (dB), mean ± 95% CI")
    ax.invert_yaxis()
    fig.tight_layout()
    p = out_dir / f"{stem}.psnr.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)

    bic = ev.values("bicubic", "psnr")
    others = [r["method"] for r in rows if r["method"] not in ("bicubic",) and r["kind"] != "raw"]
    if len(bic):
        fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
        data = [ev.values(m, "psnr") - bic for m in others]
        ax.boxplot(data, widths=0.5)
        ax.set_xticks(range(1, len(others) + 1), others, rotation=30, ha="right", fontsize=7)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel("PSNR − bicubic (dB), per image")
        fig.tight_layout()
        p = out_dir / f"{stem}.delta_psnr.png"
        fig.savefig(p)
        plt.close(fig)
        paths.append(p)

    names = {m.name for m in ev.methods}
    if {"ESRGAN-PSNR node", "ESRGAN-GAN node"} <= names and ev.niqe_model is not None:
        a, b = ev.values("ESRGAN-PSNR node", "niqe"), ev.values("ESRGAN-GAN node", "niqe")
        fig, ax = plt.subplots(figsize=(3.6, 3.4), dpi=80)
        ax.scatter(a, b, s=10)
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.any():
            lim = [min(a[ok].min(), b[ok].min()), max(a[ok].max(), b[ok].max())]
            ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlabel("NIQE ESRGAN-PSNR")
        ax.set_ylabel("NIQE ESRGAN-GAN")
        ax.set_title("below the line: GAN more natural", fontsize=8)
        fig.tight_layout()
        p = out_dir / f"{stem}.niqe.png"
        fig.savefig(p)
        plt.close(fig)
        paths.append(p)
    return paths


def _crop_box(hr: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left of the ``size`` window with the most gradient energy."""
    gy, gx = np.gradient(hr)
    e = gy**2 + gx**2
    best, pos = -1.0, (0, 0)
    step = max(8, size // 4)
    for t in range(0, max(1, hr.shape[0] - size + 1), step):
        for left in range(0, max(1, hr.shape[1] - size + 1), step):
            v = float(e[t : t + size, left : left + size].sum())
            if v > best:
                best, pos = v, (t, left)
    return pos


def _crops(ev: Evaluation, out_dir: Path, stem: str, size: int = 80, zoom: int = 2) -> list[Path]:
    from PIL import Image, ImageDraw

    wanted = ["LR", "bicubic", "wavelet", "SRCNN node", "SRGAN node", "ESRGAN-PSNR node",
              "ESRGAN-GAN node", "HR"]  # fmt: skip
    paths = []
    for k, imgs in enumerate(ev.examples.values()):
        hr = imgs["HR"]
        size_ = min(size, *hr.shape)
        t, left = _crop_box(hr, size_)
        # display window: the HR crop's 1st-99th percentiles, the same for every tile
        lo, hi = np.percentile(hr[t : t + size_, left : left + size_], [1, 99])
        hi = hi if hi > lo else lo + 1.0
        tiles, labels = [], []
        for name in wanted:
            if name not in imgs:
                continue
            im = baselines.nearest(imgs["LR"], ev.scale) if name == "LR" else imgs[name]
            tile = np.clip((im[t : t + size_, left : left + size_] - lo) / (hi - lo), 0, 1)
            tiles.append(baselines.nearest((tile * 255 + 0.5).astype(np.uint8), zoom))
            labels.append(name.replace(" node", "").replace("LR", "LR (input)"))
        pad, label_h, edge = 4, 14, size_ * zoom
        canvas = Image.new("L", (len(tiles) * (edge + pad) - pad, edge + label_h), 255)
        draw = ImageDraw.Draw(canvas)
        for i, (tile, lab) in enumerate(zip(tiles, labels, strict=True)):
            x0 = i * (edge + pad)
            canvas.paste(Image.fromarray(tile.astype(np.uint8)), (x0, label_h))
            draw.text((x0 + 2, 1), lab, fill=0)
        p = out_dir / f"{stem}.crop{k + 1}.png"
        canvas.save(p, optimize=True)
        paths.append(p)
    return paths


def write_per_image_csv(ev: Evaluation, path: Path) -> None:
    keys = ["image", "method", "kind", "psnr", "ssim", "mse", "niqe", "niqe_std", "dc_rmse"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in ev.records:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k, ""))
                        for k in keys})  # fmt: skip


def write_report(
    ev: Evaluation,
    model_name: str,
    report_path: Path,
    figures_dir: Path,
    context: dict[str, Any],
    unseen: list[dict[str, Any]] | None = None,
    notes: Sequence[str] = (),
    training: dict[str, Any] | None = None,
) -> Path:
    """The markdown report plus PNGs (and a per-image CSV) under ``figures_dir``."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    rows = summarize(ev)
    targets = check_targets(ev, model_name)
    has_niqe = ev.niqe_model is not None
    has_std = ev.niqe_standard is not None
    plots = _plots(ev, rows, figures_dir, model_name)
    crops = _crops(ev, figures_dir, model_name)
    csv_path = figures_dir / f"{model_name}.per_image.csv"
    write_per_image_csv(ev, csv_path)

    def rel(p: Path) -> str:
        try:
            return str(p.relative_to(report_path.parent))
        except ValueError:
            return str(p)

    L: list[str] = [f"# Evaluation: `{model_name}`", ""]
    for k, v in context.items():
        L.append(f"- **{k}**: {v}")
    L += [
        f"- **degradation**: `{ev.operator}` ×{ev.scale} of each HR image (the LR input)",
        f"- **images**: {len(ev.samples)} held-out "
        f"({', '.join(sorted({str(s.info.get('dataset', s.modality)) for s in ev.samples}))})",
        "- **metric space**: the card's intensity model maps each HR image to [0, 1]; "
        "predictions are clipped to [0, 1]; PSNR uses **data range 1.0** (= the span of that "
        f"space); {ev.crop_border} border pixels are cropped; SSIM: 11×11 Gaussian window, "
        "σ 1.5, K1 0.01, K2 0.03",
        "- **node** = the exported ONNX model run through `sr_engine` as the node runs it "
        "(tiles, intensity model, data consistency on); **raw** = the same with data "
        "consistency off",
        "- **statistics**: mean ± half-width of the 95 % Student-t interval over images; "
        "two-sided paired Wilcoxon signed-rank test of each method vs bicubic (when all "
        f"n = {len(ev.samples)} differences have one sign, the exact test gives its smallest "
        f"p, {2 / 2 ** len(ev.samples):.1e})",
    ]
    if has_niqe:
        nm = ev.niqe_model
        L.append(f"- **NIQE (fitted)**: pristine model {nm.source}, {nm.n_blocks} sharp "
                 f"{nm.block_size}-px blocks (lower = more natural)")  # fmt: skip
        hr_n = ev.values("HR", "niqe")
        if len(hr_n):
            L.append(f"  — NIQE of the HR test images themselves: {_fmt_ci(mean_ci(hr_n))}")
    if has_std:
        L.append(f"- **NIQE (standard)**: {ev.niqe_standard.source}, 96-px blocks")
    else:
        L.append("- **NIQE (standard)**: not computed: no standard parameter file given "
                 "(`--niqe-params modelparameters.mat`)")  # fmt: skip
    L += ["", "## Targets (issue 3, held-out split, area ×2)", "",
          "| target | measured | status |", "|---|---|---|"]  # fmt: skip
    for t in targets:
        if t["met"] is None:
            status = "n/a"
        elif t["met"]:
            status = "**met**"
        else:
            sb = t["short_by"]
            unit = " dB" if "dB" in t["target"] or "bicubic" in t["target"] else ""
            status = (f"**missed** by {sb:.0%}" if "slices" in t["target"]
                      else f"**missed** by {sb:.2f}{unit}")  # fmt: skip
        L.append(f"| {t['target']} | {t['value']} | {status} |")
    if notes:
        L += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    if training and training.get("history"):
        L += ["", "## How the models were trained", "",
              "| step | iterations | batch | wall time | device | command |",
              "|---|---|---|---|---|---|"]  # fmt: skip
        for h in training["history"]:
            wall = h.get("wall_s")
            wall_s = f"{float(wall):.0f} s" if wall is not None else "–"
            L.append(f"| {h.get('step', '')} | {h.get('iterations', '–')} | "
                     f"{h.get('batch', '–')} | {wall_s} | {h.get('device', '')} | "
                     f"`{h.get('command', '')}` |")  # fmt: skip
        total = sum(float(h.get("wall_s") or 0) for h in training["history"])
        L += ["", f"Total training wall time: {total:.0f} s ({total / 60:.1f} min)."]
        for key in ("prepare_command", "export_command"):
            if training.get(key):
                L.append(f"{key.replace('_', ' ').capitalize()}: `{training[key]}`.")
        for key in ("losses", "augmentation", "train_images"):
            vals = [h.get(key) for h in training["history"] if h.get(key)]
            val = training.get(key) or (vals[-1] if vals else None)
            if val:
                L.append(f"{key.replace('_', ' ').capitalize()}: {val}.")
    L += [
        "",
        "## Held-out results",
        "",
        results_table(rows, has_niqe, has_std, bool(ev.features)),
        "",
    ]
    node_raw = [(r, next((q for q in rows if q["method"] == r["method"].replace(" node", " raw")),
                         None)) for r in rows if r["kind"] == "node"]  # fmt: skip
    if node_raw:
        L += ["### Effect of data consistency (node − raw, same network)", "",
              "| model | ΔPSNR dB (median) | Wilcoxon p |", "|---|---|---|"]  # fmt: skip
        for r, q in node_raw:
            if q is None:
                continue
            d, p = paired_wilcoxon(ev.values(r["method"], "psnr"), ev.values(q["method"], "psnr"))
            L.append(f"| {r['method'].replace(' node', '')} | {d:+.3f} | {_fmt_p(p)} |")
        L.append("")
    if unseen:
        win_cols = any("node_psnr_win" in u for u in unseen)
        L += ["## DICOM images the models never saw", "",
              "pydicom / pydicom-data test files: first (or middle) frame, centre crop, area ×"
              f"{ev.scale} of the stored integers rounded to integers, enhanced with the real "
              "DICOM meta; compared with the original stored values (PSNR data range = the "
              "original's max − min).", "",
              "| file | modality | size | bits | bicubic PSNR / SSIM | node PSNR / SSIM | "
              "raw PSNR / SSIM |" + (" PSNR in HU window: bicubic / node / raw |" if win_cols
                                     else ""),
              "|---|---|---|---|---|---|---|" + ("---|" if win_cols else "")]  # fmt: skip
        for u in unseen:
            if "skipped" in u:
                L.append(f"| {u['file']} | {u.get('modality', '')} | – | – | skipped: "
                         f"{u['skipped']} | | |" + (" |" if win_cols else ""))  # fmt: skip
                continue
            cells = [
                f"{u[k + '_psnr']:.2f} / {u[k + '_ssim']:.4f}" for k in ("bicubic", "node", "raw")
            ]
            if win_cols:
                cells.append(" / ".join(f"{u[k + '_psnr_win']:.2f}"
                                        for k in ("bicubic", "node", "raw")))  # fmt: skip
            L.append(f"| {u['file']} | {u['modality']} | {u['shape']} | {u['bits']} | "
                     + " | ".join(cells) + " |")  # fmt: skip
        done = [u for u in unseen if "skipped" not in u]
        if done:
            gains = [u["node_psnr"] - u["bicubic_psnr"] for u in done]
            L += ["", f"Node vs bicubic on these {len(done)} images: mean "
                  f"{np.mean(gains):+.2f} dB, better on {sum(g > 0 for g in gains)}."]  # fmt: skip
        L.append("")
    L += ["## Plots", ""]
    L += [f"![{p.stem}]({rel(p)})" for p in plots]
    L += ["", "## Before / after crops", "",
          "Crops of the highest-gradient region of held-out images: LR input (nearest), "
          "interpolation, the models (node), HR, shown at 2x (nearest); every tile of a "
          "row uses the same display window (the HR crop's 1st–99th percentiles).", ""]  # fmt: skip
    L += [f"![{p.stem}]({rel(p)})" for p in crops]
    L += ["", f"Per-image values: [{csv_path.name}]({rel(csv_path)}). "
          f"Evaluation took {ev.seconds:.0f} s.", ""]  # fmt: skip
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text("\n".join(x for x in L if x is not None) + "\n")
    return report_path


# ---------------------------------------------------------------------------------------
# the whole run (the CLI calls this)
# ---------------------------------------------------------------------------------------


def run_evaluation(
    model: str | Path,
    data_dir: Path,
    datasets: Sequence[str] | None = None,
    split: str = "test",
    max_images: int = 30,
    out_report: Path | None = None,
    figures_dir: Path | None = None,
    extra_cards: dict[str, Path] | None = None,
    interp_alpha: float = 0.8,
    niqe_params: Path | None = None,
    inception_weights: Path | None = None,
    unseen: bool = True,
    threads: int = 1,
    progress: bool = True,
    command: str = "",
    baselines_dirs: Sequence[Path] = (),
    notes: Sequence[str] = (),
    update_card: bool = False,
) -> Path:
    from sr_engine.model_card import load_card
    from sr_engine.registry import resolve_model

    card_path = resolve_model(model)
    card = load_card(card_path)
    fam = model_family(card.name)
    recorded = [d.get("name") if isinstance(d, dict) else d
                for d in card.training_data.get("datasets") or []]  # fmt: skip
    datasets = list(datasets or [d for d in recorded if d] or DEFAULT_DATASETS[fam])
    cards = find_role_cards(card_path, baselines_dirs)
    cards.update(extra_cards or {})
    tmp = Path(tempfile.mkdtemp(prefix="srnode-eval-"))
    runners: dict[str, EngineRunner] = {}
    try:
        if "esrgan-interp" not in cards and "esrgan-gan" in cards:
            try:
                cards["esrgan-interp"] = interpolate_onnx(cards["esrgan-psnr"], cards["esrgan-gan"],
                                                          interp_alpha, tmp)  # fmt: skip
            except ValueError as e:
                log.warning("no interpolated model: %s", e)
        methods = interpolation_methods(card.scale)
        for role in ROLES:
            if role in cards:
                runners[role] = EngineRunner(cards[role], threads=threads)
                label = ROLE_LABEL[role]
                methods += engine_methods(runners[role], label, role)
        samples = heldout_samples(data_dir, datasets, card.intensity, split, max_images)
        if not samples:
            raise ValueError(f"no {split} images in {data_dir} for {', '.join(datasets)}")
        train = training_images(data_dir, datasets, card.intensity)
        nm = fit_niqe_model(train, block_size=32,
                            source=f"fitted on {len(train)} HR training images of "
                                   f"{', '.join(datasets)}")  # fmt: skip
        std = NiqeModel.load(niqe_params) if niqe_params else None
        feats = None
        if inception_weights is not None:
            from training.fid import InceptionFeatures

            feats = InceptionFeatures(inception_weights)
        ev = evaluate(samples, methods, card.scale, card.degradation.operator, nm, std,
                      progress=progress, features=feats)  # fmt: skip
        fid_note = fid_status(inception_weights, len(samples))
        unseen_rows = None
        if unseen:
            mods = {"mr": ["MR"], "ct": ["CT"]}.get(fam, ["CR", "MR", "CT"])
            unseen_rows = unseen_dicom(runners["esrgan-psnr"], mods)
        out_report = out_report or card_path.with_name(f"{card.name}.report.md")
        figures_dir = figures_dir or card_path.parent / "reports"
        ctx: dict[str, Any] = {
            "command": f"`{command}`" if command else "",
            "models": ", ".join(
                f"{ROLE_LABEL[r]} = `{runners[r].card.name}` {runners[r].card.version} "
                f"(sha256 {runners[r].card.short_sha})"
                for r in runners
            ),
            "architecture": f"{card.architecture.name} {card.architecture.params}",
            "intensity model": card.intensity.model
            + (f" window {list(card.intensity.window)} HU" if card.intensity.window else ""),
            "data": f"{', '.join(datasets)} from `{data_dir}`, split `{split}`",
            "PSNR data range 1.0 means": data_range_note(card.intensity),
            "FID": fid_note,
        }
        ctx.update(training_facts(runners))
        missing = [ROLE_LABEL[r] for r in ROLES if r not in runners]
        if missing:
            ctx["not evaluated"] = (
                ", ".join(missing)
                + ": no card found ("
                + "; ".join(
                    f"{ROLE_LABEL[r]}: "
                    + ", ".join(p.format(b=card.name) for p in ROLE_CANDIDATES[r])
                    for r in ROLES
                    if r in ROLE_CANDIDATES and r not in runners
                )
                + ")"
            )
        ctx = {k: v for k, v in ctx.items() if v}
        if "esrgan-interp" in runners and "esrgan-interp" not in (extra_cards or {}):
            ctx["interpolated model"] = f"alpha = {interp_alpha} (weights (1-α)·PSNR + α·GAN)"
        hist_card = runners.get("esrgan-gan", runners["esrgan-psnr"]).card
        training = hist_card.training_data if "history" in hist_card.training_data else None
        if training is not None:  # the history table says it better than per-card lines
            for role in ("esrgan-psnr", "esrgan-gan"):
                ctx.pop(f"training ({ROLE_LABEL[role]})", None)
        path = write_report(
            ev, card.name, out_report, figures_dir, ctx, unseen_rows, notes, training
        )
        if update_card:
            for role, r in runners.items():
                if role in ("esrgan-psnr", "esrgan-gan") and r.card_path.parent != tmp:
                    write_card_metrics(r.card_path, ev, f"{ROLE_LABEL[role]} node", split, path)
        return path
    finally:
        for r in runners.values():
            r.engine.close()
        shutil.rmtree(tmp, ignore_errors=True)


def data_range_note(intensity: Any) -> str:
    if intensity.model == "ct_hu":
        lo, hi = intensity.window
        return f"the card's HU window [{lo:g}, {hi:g}] ({hi - lo:g} HU)"
    if intensity.model == "percentile":
        p0, p1 = intensity.percentiles
        return f"each HR image's [{p0:g}, {p1:g}] percentile range of its stored values"
    return (
        "the full BitsStored range of each source (255 for the 8-bit Colin27 MRI, 4095 for "
        "the 12-bit stored Cranium CT, …)"
    )


def training_facts(runners: dict[str, EngineRunner]) -> dict[str, str]:
    """What the cards say about how each model was trained (command, wall time, device)."""
    out: dict[str, str] = {}
    for role in ("esrgan-psnr", "esrgan-gan", "srcnn", "srgan"):
        if role not in runners:
            continue
        td = runners[role].card.training_data
        parts = []
        if td.get("summary"):
            parts.append(str(td["summary"]))
        it = td.get("iterations", td.get("iters"))
        if it is not None:
            parts.append(f"{it} iterations")
        if td.get("wall_s") is not None:
            parts.append(f"wall time {float(td['wall_s']):.0f} s")
        if td.get("device"):
            parts.append(f"on {td['device']}")
        cmd = td.get("command") or td.get("train_command")
        if cmd:
            parts.append(f"command `{cmd}`")
        if parts:
            out[f"training ({ROLE_LABEL[role]})"] = "; ".join(parts)
    return out


def write_card_metrics(card_path: Path, ev: Evaluation, method: str, split: str, report: Path):
    """Record the held-out summary of ``method`` in the card's ``metrics.heldout`` (the
    weights and their sha256 are untouched)."""
    from sr_engine.model_card import load_card

    card = load_card(card_path, verify=False)
    row = next(r for r in summarize(ev) if r["method"] == method)
    bic = next(r for r in summarize(ev) if r["method"] == "bicubic")
    summary = {
        "split": split,
        "n_images": row["n"],
        "degradation": f"{ev.operator} x{ev.scale}",
        "psnr_db": round(row["psnr"][0], 3),
        "psnr_ci95_db": round(row["psnr"][1], 3),
        "ssim": round(row["ssim"][0], 4),
        "bicubic_psnr_db": round(bic["psnr"][0], 3),
        "bicubic_ssim": round(bic["ssim"][0], 4),
        "psnr_data_range": "1.0 = the card's intensity range",
        "report": report.name,
    }
    if np.isfinite(row["niqe"][0]):
        summary["niqe_fitted"] = round(row["niqe"][0], 3)
    metrics = dict(card.metrics) | {"heldout": summary}
    card_path.write_text(card.model_copy(update={"metrics": metrics}).to_json())


def fid_status(inception_weights: Path | None, n_images: int = 0) -> str:
    if inception_weights is None:
        return (
            "skipped: no Inception-v3 weights given (`--inception-weights`); nothing is downloaded"
        )
    return (
        f"Inception-v3 pool features ({inception_weights.name}) of each method's outputs vs "
        f"the {n_images} HR images; with fewer images than 2048 feature dimensions the "
        "covariances are rank-deficient: compare methods with each other only"
    )


# ---------------------------------------------------------------------------------------
# CLI: srnode train evaluate
# ---------------------------------------------------------------------------------------


def _command_line(argv: Sequence[str]) -> str:
    """``srnode …`` as typed, with each ``--note TEXT`` shortened (the notes are printed)."""
    import shlex

    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--note":
            out.append("--note …")
            skip = True
        elif a.startswith("--note="):
            out.append("--note …")
        else:
            out.append(shlex.quote(a))
    return "srnode " + " ".join(out)


def register_evaluate(train_app: Any) -> None:
    """Add ``evaluate`` to the ``srnode train`` typer app."""
    import sys

    import typer

    @train_app.command("evaluate")
    def evaluate_cmd(
        model: str = typer.Argument(
            ..., help="the ESRGAN-PSNR model: a name (mr-x2) or the path of its card (.json)"
        ),
        data_dir: Path = typer.Option(
            Path("runs/data"), "--data-dir", help="prepared datasets (`srnode train prepare`)"
        ),
        datasets: str = typer.Option(
            "", help="comma-separated dataset names (default: the card's, else by model family)"
        ),
        split: str = typer.Option("test", help="split to evaluate on"),
        max_images: int = typer.Option(30, help="held-out images, spread evenly over the split"),
        gan: Path | None = typer.Option(None, help="ESRGAN-GAN card (default: <name>-gan.json)"),
        srcnn: Path | None = typer.Option(None, help="SRCNN card (default: <name>-srcnn.json)"),
        srgan: Path | None = typer.Option(None, help="SRGAN card (default: <name>-srgan.json)"),
        interp: Path | None = typer.Option(
            None, help="interpolated-model card (default: <name>-interp.json, else built)"
        ),
        alpha: float = typer.Option(0.8, help="network interpolation weight of the GAN model"),
        niqe_params: Path | None = typer.Option(
            None, help="standard NIQE parameters (modelparameters.mat or .npz)"
        ),
        inception_weights: Path | None = typer.Option(
            None, help="Inception-v3 weights for FID (without: FID skipped)"
        ),
        unseen: bool = typer.Option(True, help="also evaluate on pydicom test DICOM files"),
        report: Path | None = typer.Option(
            None, help="report path (default: <card dir>/<name>.report.md)"
        ),
        figures_dir: Path | None = typer.Option(
            None, help="PNG / CSV folder (default: <card dir>/reports)"
        ),
        threads: int = typer.Option(1, help="ONNX Runtime threads per model"),
        baselines_dir: list[Path] = typer.Option(
            [], help="more folders to look for the baseline cards in (repeatable)"
        ),
        note: list[str] = typer.Option([], help="a note for the targets section (repeatable)"),
        update_card: bool = typer.Option(
            False, help="record the held-out summary in the cards' metrics.heldout"
        ),
    ) -> None:
        """Evaluate a model against interpolation and learned baselines; write the report."""
        from sr_engine.errors import SrEngineError

        extra = {
            role: p
            for role, p in (
                ("esrgan-gan", gan),
                ("srcnn", srcnn),
                ("srgan", srgan),
                ("esrgan-interp", interp),
            )
            if p is not None
        }
        for p in extra.values():
            if not p.is_file():
                raise typer.BadParameter(f"model card {p} not found")
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        try:
            path = run_evaluation(
                model,
                data_dir,
                [d.strip() for d in datasets.split(",") if d.strip()] or None,
                split,
                max_images,
                report,
                figures_dir,
                extra,
                alpha,
                niqe_params,
                inception_weights,
                unseen,
                threads,
                progress=sys.stderr.isatty(),
                command=_command_line(sys.argv[1:]),
                baselines_dirs=baselines_dir,
                notes=note,
                update_card=update_card,
            )
        except (SrEngineError, FileNotFoundError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"report: {path}")
