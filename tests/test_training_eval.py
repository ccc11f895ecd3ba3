"""Evaluation: metrics against closed forms, baselines, statistics, the engine path and the
report, on tiny synthetic images and the fixed ONNX test graph (no training, no downloads)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from sr_engine.consistency import area_down
from training.evaluate import baselines
from training.evaluate.cli import register_evaluate
from training.evaluate.heldout import (
    EngineRunner,
    Sample,
    engine_methods,
    evaluate,
    interpolate_onnx,
    interpolation_methods,
)
from training.evaluate.metrics import (
    NiqeModel,
    downscale_half,
    fit_niqe_model,
    mse,
    niqe,
    psnr,
    ssim,
)
from training.evaluate.report import results_table, write_report
from training.evaluate.stats import check_targets, mean_ci, paired_wilcoxon, summarize


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


def smooth_image(seed: int, shape=(96, 96), sigma: float = 3.0) -> np.ndarray:
    """Band-limited random texture in [0, 1] with a bright disc: 'anatomy' with edges."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    x = (x - x.min()) / (x.max() - x.min())
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disc = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (shape[0] / 4) ** 2
    return np.clip(0.6 * x + 0.3 * ndimage.gaussian_filter(disc * 1.0, 1.0), 0, 1)


# -- full-reference metrics --------------------------------------------------------------


def test_psnr_and_mse_closed_form():
    t = np.zeros((16, 16))
    p = np.full((16, 16), 0.1)
    assert mse(p, t) == pytest.approx(0.01)
    assert psnr(p, t, data_range=1.0) == pytest.approx(20.0)
    # same error on a 12-bit scale: 10 log10(4095^2 / (0.1*4095)^2) = 20 dB
    assert psnr(p * 4095, t, data_range=4095) == pytest.approx(20.0)
    assert psnr(p, t, data_range=255) == pytest.approx(20 + 20 * math.log10(255))
    assert psnr(t, t, 1.0) == math.inf
    # the border crop really drops the border
    q = t.copy()
    q[0, :] = 1.0
    assert psnr(q, t, 1.0, crop_border=1) == math.inf
    with pytest.raises(ValueError):
        psnr(p, t, data_range=0)
    with pytest.raises(ValueError):
        psnr(p, t[:8], 1.0)


def test_ssim_identity_offset_closed_form_and_noise():
    x = smooth_image(0)
    assert ssim(x, x, 1.0) == pytest.approx(1.0)
    a, c = 0.4, 0.1  # constant images: only the luminance term, exactly
    c1 = (0.01 * 1.0) ** 2
    expect = (2 * a * (a + c) + c1) / (a * a + (a + c) ** 2 + c1)
    assert ssim(np.full((32, 32), a + c), np.full((32, 32), a), 1.0) == pytest.approx(expect)
    noisy = x + 0.05 * np.random.default_rng(1).standard_normal(x.shape)
    s = ssim(noisy, x, 1.0)
    assert 0 < s < 0.95
    assert ssim(x, noisy, 1.0) == pytest.approx(s)  # symmetric
    assert ssim(x + 0.02 * np.random.default_rng(2).standard_normal(x.shape), x, 1.0) > s


# -- NIQE ----------------------------------------------------------------------------------


def test_downscale_half_is_matlab_like():
    assert np.allclose(downscale_half(np.full((8, 8), 3.0)), 3.0)
    ramp = np.tile(np.arange(32.0), (32, 1))
    out = downscale_half(ramp)
    # a symmetric kernel centred at input 2i + 0.5 reproduces a linear ramp (interior)
    assert np.allclose(out[:, 2:-2], (2 * np.arange(16) + 0.5)[2:-2])


def test_niqe_fitted_model_ranks_noise_and_blur_worse(tmp_path):
    model = fit_niqe_model([smooth_image(s, (128, 128), 1.5) for s in range(6)], block_size=32)
    assert model.mu.shape == (36,) and model.cov.shape == (36, 36) and model.n_blocks > 10
    clean = smooth_image(10, (128, 128), 1.5)
    noisy = np.clip(clean + 0.08 * np.random.default_rng(3).standard_normal(clean.shape), 0, 1)
    blurred = ndimage.gaussian_filter(clean, 2.0)
    q_clean = niqe(clean, model)
    assert q_clean < niqe(noisy, model)
    assert q_clean < niqe(blurred, model)
    assert math.isnan(niqe(np.zeros((64, 64)), model))  # flat: no usable block
    # save/load round trip and the MATLAB release's .mat field names
    model.save(tmp_path / "m.npz")
    back = NiqeModel.load(tmp_path / "m.npz")
    assert back.block_size == 32 and np.allclose(back.cov, model.cov)
    from scipy.io import savemat

    savemat(
        tmp_path / "modelparameters.mat",
        {"mu_prisparam": model.mu[None], "cov_prisparam": model.cov},
    )
    std = NiqeModel.load(tmp_path / "modelparameters.mat")
    assert std.block_size == 96 and np.allclose(std.mu, model.mu)
    with pytest.raises(FileNotFoundError):
        NiqeModel.load(tmp_path / "missing.mat")


# -- baselines -------------------------------------------------------------------------


def test_interpolators_shapes_and_exactness():
    torch = pytest.importorskip("torch")
    lr = np.random.default_rng(0).random((12, 17))
    for name in ("nearest", "bicubic", "lanczos", "wavelet"):
        assert baselines.upscale(lr, 2, name).shape == (24, 34)
    assert baselines.upscale(lr, 4, "wavelet").shape == (48, 68)
    # our resampler with PyTorch's a = -0.75 equals torch's bicubic exactly
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(lr)[None, None], scale_factor=2, mode="bicubic", align_corners=False
    )[0, 0].numpy()
    assert np.allclose(baselines.resize(lr, (24, 34), "bicubic-0.75"), ref, atol=1e-12)
    # interpolation of a constant is that constant; nearest repeats pixels
    assert np.allclose(baselines.lanczos(np.full((6, 6), 0.3), 2), 0.3)
    assert np.array_equal(baselines.nearest(lr, 2)[::2, ::2], lr)
    # wavelet interpolation is consistent with the area degradation, bicubic is not
    for s in (2, 4):
        up = baselines.wavelet(lr, s)
        assert np.allclose(area_down(up, s), lr, atol=1e-12)
    assert not np.allclose(area_down(baselines.bicubic(lr, 2), 2), lr, atol=1e-3)
    with pytest.raises(ValueError):
        baselines.upscale(lr, 2, "magic")


# -- statistics ----------------------------------------------------------------------------


def test_mean_ci_closed_form():
    m, h = mean_ci([1, 2, 3, 4, 5])
    assert m == 3.0
    assert h == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert math.isnan(mean_ci([1.0])[1])


def test_wilcoxon_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(0)
    a = rng.normal(30, 2, 30)
    d, p = paired_wilcoxon(a + 0.5 + rng.normal(0, 0.2, 30), a)
    assert p < 1e-4 and d == pytest.approx(0.5, abs=0.15)
    _, p0 = paired_wilcoxon(a + rng.normal(0, 0.2, 30), a)
    assert p0 > 0.05
    assert paired_wilcoxon(a, a) == (0.0, 1.0)


# -- the engine path, targets and the report ----------------------------------------------


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    """Two exported 'models' (the fixed test graph; the second with another kernel)."""
    import onnx
    from onnx import numpy_helper

    from sr_engine.model_card import load_card, sha256_of
    from tests.onnx_models import write_test_model

    d = tmp_path_factory.mktemp("models")
    intensity = {"model": "percentile", "percentiles": [0.0, 99.8]}
    psnr_card = write_test_model(d, "mr-x2", intensity=intensity, modalities=["MR"])
    gan_card = write_test_model(d, "mr-x2-gan", intensity=intensity, modalities=["MR"])
    m = onnx.load(d / "mr-x2-gan.onnx")
    for t in m.graph.initializer:
        if t.name == "kernel":
            k = numpy_helper.to_array(t).copy()
            k[0, 0, 1, 1] += 0.2
            t.CopyFrom(numpy_helper.from_array(k, "kernel"))
    onnx.save(m, d / "mr-x2-gan.onnx")
    card = load_card(gan_card, verify=False)
    gan_card.write_text(
        card.model_copy(update={"sha256": sha256_of(d / "mr-x2-gan.onnx")}).to_json()
    )
    return d, psnr_card, gan_card


def test_interpolate_onnx_averages_weights(cards, tmp_path):
    import onnx
    from onnx import numpy_helper

    _, p, g = cards

    def kernel(path: Path) -> np.ndarray:
        m = onnx.load(path)
        return next(numpy_helper.to_array(t) for t in m.graph.initializer if t.name == "kernel")

    out = interpolate_onnx(p, g, 0.25, tmp_path)
    kp, kg = kernel(p.with_suffix(".onnx")), kernel(g.with_suffix(".onnx"))
    assert np.allclose(kernel(out.with_suffix(".onnx")), 0.75 * kp + 0.25 * kg)
    assert "mr-x2-interp" in out.read_text()


def test_engine_runner_round_trip_and_ct_encoding(cards, tmp_path):
    from tests.onnx_models import write_test_model

    _, p, _ = cards
    r = EngineRunner(p)
    x = smooth_image(1, (32, 32))
    stored, meta = r.encode(x, "MR")
    assert stored.dtype == np.uint16 and np.abs(r.decode(stored) - x).max() < 1e-4
    ct = EngineRunner(
        write_test_model(tmp_path, "ct-x2", intensity={"model": "ct_hu", "window": [-1000, 1000]})
    )
    s, m = ct.encode(np.array([[0.0, 0.5, 1.0]]), "CT")
    assert s.tolist() == [[-1000, 0, 1000]] and m.pixel_representation == 1
    sr, dc = r(area_down(x, 2), "MR", True)
    assert sr.shape == x.shape and dc < 1e-3  # node output reproduces its input


@pytest.mark.slow
def test_evaluate_report_and_targets(cards, tmp_path):
    _, p, g = cards
    samples = [(smooth_image(s, (64, 72)), {"id": f"syn{s}", "modality": "MR"}) for s in range(6)]
    methods = interpolation_methods(2)
    methods += engine_methods(EngineRunner(p), "ESRGAN-PSNR", "esrgan-psnr")
    methods += engine_methods(EngineRunner(g), "ESRGAN-GAN", "esrgan-gan")
    nm = fit_niqe_model([smooth_image(s, (64, 64)) for s in range(20, 26)], block_size=32)
    ev = evaluate(samples, methods, scale=2, niqe_model=nm, keep_examples=1)
    assert len([r for r in ev.records if r["method"] != "HR"]) == 6 * len(methods)
    rows = {r["method"]: r for r in summarize(ev)}
    # sanity: bicubic beats nearest on every image; node output is data-consistent
    assert rows["bicubic"]["psnr"][0] > rows["nearest"]["psnr"][0]
    assert np.all(ev.values("bicubic", "psnr") > ev.values("nearest", "psnr"))
    assert rows["ESRGAN-PSNR node"]["dc_rmse"][0] < 1e-3 < rows["ESRGAN-PSNR raw"]["dc_rmse"][0]
    assert 20 < rows["ESRGAN-PSNR node"]["psnr"][0] < 60
    assert 0 < rows["ESRGAN-PSNR node"]["ssim"][0] <= 1
    assert math.isnan(rows["bicubic"]["psnr_vs_ref"][1])
    assert rows["nearest"]["psnr_vs_ref"][0] < 0
    targets = {t["target"]: t for t in check_targets(ev, "mr-x2")}
    t = targets["ESRGAN-PSNR >= bicubic + 2.5 dB"]
    gain = rows["ESRGAN-PSNR node"]["psnr"][0] - rows["bicubic"]["psnr"][0]
    assert t["met"] == (gain >= 2.5) and t["short_by"] == pytest.approx(max(0, 2.5 - gain))
    assert targets["ESRGAN-PSNR >= SRCNN + 0.5 dB"]["met"] is None  # not given: not evaluated
    assert "GAN PSNR >= bicubic" in targets

    report = write_report(
        ev,
        "mr-x2",
        tmp_path / "mr-x2.report.md",
        tmp_path / "reports",
        {"command": "`test`"},
        unseen=None,
    )
    text = report.read_text()
    assert "| bicubic |" in text and "data range 1.0" in text and "Wilcoxon" in text
    assert ("**met**" in text) or ("**missed**" in text)
    pngs = sorted((tmp_path / "reports").glob("*.png"))
    assert {q.name for q in pngs} >= {"mr-x2.psnr.png", "mr-x2.crop1.png", "mr-x2.niqe.png"}
    assert sum(q.stat().st_size for q in pngs) < 400_000
    assert all(f"]({'reports/' + q.name})" in text for q in pngs)


def test_samples_interface_accepts_pairs():
    ev = evaluate(
        [(smooth_image(0, (32, 32)), {"id": "a"}), Sample(smooth_image(1, (33, 31)), "b")],
        interpolation_methods(2, ("bicubic",)),
        keep_examples=0,
    )
    assert [r["image"] for r in ev.records] == ["a", "b"]


def test_cli_evaluate_end_to_end(cards, tmp_path):
    """`srnode train evaluate` on a tiny prepared dataset, without the unseen DICOM part."""
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from training.data.intensity import StoredMeta
    from training.data.prepare import write_prepared
    from training.data.readers import Volume

    vol = np.stack([smooth_image(s, (48, 48)) for s in range(40)])
    vol = np.rint(vol * 4000).astype(np.uint16)
    data = tmp_path / "data"
    slabs = {"train": [(0, 24)], "val": [(26, 30)], "test": [(32, 40)]}
    write_prepared(data, "syn", Volume(vol, (1.0, 1.0, 1.0), StoredMeta("MR", 12), "s1"), slabs)
    app = typer.Typer()
    register_evaluate(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer's sub-command layout
        pass

    import shutil

    from sr_engine.model_card import load_card

    models = tmp_path / "models"
    shutil.copytree(cards[0], models)
    p = models / "mr-x2.json"
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(p),
            "--data-dir",
            str(data),
            "--datasets",
            "syn",
            "--update-card",
            "--max-images",
            "4",
            "--no-unseen",
            "--report",
            str(out / "r.md"),
            "--figures-dir",
            str(out / "fig"),
        ],
    )
    assert res.exit_code == 0, res.output
    text = (out / "r.md").read_text()
    assert "ESRGAN-GAN node" in text and "ESRGAN-interp node" in text  # sibling found, interp built
    assert "FID**: skipped" in text
    held = load_card(p, verify=True).metrics["heldout"]  # weights untouched, sha256 still valid
    assert held["n_images"] == 4 and held["psnr_db"] > held["bicubic_psnr_db"] - 5
    assert "heldout" in load_card(models / "mr-x2-gan.json").metrics
    bad = CliRunner().invoke(
        app, ["evaluate", str(tmp_path / "nope.json"), "--data-dir", str(data)]
    )
    assert bad.exit_code == 2 and "not found" in bad.output


# -- FID ---------------------------------------------------------------------------------


def test_frechet_distance_closed_form():
    from training.evaluate.fid import fid_from_features, frechet_distance

    mu1, mu2 = np.array([0.0, 1.0]), np.array([1.0, 3.0])
    s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 9.0])
    # |mu diff|^2 + sum(s1 + s2 - 2 sqrt(s1 s2)) = 5 + (1 + 4 - 4) + (4 + 9 - 12) = 7
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(7.0)
    f = np.random.default_rng(0).standard_normal((50, 3))
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-6)
    assert fid_from_features(f + 2.0, f) == pytest.approx(12.0, rel=1e-6)


@pytest.mark.slow
def test_inception_features_from_a_local_file(tmp_path):
    torch = pytest.importorskip("torch")
    from training.evaluate.fid import InceptionFeatures, InceptionV3Pool

    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        InceptionFeatures(tmp_path / "none.pth")
    torch.manual_seed(0)
    sd = InceptionV3Pool().state_dict()
    sd["fc.weight"] = torch.zeros(1000, 2048)  # torchvision files carry the classifier too
    torch.save(sd, tmp_path / "inception.pth")
    feats = InceptionFeatures(tmp_path / "inception.pth")
    f = feats([smooth_image(0, (40, 40)), smooth_image(1, (64, 48))])
    assert f.shape == (2, 2048) and np.isfinite(f).all() and not np.allclose(f[0], f[1])
    torch.save({"Conv2d_1a_3x3.conv.weight": sd["Conv2d_1a_3x3.conv.weight"]}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="missing"):
        InceptionFeatures(tmp_path / "x.pth")


def test_evaluate_reports_fid_with_a_feature_extractor(tmp_path):
    def stats(images):  # a cheap stand-in for Inception: mean, std, gradient energy
        return np.array(
            [[im.mean(), im.std(), np.abs(np.diff(im, axis=0)).mean()] for im in images]
        )

    samples = [(smooth_image(s, (48, 48)), {"id": f"s{s}"}) for s in range(5)]
    ev = evaluate(samples, interpolation_methods(2), features=stats, keep_examples=0)
    rows = {r["method"]: r for r in summarize(ev)}
    assert rows["nearest"]["fid"] > 0 and np.isfinite(rows["bicubic"]["fid"])
    assert "| FID |" in results_table(list(rows.values()), False, False, True)


def test_find_role_cards_by_name(cards, tmp_path):
    from tests.onnx_models import write_test_model
    from training.evaluate.heldout import find_role_cards

    _, p, g = cards
    write_test_model(tmp_path, "srcnn-mr-x2")
    write_test_model(tmp_path, "srresnet-mr-x2-gan")
    found = find_role_cards(p, [tmp_path])
    assert found["esrgan-psnr"] == p and found["esrgan-gan"] == g
    assert found["srcnn"].name == "srcnn-mr-x2.json"
    assert found["srgan"].name == "srresnet-mr-x2-gan.json"
    assert "esrgan-interp" not in found


def test_aggd_fit_recovers_known_shapes():
    from training.evaluate.metrics import _aggd

    rng = np.random.default_rng(0)
    gauss = rng.normal(0, 0.5, (1, 200_000))
    a, bl, br = _aggd(gauss)
    assert a[0] == pytest.approx(2.0, abs=0.05)  # Gaussian: shape 2, scale sigma * sqrt(2)
    assert bl[0] == pytest.approx(0.5 * math.sqrt(2), rel=0.02) and br[0] == pytest.approx(
        bl[0], rel=0.02
    )
    lap = rng.laplace(0, 1.0, (1, 200_000))
    assert _aggd(lap)[0][0] == pytest.approx(1.0, abs=0.05)  # Laplacian: shape 1
    skew = np.where(gauss < 0, gauss, 2 * gauss)  # right side twice as wide
    _, bl, br = _aggd(skew)
    assert br[0] / bl[0] == pytest.approx(2.0, rel=0.05)
    assert np.isnan(_aggd(np.ones((1, 10)))[0][0])  # no negative values: undefined


def test_command_line_shortens_notes():
    from training.evaluate.cli import _command_line

    line = _command_line(["train", "evaluate", "ct-x2", "--note", "long text", "--note=x"])
    assert line == "srnode train evaluate ct-x2 --note … --note …"
    assert _command_line(["train", "evaluate", "a b"]) == "srnode train evaluate 'a b'"


@pytest.mark.slow
def test_smoke_train_export_evaluate(tmp_path):
    """CI smoke: a few iterations of both stages of a tiny RRDBNet, export, evaluate."""
    pytest.importorskip("onnxruntime")
    from training.data.intensity import StoredMeta
    from training.data.prepare import write_prepared
    from training.data.readers import Volume
    from training.data.split import slab_split
    from training.evaluate.cli import run_evaluation
    from training.export.onnx import export_all
    from training.fit.config import TrainConfig
    from training.fit.loop import fit

    vol = np.stack([smooth_image(s, (48, 48)) for s in range(24)])
    vol = np.rint(vol * 4000).astype(np.uint16)
    data = tmp_path / "data"
    write_prepared(data, "syn-mr", Volume(vol, (1.0, 1.0, 1.0), StoredMeta("MR", 12), "s1"),
                   slab_split(24, gap=1), seed=0)  # fmt: skip
    common = dict(
        name="tiny", data_dir=str(data), out_dir=str(tmp_path / "runs"), arch="RRDBNet",
        arch_params={"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "global_skip": "bilinear"},
        intensity={"model": "percentile", "percentiles": [0.0, 99.8]}, patch=32, batch=4,
        val_every=10, log_every=5, ckpt_every=10, threads=1, device="cpu", progress=False,
        max_val_images=2, lr=1e-3,
    )  # fmt: skip
    g_psnr = fit(TrainConfig(stage="psnr", iters=10, **common))
    g_gan = fit(TrainConfig(stage="gan", iters=2, init_from=str(g_psnr), d_num_feat=8, **common))
    models = tmp_path / "models"
    export_all(g_psnr, models, "tiny-x2", ["MR"])
    export_all(g_gan, models, "tiny-x2-gan", ["MR"])
    report = run_evaluation(models / "tiny-x2.json", data, max_images=4, unseen=False,
                            progress=False, command="smoke")  # fmt: skip
    text = report.read_text()
    assert "| ESRGAN-GAN node |" in text and "| ESRGAN-interp node |" in text
    csv_rows = (models / "reports" / "tiny-x2.per_image.csv").read_text().splitlines()
    vals = {}
    for line in csv_rows[1:]:
        f = line.split(",")
        if f[1] in ("bicubic", "ESRGAN-PSNR node", "ESRGAN-PSNR raw"):
            vals.setdefault(f[1], []).append(float(f[3]))
    assert all(20 < v < 80 for vs in vals.values() for v in vs)  # sane PSNRs, dB
    # a network that starts from bilinear and is projected onto the LR image is not far
    # below bicubic even after 10 iterations
    assert np.mean(vals["ESRGAN-PSNR node"]) > np.mean(vals["bicubic"]) - 3
