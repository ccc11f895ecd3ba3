"""Losses and discriminators: shapes, closed forms, weight loading, the ESRGAN weighting."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from training.archs.discriminator_unet_arch import UNetDiscriminatorSN  # noqa: E402
from training.archs.discriminator_vgg_arch import VGGStyleDiscriminator  # noqa: E402
from training.fit.losses import (  # noqa: E402
    ESRGAN_WEIGHTS,
    VGG19_LAYERS,
    FeatureMatchingLoss,
    L1Loss,
    MSELoss,
    PerceptualLoss,
    RelativisticGANLoss,
    build_esrgan_losses,
    build_loss,
    build_vgg19_features,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A random VGG19 in torchvision's state-dict layout (features.* plus a classifier)."""
    torch.manual_seed(0)
    feats = build_vgg19_features()
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(4, 4)
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(sd, path)
    return path


def test_vgg_discriminator_shapes_and_size_check():
    d = VGGStyleDiscriminator(num_in_ch=1, num_feat=8, input_size=64)
    logits, feats = d.forward_features(torch.rand(2, 1, 64, 64))
    assert logits.shape == (2, 1)
    assert len(feats) == 5 and feats[-1].shape == (2, 64, 2, 2)
    assert torch.equal(
        d(torch.zeros(1, 1, 64, 64)), d.forward_features(torch.zeros(1, 1, 64, 64))[0]
    )
    with pytest.raises(ValueError, match="64x64"):
        d(torch.rand(1, 1, 48, 48))
    assert VGGStyleDiscriminator().linear1.in_features == 512 * 4 * 4  # 128 input, 64 features


def test_unet_discriminator_per_pixel_any_size_spectral_norm():
    d = UNetDiscriminatorSN(num_in_ch=1, num_feat=8)
    for h, w in [(32, 32), (37, 29)]:
        logits, feats = d.forward_features(torch.rand(2, 1, h, w))
        assert logits.shape == (2, 1, h, w)
        assert len(feats) == 6
    assert hasattr(d.conv1, "weight_orig") and hasattr(d.conv8, "weight_orig")
    assert not hasattr(d.conv0, "weight_orig")
    no_skip = UNetDiscriminatorSN(num_feat=8, skip_connection=False)
    assert no_skip(torch.rand(1, 1, 16, 16)).shape == (1, 1, 16, 16)


def test_vgg19_layer_indices_match_torchvision():
    # torchvision: features[34] is conv5_4, [35] its ReLU, [36] the last pool; 16 convs
    assert VGG19_LAYERS[34] == "conv5_4" and VGG19_LAYERS[35] == "relu5_4"
    assert VGG19_LAYERS[0] == "conv1_1" and VGG19_LAYERS[4] == "pool1"
    assert len(VGG19_LAYERS) == 37
    assert sum(isinstance(m, torch.nn.Conv2d) for m in build_vgg19_features()) == 16


def test_perceptual_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        PerceptualLoss(tmp_path / "nope.pth")
    msg = str(e.value)
    assert "nope.pth" in msg and "\n" not in msg and "download" in msg
    with pytest.raises(FileNotFoundError):
        build_esrgan_losses(vgg_weights_path=tmp_path / "nope.pth")


def test_perceptual_rejects_wrong_state_dict(tmp_path):
    p = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, p)
    with pytest.raises(ValueError, match="missing"):
        PerceptualLoss(p)


def test_perceptual_loads_weights_grey_replication_and_gradient(vgg_file):
    loss = PerceptualLoss(vgg_file, layer="conv5_4", before_relu=True)
    assert isinstance(loss.vgg[-1], torch.nn.Conv2d) and len(loss.vgg) == 35
    saved = torch.load(vgg_file, weights_only=True)
    assert torch.equal(loss.vgg[34].weight, saved["features.34.weight"])
    assert all(not p.requires_grad for p in loss.vgg.parameters())

    torch.manual_seed(1)
    target = torch.rand(2, 1, 32, 32)
    assert loss(target, target).item() == 0.0
    pred = (target + 0.1 * torch.randn_like(target)).requires_grad_(True)
    val = loss(pred, target)
    assert val.item() > 0
    val.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    # one channel == the same image replicated to three
    same = loss(pred.detach().expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1))
    assert math.isclose(same.item(), val.item(), rel_tol=1e-5)
    after = PerceptualLoss(vgg_file, before_relu=False)
    assert isinstance(after.vgg[-1], torch.nn.ReLU)
    loss.train()
    assert not loss.vgg.training


def test_relativistic_gan_closed_form():
    gan = RelativisticGANLoss()
    a, b = 1.5, -0.5
    real, fake = torch.full((4, 1), a), torch.full((4, 1), b)
    # D: BCE(a-b, 1) and BCE(b-a, 0) both equal softplus(-(a-b))
    sp = math.log1p(math.exp(-(a - b)))
    assert math.isclose(gan.discriminator_loss(real, fake).item(), sp, rel_tol=1e-6)
    # G: BCE(a-b, 0) and BCE(b-a, 1) both equal softplus(a-b)
    assert math.isclose(
        gan.generator_loss(real, fake).item(), math.log1p(math.exp(a - b)), rel_tol=1e-6
    )
    assert math.isclose(
        RelativisticGANLoss(5e-3).generator_loss(real, fake).item(),
        5e-3 * math.log1p(math.exp(a - b)),
        rel_tol=1e-6,
    )


def test_relativistic_gan_gradients_point_the_right_way():
    gan = RelativisticGANLoss()
    real = torch.randn(8, 1, 4, 4, requires_grad=True)  # per-pixel logits (U-Net)
    fake = torch.randn(8, 1, 4, 4, requires_grad=True)
    gan.generator_loss(real, fake).backward()
    assert real.grad is None  # real detached for G
    assert fake.grad.sum() < 0  # G wants fake logits up
    real.grad = fake.grad = None
    gan.discriminator_loss(real, fake).backward()
    assert real.grad.sum() < 0 and fake.grad.sum() > 0


def test_feature_matching():
    fm = FeatureMatchingLoss()
    real = [torch.zeros(1, 2, 4, 4, requires_grad=True), torch.zeros(1, 3, 2, 2)]
    fake = [torch.full((1, 2, 4, 4), 0.5, requires_grad=True), torch.full((1, 3, 2, 2), -2.0)]
    val = fm(real, fake)
    assert math.isclose(val.item(), (0.5 + 2.0) / 2)
    val.backward()
    assert real[0].grad is None and fake[0].grad is not None
    assert fm(real, real).item() == 0.0
    with pytest.raises(ValueError):
        fm(real, fake[:1])


def test_registry_and_esrgan_weights():
    assert isinstance(build_loss("l1"), L1Loss)
    assert isinstance(build_loss("MSE", loss_weight=2.0), MSELoss)
    assert isinstance(build_loss("RelativisticGANLoss"), RelativisticGANLoss)
    assert isinstance(build_loss("feature-matching"), FeatureMatchingLoss)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("wasserstein")
    x, y = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    assert build_loss("mse", loss_weight=3.0)(x, 2 * y).item() == 12.0
    assert ESRGAN_WEIGHTS == {"pixel": 1e-2, "perceptual": 1.0, "gan": 5e-3}
    no_vgg = build_esrgan_losses()
    assert set(no_vgg) == {"pixel", "feature_matching", "gan"}
    assert no_vgg["pixel"].loss_weight == 1e-2 and no_vgg["gan"].loss_weight == 5e-3
    assert no_vgg["feature_matching"].loss_weight == 1.0


def test_esrgan_losses_with_vgg(vgg_file):
    losses = build_esrgan_losses(vgg_weights_path=vgg_file)
    assert set(losses) == {"pixel", "perceptual", "gan"}


@pytest.mark.slow
def test_discriminator_learns_to_separate():
    """A few Adam steps of the relativistic D loss separate flat from noisy patches."""
    torch.manual_seed(0)
    d = UNetDiscriminatorSN(num_feat=8)
    gan = RelativisticGANLoss()
    opt = torch.optim.Adam(d.parameters(), lr=2e-3)
    real = torch.rand(4, 1, 16, 16)
    fake = torch.full((4, 1, 16, 16), 0.5)
    first = None
    for _ in range(15):
        loss = gan.discriminator_loss(d(real), d(fake))
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.8
