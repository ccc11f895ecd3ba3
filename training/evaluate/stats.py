"""Statistics of an evaluation: confidence intervals, paired tests, the issue's targets."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from training.evaluate.heldout import (
    GAN_NIQE_SHARE,
    PSNR_TARGETS,
    SRCNN_MARGIN,
    Evaluation,
    model_family,
)

log = logging.getLogger(__name__)


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
            from training.evaluate.fid import fid_from_features

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
