"""A run's log: ``log.csv`` (losses, learning rate, validation PSNR), the progress bar's
summary, and ``curves.png`` drawn from the CSV at the end."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import torch

CSV_FIELDS = [
    "iter", "stage", "lr", "l_pix", "l_percep", "l_fm", "l_gan", "l_d", "d_real", "d_fake",
    "val_psnr", "val_psnr_bicubic", "elapsed_s",
]  # fmt: skip


def plot_curves(csv_path: Path, png_path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return

    def col(name: str) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for r in rows:
            if r.get(name) not in (None, ""):
                xs.append(int(r["iter"]))
                ys.append(float(r[name]))
        return xs, ys

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("l_pix", "l_percep", "l_fm", "l_gan", "l_d"):
        xs, ys = col(name)
        if xs:
            ax1.plot(xs, ys, label=name, lw=1)
    ax1.set_yscale("log")
    ax1.set_xlabel("iteration")
    ax1.set_title("training losses (weighted)")
    ax1.legend(fontsize=8)
    xs, ys = col("val_psnr")
    if xs:
        ax2.plot(xs, ys, "o-", label="model (EMA)", ms=3)
        xb, yb = col("val_psnr_bicubic")
        ax2.plot(xb, yb, "--", label="bicubic")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("PSNR (dB, data range 1)")
    ax2.set_title("validation PSNR")
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


class RunLog:
    """``log.csv`` of one run, appended to when the run resumes: the losses of the
    iterations since the last row, averaged, and the validation PSNR when there is one."""

    def __init__(self, path: Path, keep: bool) -> None:
        if not keep and path.exists():
            path.unlink()
        new = not path.exists()
        self.path = path
        self._f = open(path, "a", newline="")  # noqa: SIM115 - open for the whole run
        self._writer = csv.DictWriter(self._f, fieldnames=CSV_FIELDS)
        if new:
            self._writer.writeheader()
        self._acc: dict[str, list[torch.Tensor]] = {}
        self.last_row: dict[str, Any] = {}

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for k, v in losses.items():
            self._acc.setdefault(k, []).append(v)

    def take_means(self, it: int) -> dict[str, float]:
        """The mean of each loss since the last call; a non-finite one stops the run."""
        means = {k: float(torch.stack(v).mean()) for k, v in self._acc.items()}
        self._acc = {}
        if not all(math.isfinite(v) for v in means.values()):
            raise FloatingPointError(f"non-finite loss before iteration {it}: {means}")
        return means

    def write(
        self,
        it: int,
        stage: str,
        elapsed_s: float,
        lr: float | None = None,
        means: dict[str, float] | None = None,
        val: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {"iter": it, "stage": stage, "elapsed_s": f"{elapsed_s:.1f}"}
        if lr is not None:
            row["lr"] = f"{lr:.3g}"
        row.update({k: f"{v:.5g}" for k, v in (means or {}).items()})
        if val is not None:
            row["val_psnr"], row["val_psnr_bicubic"] = f"{val[0]:.3f}", f"{val[1]:.3f}"
        self._writer.writerow(row)
        self._f.flush()
        self.last_row = row
        return row

    def close(self) -> None:
        self._f.close()


def postfix(row: dict[str, Any], rate: float, val: tuple[float, float] | None) -> dict[str, str]:
    """What the progress bar shows after a log row: losses, iterations/s, validation."""
    post = {k: row[k] for k in ("l_pix", "l_fm", "l_percep", "l_gan", "l_d") if k in row}
    if rate:
        post["it/s"] = f"{rate:.1f}"
    if val:
        post["val"] = f"{val[0]:.2f}/{val[1]:.2f}bic"
    return post
