"""The held-out evaluation's report (markdown, plots, crops) and its small unseen-DICOM check."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sr_engine.consistency import area_down
from training.evaluate import baselines
from training.evaluate.heldout import EngineRunner, Evaluation
from training.evaluate.metrics import psnr, ssim
from training.evaluate.stats import check_targets, mean_ci, paired_wilcoxon, summarize

log = logging.getLogger(__name__)


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
    from sr_engine.pixels import read_image

    s = runner.card.scale
    out = []
    for mod in modalities:
        for name in (files or UNSEEN_FILES).get(mod, []):
            path = _testdata_path(name)
            if path is None:
                out.append({"file": name, "modality": mod, "skipped": "not installed"})
                continue
            try:
                arr, meta = read_image(pydicom.dcmread(path))
            except UnsupportedInput as e:
                out.append({"file": name, "modality": mod, "skipped": str(e)})
                continue
            if arr.ndim == 3:
                arr = arr[len(arr) // 2]
            h, w = arr.shape
            ch, cw = min(h, max_edge), min(w, max_edge)
            ch, cw = ch - ch % s, cw - cw % s
            top, left = (h - ch) // 2, (w - cw) // 2
            hr = arr[top : top + ch, left : left + cw]
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
