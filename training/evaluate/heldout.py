"""Evaluation of super-resolution models on the held-out split: per image and aggregated.

What is compared, on the same LR inputs (HR images degraded by the card's operator,
``area`` x``scale`` by default):

* interpolation baselines (:mod:`training.evaluate.baselines`): nearest, bicubic, Lanczos, wavelet;
* learned models as exported ONNX files run **through sr_engine the way the node runs them**
  (tiles, intensity model, data consistency on: "node"), and the same network with data
  consistency off ("raw"), so the effect of the consistency step is visible. Roles: SRCNN,
  SRGAN, ESRGAN-PSNR, ESRGAN-GAN and the network-interpolated model.

Metrics (:mod:`training.evaluate.metrics`) are computed in the network's [0, 1] intensity space of
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

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sr_engine.consistency import degrade as engine_degrade
from training.evaluate import baselines
from training.evaluate.metrics import NiqeModel, mse, niqe, psnr, ssim

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


def degrade(x: np.ndarray, scale: int, operator: str = "area") -> np.ndarray:
    """The held-out LR of ``x`` (float64): the engine's operator, which training also uses;
    ``blur_noise`` with the blur it was trained with (the engine enforces only its area part)."""
    if operator != "blur_noise":
        return engine_degrade(x, scale, operator)
    from training.data.degradations import degrade_np

    return degrade_np(x, operator, scale).astype(np.float64)


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

    ``features`` (e.g. :class:`training.evaluate.fid.InceptionFeatures`) maps images to feature
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
