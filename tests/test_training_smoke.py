"""CI smoke test of the training package: a few iterations of each stage on a tiny net
and tiny synthetic data, resume, network interpolation, ONNX export with parity, the card.

Full training never runs here. Assertions are about sane numbers, never timings.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from training.data.intensity import StoredMeta  # noqa: E402
from training.data.prepare import write_prepared  # noqa: E402
from training.data.readers import Volume  # noqa: E402
from training.data.split import slab_split  # noqa: E402
from training.fit.config import TrainConfig  # noqa: E402
from training.fit.generator import interpolate, load_generator  # noqa: E402
from training.fit.loop import fit  # noqa: E402

TINY = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "global_skip": "bilinear"}


def _phantom(n: int = 24, size: int = 48, seed: int = 0) -> np.ndarray:
    """A 12-bit CT-like phantom: head ellipse, skull ring, smooth texture (stored = HU+1024)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    vol = np.zeros((n, size, size), np.float64)
    for k in range(n):
        r = np.sqrt((xx / (0.42 - 0.003 * k)) ** 2 + (yy / 0.36) ** 2)
        img = np.where(r < 1, 1024 + 40 + 20 * np.sin(9 * xx + k / 3) * np.cos(7 * yy), 0)
        img = np.where((r > 0.85) & (r < 1), 1024 + 1200, img)
        vol[k] = img + rng.normal(0, 5, img.shape) * (r < 1)
    return np.clip(vol, 0, 4095).astype(np.uint16)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    vol = Volume(_phantom(), (1.5, 1.0, 1.0), StoredMeta("CT", 12, 0, 1.0, -1024.0), "phantom")
    write_prepared(d, "phantom-ct", vol, slab_split(vol.n_slices, gap=1), seed=0)
    return d


def _cfg(data_dir: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        name="tiny", data_dir=str(data_dir), out_dir=str(out), arch="RRDBNet", arch_params=TINY,
        intensity={"model": "ct_hu", "window": [-1024, 3071]}, patch=32, batch=4,
        val_every=10, log_every=5, ckpt_every=10, threads=1, device="cpu", progress=False,
        max_val_images=3, lr=1e-3,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_stages_resume_interpolate_export(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    # PSNR stage, then resume it for more iterations
    g_psnr = fit(_cfg(data_dir, out, stage="psnr", iters=20))
    rows = _rows(out / "tiny/psnr/log.csv")
    pix = [float(r["l_pix"]) for r in rows if r["l_pix"]]
    assert all(math.isfinite(v) and 0 <= v < 1 for v in pix)
    g_psnr = fit(_cfg(data_dir, out, stage="psnr", iters=30, resume=True))
    rows = _rows(out / "tiny/psnr/log.csv")
    assert int(rows[-1]["iter"]) == 30 and int(rows[0]["iter"]) == 5  # one log, continued
    model, info = load_generator(g_psnr)
    assert info["iters"] == 30 and info["stage"] == "psnr"
    # the network starts from bilinear interpolation: validation PSNR is sane at once
    assert 20 < info["val_psnr"] < 80 and 20 < info["val_psnr_bicubic"] < 80
    assert (out / "tiny/psnr/curves.png").stat().st_size > 1000

    # GAN stage from it, both discriminators
    for disc in ("vgg", "unet"):
        g_gan = fit(
            _cfg(data_dir, out, name=f"tiny-{disc}", stage="gan", iters=4, init_from=str(g_psnr),
                 discriminator=disc, d_num_feat=8, val_every=4, log_every=2)
        )  # fmt: skip
        r = _rows(out / f"tiny-{disc}/gan/log.csv")
        logged = [x for x in r if x["l_d"]]
        assert logged and all(
            math.isfinite(float(x[k])) for x in logged for k in ("l_d", "l_gan", "l_fm")
        )
        assert 0 < float(logged[-1]["l_d"]) < 5
    _, ginfo = load_generator(g_gan)
    assert math.isfinite(ginfo["val_psnr"])

    # network interpolation: alpha 0 is the PSNR network, 1 the GAN one
    m0, _ = load_generator(interpolate(g_psnr, g_gan, 0.0, tmp_path / "a0.pt"))
    m1, _ = load_generator(interpolate(g_psnr, g_gan, 1.0, tmp_path / "a1.pt"))
    mg, _ = load_generator(g_gan)
    x = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(m0(x), model(x)) and torch.allclose(m1(x), mg(x))
    with pytest.raises(ValueError):
        interpolate(g_psnr, g_gan, 1.5, tmp_path / "bad.pt")

    # export: ONNX parity at three sizes (odd ones too), held-out metrics, a valid card
    from training.export.onnx import export_all

    onnx_path, card_path, metrics = export_all(
        tmp_path / "a0.pt", tmp_path / "models", "tiny-x2", ["CT"], data_dir
    )
    assert all(d <= 1e-4 for d in metrics["onnx_parity_max_abs_diff"].values())
    assert set(metrics["onnx_parity_max_abs_diff"]) >= {"47x61"}
    assert metrics["n_images"] > 0 and 20 < metrics["psnr_model_db"] < 80
    sr_engine = pytest.importorskip("sr_engine")
    card = sr_engine.load_card(card_path)  # validates the schema and the sha256
    assert card.intensity.model == "ct_hu" and card.scale == 2
    assert card.architecture.name == "RRDBNet"
    assert card.training_data["interpolation"]["alpha"] == 0.0
    assert json.loads(card_path.read_text())["metrics"]["split"] == "test"
    assert card.license.startswith("Apache-2.0 weights")
    by_source = metrics["gain_over_bicubic_by_source"]
    assert sum(v["n_images"] for v in by_source.values()) == metrics["n_images"]

    # the next version of a bundled -gan model, its GAN stage started from a PSNR model
    from training.bundled import export_finetuned

    prev = {"name": "ct-x2-gan", "version": "1.0.0", "sha256": "0" * 64, "description": "d",
            "modalities": ["CT", "OT"],
            "training_data": {"history": [{"step": "old GAN stage"}], "datasets": []}}  # fmt: skip
    (tmp_path / "prev.json").write_text(json.dumps(prev))
    new = json.loads(
        export_finetuned("ct-x2-gan", g_gan, tmp_path / "prev.json", tmp_path / "v2", data_dir,
                         init_card=card_path).read_text()
    )  # fmt: skip
    assert new["version"] == "2.0.0" and new["name"] == "ct-x2-gan"
    assert new["modalities"] == ["CT", "OT"]  # the model it replaces serves them
    steps = new["training_data"]["history"]
    assert steps[-1]["step"].startswith("GAN stage from tiny-x2 1.0.0")
    assert "old GAN stage" not in [h["step"] for h in steps]  # the lineage is the PSNR model's
    assert "feature matching" in steps[-1]["losses"]


def test_srcnn_psnr_stage(data_dir: Path, tmp_path: Path) -> None:
    g = fit(_cfg(data_dir, tmp_path, name="srcnn", arch="SRCNN", arch_params={}, iters=5))
    _, info = load_generator(g)
    assert info["arch"] == "SRCNN" and math.isfinite(info["val_psnr"])


@pytest.mark.slow
def test_cli_imports_no_torch_and_lists_train() -> None:
    code = (
        "import sys\n"
        "from dicom_node.cli import app, _register_all\n"
        "_register_all()\n"
        "assert 'torch' not in sys.modules, 'torch imported by the CLI'\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['train', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "for c in ('prepare', 'fit', 'export', 'interpolate', 'bundled'):\n"
        "    assert c in r.output, c\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_bf16_channels_last_noise_and_time_checkpoints(data_dir: Path, tmp_path: Path) -> None:
    """The CPU recipe: bf16 autocast + channels_last, noisy inputs, a checkpoint at every
    iteration when ckpt_minutes is 0, warm start from a generator."""
    g0 = fit(_cfg(data_dir, tmp_path, name="a", iters=3))
    cfg = _cfg(data_dir, tmp_path, name="b", iters=4, amp="on", channels_last="on",
               noise_prob=1.0, noise_sigma=0.01, ckpt_every=1000, ckpt_minutes=0.0,
               init_from=str(g0))  # fmt: skip
    g = fit(cfg)
    _, info = load_generator(g)
    assert info["amp_bf16"] and info["channels_last"] and info["init_from"] == str(g0)
    assert math.isfinite(info["val_psnr"]) and 20 < info["val_psnr"] < 80
    ck = torch.load(tmp_path / "b/psnr/ckpt_last.pt", weights_only=False)
    assert ck["iter"] == 4


@pytest.mark.slow
def test_sigterm_asks_the_loop_to_stop_and_is_restored() -> None:
    """A real SIGTERM, in a child process: signalling the test process itself would hit every
    native thread pool earlier tests left in it."""
    import subprocess
    import sys

    code = (
        "import os, signal\n"
        "from training.fit.runtime import StopOnSignal\n"
        "before = signal.getsignal(signal.SIGTERM)\n"
        "stop = StopOnSignal()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "assert stop.requested, 'not requested'\n"
        "stop.restore()\n"
        "assert signal.getsignal(signal.SIGTERM) == before, 'not restored'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
