"""The unseen benchmark's report: markdown tables, per-image JSON, before/after crops."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluate.unseen import UnseenImage, fmt_db


def summary_table(summary: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| modality | method | n | mean PSNR (dB) | gain over bicubic: mean | median | min "
        "| mean SSIM | below the floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        below = "–" if s["below_floor"] is None else str(s["below_floor"])
        lines.append(
            f"| {s['group']} | {s['method']} | {s['n']} | {s['psnr_mean']:.2f} "
            f"| {fmt_db(s['gain_mean'])} | {fmt_db(s['gain_median'])} | {fmt_db(s['gain_min'])} "
            f"| {s['ssim_mean']:.4f} | {below} |"
        )
    return lines


def per_image_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    methods: list[str] = []
    for r in rows:
        methods += [m for m in r["methods"] if m not in methods and m != "bicubic"]
    head = "| image | modality | size | bicubic PSNR | " + " | ".join(methods) + " |"
    lines = [head, "|" + "---|" * (4 + len(methods))]
    for r in rows:
        b = r["methods"]["bicubic"]["psnr"]
        cells = []
        for m in methods:
            if m not in r["methods"]:
                cells.append("")
                continue
            g = r["methods"][m]["psnr"] - b
            below = m not in ("nearest", "floor") and (
                r["methods"][m]["psnr"] < r["methods"]["floor"]["psnr"]
            )
            cells.append(f"{fmt_db(g)}{' ⚠' if below else ''}")
        name = r["image"] + (f" (= {', '.join(r['aliases'])})" if r["aliases"] else "")
        if r.get("note"):
            name += f" ({r['note']})"
        lines.append(
            f"| {name} | {r['modality']} | {r['shape']} | {b:.2f} | " + " | ".join(cells) + " |"
        )
    return lines


def _display(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((a.astype(np.float64) - lo) / max(hi - lo, 1e-9), 0, 1)


def write_crops(
    img: UnseenImage,
    outs: dict[str, np.ndarray],
    methods: Sequence[str],
    path: Path,
    size: int = 96,
) -> Path:
    """HR, bicubic, floor and the models on the crop where the first model differs most from
    the floor (absolute error difference, smoothed), each with its PSNR on the crop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import ndimage

    hr = img.hr.astype(np.float64)
    focus = next((m for m in methods if m in outs), "floor")
    diff = np.abs(outs["floor"] - hr) - np.abs(outs[focus] - hr)
    score = ndimage.uniform_filter(np.abs(diff), size)
    h, w = hr.shape
    size = min(size, h, w)
    y, x = np.unravel_index(np.argmax(score), score.shape)
    y0 = int(np.clip(y - size // 2, 0, h - size))
    x0 = int(np.clip(x - size // 2, 0, w - size))
    crop = (slice(y0, y0 + size), slice(x0, x0 + size))
    lo, hi = np.percentile(hr[crop], [0.5, 99.5])
    show = ["HR", "nearest", "bicubic", "floor", *[m for m in methods if m in outs]]
    fig, axes = plt.subplots(1, len(show), figsize=(2.3 * len(show), 2.6))
    for ax, name in zip(np.atleast_1d(axes), show, strict=True):
        a = hr if name == "HR" else outs[name]
        ax.imshow(_display(a[crop], lo, hi), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        title = name
        if name != "HR":
            err = np.sqrt(np.mean((a[crop] - hr[crop]) ** 2))
            title += f"\nRMSE {err:.1f}"
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{img.name} ({img.modality}) crop at ({y0}, {x0})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(
    out_dir: Path,
    rows: Sequence[dict[str, Any]],
    summary: Sequence[dict[str, Any]],
    noise: Sequence[dict[str, Any]],
    images: Sequence[UnseenImage],
    outputs: dict[str, dict[str, np.ndarray]],
    models: Sequence[str],
    skipped: Sequence[dict[str, str]],
    command: str,
    seconds: float,
    sections: Sequence[Sequence[str]] = (),
    extra: dict[str, Any] | None = None,
) -> Path:
    """``sections``: more markdown (lines each), after the noise tables; ``extra``: more
    keys of unseen.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "unseen.json").write_text(
        json.dumps(
            {"rows": list(rows), "summary": list(summary), "noise": list(noise)} | (extra or {}),
            indent=1,
            default=float,
        )
        + "\n"  # fmt: skip
    )
    crops = []
    by_name = {i.name: i for i in images}
    for r in rows:
        name = r["image"]
        if name in outputs:
            stem = name.replace("[", "_").replace("]", "").replace(".dcm", "")
            p = write_crops(by_name[name], outputs[name], models, out_dir / f"crop_{stem}.png")
            crops.append((name, p.name))
    lines = [
        "# Unseen benchmark",
        "",
        "Real DICOM images no model was trained on (pydicom's test files and pydicom-data: "
        "every CT, MR, CR/DX/MG image with pixel data of at least 128², decompressed; "
        "byte-identical pixel arrays count once). Input: the 2x2 block mean of the stored "
        "image (area x2), rounded to the stored type. PSNR over the whole image with the "
        "data range max(HR) − min(HR) of each image; SSIM with the same range. bicubic = "
        "order-3 spline; floor = the node's own fallback (bicubic, padding kept, then the "
        "exact area projection): a frame the self-check gives the floor scores it exactly. "
        "Models run through `sr_engine.Engine` "
        "with data consistency, as the node runs them, on the modalities their card serves.",
        "",
        f"Command: `{command}`  ",
        f"CPU: {platform.processor() or platform.machine()}; wall time {seconds:.0f} s.",
        "",
        "## Per modality",
        "",
        *summary_table(summary),
        "",
        "## Per image (PSNR gain over bicubic, dB; ⚠ = below the floor)",
        "",
        *per_image_table(rows),
        "",
    ]
    if noise:
        lines += [
            "## Noise in flat 32x32 patches of real CT (HU)",
            "",
            "The four flattest 32x32 patches inside the body of each CT. *original*: the "
            "stored image; *x2 of the downsampled*: the model's x2 result of the area-"
            "downsampled image (the benchmark's output), same patch: the criterion is that it "
            "is no noisier than the original. *node on the original*: the x2 result of the "
            "original itself (64x64 pixels over the same area); with data consistency its "
            "2x2 block means are the original pixels, so its variance is the original's plus "
            "the variance the network puts inside the blocks.",
            "",
            "| image | patch (y, x) | mean HU | std original | std x2 of the downsampled "
            "| std node on the original |",
            "|---|---|---|---|---|---|",
        ]
        for n in noise:
            lines.append(
                f"| {n['image']} | ({n['y']}, {n['x']}) | {n['mean_original']:.0f} "
                f"| {n['std_original']:.1f} | {n['std_from_lr']:.1f} | {n['std_derived']:.1f} |"
            )
        med = {k: float(np.median([n[k] for n in noise]))
               for k in ("std_original", "std_from_lr", "std_derived")}  # fmt: skip
        worse = sum(n["std_from_lr"] > n["std_original"] for n in noise)
        lines += ["", f"Median std: original {med['std_original']:.2f} HU, x2 of the "
                      f"downsampled {med['std_from_lr']:.2f} HU ({worse} of {len(noise)} "
                      f"patches noisier than the original), node on the original "
                      f"{med['std_derived']:.2f} HU.", ""]  # fmt: skip
    for section in sections:
        lines += [*section, ""]
    if skipped:
        lines += ["## Left out", "", *[f"- {s['file']}: {s['reason']}" for s in skipped], ""]
    lines += ["## Crops", "", "Where the first model differs most from the floor.", ""]
    lines += [f"![{n}]({p})" for n, p in crops]
    path = out_dir / "unseen.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def add_to_card(
    card_path: Path, summary: Sequence[dict[str, Any]], label: str, report: str
) -> None:
    """Put a model's unseen-benchmark numbers into its card's metrics (schema-checked)."""
    from sr_engine.model_card import ModelCard

    doc = json.loads(Path(card_path).read_text())
    per = {
        s["group"]: {k: (round(v, 3) if isinstance(v, float) else v)
                     for k, v in s.items() if k not in ("group", "method")}
        for s in summary if s["method"] == label
    }  # fmt: skip
    floor = {s["group"]: round(s["gain_mean"], 3) for s in summary if s["method"] == "floor"}
    doc.setdefault("metrics", {})["unseen_benchmark"] = {
        "definition": "pydicom + pydicom-data CT/MR/CR images >= 128², area x2, PSNR range "
        "max-min of the original, gain over the order-3 spline; floor = bicubic + exact area "
        "projection",
        "report": report,
        "per_modality": per,
        "floor_gain_mean_db": floor,
    }
    ModelCard.model_validate(doc)
    Path(card_path).write_text(json.dumps(doc, indent=2) + "\n")
