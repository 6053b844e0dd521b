"""Training losses (lipsync.training): each one against an independent computation written here, the
schedule against the inference scheduler, the weight layouts against the released files' layouts, and
the weight loaders (round trip from a file, fast clear errors when weights are missing)."""

import json
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from lipsync.errors import CheckpointMismatchError, WeightsUnavailableError
from lipsync.training.diffusion import DiffusionSchedule
from lipsync.training.discriminator import SequentialDiscriminator
from lipsync.training.losses import (
    LOSS_PRESETS,
    LossWeights,
    gan_discriminator_loss,
    gan_generator_loss,
    loss_lpips,
    loss_simple,
    loss_sync,
    loss_vlb,
    l2_time_weights,
    loss_x0_l2,
    preset_weights,
)
from lipsync.training.lpips import LPIPS, VGG16Features, load_lpips
from lipsync.training.sync_expert import SyncNetColor, load_sync_expert, sync_expert_input

LN2 = math.log(2.0)

# torchvision vgg16().features: (index, out_channels, in_channels) of each 3x3 conv.
TORCHVISION_VGG16_CONVS = [
    (0, 64, 3), (2, 64, 64), (5, 128, 64), (7, 128, 128), (10, 256, 128), (12, 256, 256), (14, 256, 256),
    (17, 512, 256), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512),
]
LPIPS_HEAD_CHANNELS = [64, 128, 256, 512, 512]  # lpips v0.1 vgg.pth: lin{i}.model.1.weight (1, C, 1, 1)
POOL_BEFORE = {5, 10, 17, 24}  # convs that follow a 2x2 max pool
TAPS_AFTER = {2, 7, 14, 21, 28}  # LPIPS reads relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------
# Schedule
# ----------------------------------------------------------------------------------------------------


def test_schedule_matches_inference_scheduler_and_closed_forms():
    from diffusers import DDPMScheduler

    from lipsync.model.pipeline import default_scheduler

    s = DiffusionSchedule()
    assert s.num_timesteps == 1000 and s.alphas_cumprod.dtype == torch.float64
    assert s.betas[0].item() == pytest.approx(1e-4, abs=1e-15) and s.betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    # the scheduler DDIM inference uses, and diffusers' DDPM (both float32 tables)
    ref = default_scheduler().alphas_cumprod.double()
    assert torch.allclose(s.alphas_cumprod, ref, rtol=0, atol=1e-6)
    assert torch.allclose(s.alphas_cumprod, DDPMScheduler(beta_schedule="linear").alphas_cumprod.double(), rtol=0, atol=1e-6)
    # independent float64 product
    expected = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    assert np.abs(s.alphas_cumprod.numpy() - expected).max() < 1e-15
    # guided-diffusion scales the range by 1000/T
    assert DiffusionSchedule(250).betas[-1].item() == pytest.approx(0.08, abs=1e-15)


def test_q_sample_predict_x0_and_posterior():
    s = DiffusionSchedule()
    g = _gen(0)
    x0 = torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 500, 999])
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[t].view(-1, 1, 1, 1)
    x_t = s.q_sample(x0, t, noise)
    assert torch.allclose(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * noise, atol=1e-12)
    assert torch.allclose(s.predict_x0(x_t, t, noise), x0, atol=1e-9)
    # posterior by Gaussian conditioning (precision form), independent of the coef tables
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    acp = torch.cumprod(1 - betas, 0)
    tt = t[1:]
    b, a_t = betas[tt].view(-1, 1, 1, 1), (1 - betas[tt]).view(-1, 1, 1, 1)
    ab_prev = acp[tt - 1].view(-1, 1, 1, 1)
    var = 1.0 / (1.0 / (1 - ab_prev) + a_t / b)
    mean = var * (ab_prev.sqrt() * x0[1:] / (1 - ab_prev) + a_t.sqrt() * x_t[1:] / b)
    m, v, log_v = s.q_posterior_mean_variance(x0[1:], x_t[1:], tt)
    assert torch.allclose(m, mean, atol=1e-10)
    assert torch.allclose(v.flatten(), var.flatten(), rtol=1e-9)
    assert torch.allclose(log_v.flatten(), var.log().flatten(), rtol=1e-9)
    # at t = 0 the variance (0) is clipped to the t = 1 value in log space
    assert s.q_posterior_mean_variance(x0[:1], x_t[:1], t[:1])[2].item() == pytest.approx(math.log(s.posterior_variance[1].item()))


# ----------------------------------------------------------------------------------------------------
# Diffusion losses
# ----------------------------------------------------------------------------------------------------


def test_loss_simple_and_x0_l2_equal_mse_over_lower_half():
    from lipsync.model.pipeline import lower_half_mask

    g = _gen(1)
    a, b = torch.randn(3, 3, 16, 16, generator=g), torch.randn(3, 3, 16, 16, generator=g)
    mask = lower_half_mask(16, 16)  # rows 8.. are generated
    assert loss_simple(a, b, mask).item() == pytest.approx(F.mse_loss(a[..., 8:, :], b[..., 8:, :]).item(), rel=1e-6)
    assert loss_simple(a, b).item() == pytest.approx(F.mse_loss(a, b).item(), rel=1e-6)
    assert loss_x0_l2(a, b, mask).item() == pytest.approx(((a - b)[..., 8:, :] ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="selects no pixel"):
        loss_simple(a, b, torch.zeros(1, 1, 16, 16))


def test_snr_weighted_x0_l2_is_plain_l2_at_low_noise_and_eps_mse_at_high_noise():
    from lipsync.model.pipeline import lower_half_mask

    schedule = DiffusionSchedule()
    alpha_bar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))  # the linear schedule, written out here
    t = torch.tensor([0, 100, 250, 300, 600, 900, 999])
    snr = alpha_bar[t.numpy()] / (1.0 - alpha_bar[t.numpy()])
    weights = l2_time_weights(schedule, t, "snr")
    np.testing.assert_allclose(weights.numpy(), np.minimum(snr, 1.0), rtol=1e-6)
    assert weights[:2].tolist() == [1.0, 1.0] and weights[-1] < 1e-4
    assert l2_time_weights(schedule, t, "none") is None
    with pytest.raises(ValueError, match="unknown L2 weighting 'snrr'"):
        l2_time_weights(schedule, t, "snrr")

    g = _gen(3)
    x0 = torch.rand(7, 3, 16, 16, generator=g) * 2 - 1
    eps, eps_hat = torch.randn(7, 3, 16, 16, generator=g), torch.randn(7, 3, 16, 16, generator=g)
    x_t = schedule.q_sample(x0, t, eps)
    x0_hat = schedule.predict_x0(x_t, t, eps_hat)
    mask = lower_half_mask(16, 16)
    per_x0 = ((x0 - x0_hat)[..., 8:, :] ** 2).mean(dim=(1, 2, 3))
    per_eps = ((eps - eps_hat)[..., 8:, :] ** 2).mean(dim=(1, 2, 3))
    high = torch.from_numpy(snr < 1)
    # above SNR 1 the weighted term is ‖ε − ε̂‖² (x̂0's error is ε̂'s times √(1/SNR)); below it the plain L2
    torch.testing.assert_close(per_x0[high] * torch.from_numpy(snr[high.numpy()]).float(), per_eps[high], rtol=1e-3,
                               atol=1e-5)
    expected = torch.where(high, per_eps, per_x0).mean()
    assert loss_x0_l2(x0_hat, x0, mask, weights).item() == pytest.approx(expected.item(), rel=1e-3)
    assert loss_x0_l2(x0_hat, x0, mask).item() > 1000 * expected.item()  # the plain term at t = 999 dwarfs it


def _vlb_reference(x0, x_t, t, eps, v, rows=0):
    """Per-sample L_vlb in bits: torch.distributions KL at t > 0, explicit discretised NLL at t = 0."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    acp = torch.cumprod(1 - betas, 0)
    out = []
    for i in range(x0.shape[0]):
        ti = int(t[i])
        ab = acp[ti]
        ab_prev = acp[ti - 1] if ti > 0 else torch.tensor(1.0, dtype=torch.float64)
        beta, alpha = betas[ti], 1 - betas[ti]
        post_var = beta * (1 - ab_prev) / (1 - ab)
        clipped = betas[1] * (1 - acp[0]) / (1 - acp[1]) if ti == 0 else post_var
        x0_hat = (x_t[i] - (1 - ab).sqrt() * eps[i]) / ab.sqrt()
        def post_mean(x):  # noqa: E306
            return (ab_prev.sqrt() * beta * x + alpha.sqrt() * (1 - ab_prev) * x_t[i]) / (1 - ab)
        frac = (v[i] + 1) / 2
        p_var = torch.exp(frac * beta.log() + (1 - frac) * clipped.log())
        p = Normal(post_mean(x0_hat), p_var.sqrt())
        if ti > 0:
            terms = kl_divergence(Normal(post_mean(x0[i]), post_var.sqrt()), p)
        else:
            x = x0[i]
            hi = torch.where(x > 0.999, torch.ones_like(x), p.cdf(x + 1 / 255))
            lo = torch.where(x < -0.999, torch.zeros_like(x), p.cdf(x - 1 / 255))
            terms = -torch.log(hi - lo)
        out.append(terms[..., rows:, :].mean() / LN2)
    return torch.stack(out)


def test_loss_vlb_equals_gaussian_kl_and_discretised_nll():
    s = DiffusionSchedule()
    g = _gen(2)
    n, c, h = 5, 3, 8
    x0 = (torch.randint(0, 256, (n, c, h, h), generator=g).double() / 255) * 2 - 1  # on the 8-bit grid
    x0[0, 0, 0, :2] = torch.tensor([-1.0, 1.0], dtype=torch.float64)  # both edge bins at t = 0
    noise = torch.randn(n, c, h, h, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 400, 999])
    x_t = s.q_sample(x0, t, noise)
    eps = noise + 0.3 * torch.randn(n, c, h, h, generator=g, dtype=torch.float64)
    v = torch.rand(n, c, h, h, generator=g, dtype=torch.float64) * 2 - 1
    out = torch.cat([eps, v], dim=1)
    ref = _vlb_reference(x0, x_t, t, eps, v)
    assert loss_vlb(s, out, x0, x_t, t).item() == pytest.approx(ref.mean().item(), rel=1e-9)
    # masked: only the lower half counts
    mask = torch.zeros(1, 1, h, h, dtype=torch.float64)
    mask[..., h // 2:, :] = 1
    ref_masked = _vlb_reference(x0, x_t, t, eps, v, rows=h // 2)
    assert loss_vlb(s, out, x0, x_t, t, mask).item() == pytest.approx(ref_masked.mean().item(), rel=1e-9)
    # float32 (as in training) agrees closely
    out32 = out.float().requires_grad_(True)
    loss32 = loss_vlb(s, out32, x0.float(), x_t.float(), t)
    assert loss32.item() == pytest.approx(ref.mean().item(), rel=1e-4)
    # the mean uses a detached eps: the term trains the variance channels only
    loss32.backward()
    assert out32.grad[:, :c].abs().max().item() == 0.0
    assert out32.grad[:, c:].abs().max().item() > 0.0


# ----------------------------------------------------------------------------------------------------
# LPIPS
# ----------------------------------------------------------------------------------------------------


def _random_lpips(seed=0):
    torch.manual_seed(seed)
    net = LPIPS()
    with torch.no_grad():
        for head in net.heads:
            head.model[1].weight.abs_()  # the released heads are non-negative
    return net.eval()


def _lpips_reference(net, x, y):
    """VGG16 with F.conv2d on the state dict's tensors; distance written out per layer."""
    sd = net.state_dict()
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def features(img):
        h, taps = (img - shift) / scale, []
        for index, _, _ in TORCHVISION_VGG16_CONVS:
            if index in POOL_BEFORE:
                h = F.max_pool2d(h, 2)
            h = F.relu(F.conv2d(h, sd[f"net.features.{index}.weight"], sd[f"net.features.{index}.bias"], padding=1))
            if index in TAPS_AFTER:
                taps.append(h)
        return taps

    total = torch.zeros(x.shape[0])
    for i, (fx, fy) in enumerate(zip(features(x), features(y))):
        nx = fx / (torch.linalg.vector_norm(fx, dim=1, keepdim=True) + 1e-10)
        ny = fy / (torch.linalg.vector_norm(fy, dim=1, keepdim=True) + 1e-10)
        w = sd[f"lin{i}.model.1.weight"].view(1, -1, 1, 1)
        total += (w * (nx - ny) ** 2).sum(dim=1).mean(dim=(1, 2))
    return total


def test_lpips_equals_normalised_feature_distance():
    net = _random_lpips()
    g = _gen(3)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
    d = net(x, y)
    assert d.shape == (2, 1, 1, 1)
    ref = _lpips_reference(net, x, y)
    assert torch.allclose(d.flatten(), ref, rtol=1e-4, atol=1e-7)
    assert ref.min().item() > 0
    assert loss_lpips(net, x, y).item() == pytest.approx(ref.mean().item(), rel=1e-4)
    assert net(x, x).abs().max().item() == 0.0
    xg = x.clone().requires_grad_(True)
    loss_lpips(net, xg, y).backward()
    assert xg.grad.abs().sum().item() > 0


def test_lpips_layouts_match_torchvision_and_lpips():
    vgg = VGG16Features().state_dict()
    expected = {}
    for index, cout, cin in TORCHVISION_VGG16_CONVS:
        expected[f"features.{index}.weight"] = (cout, cin, 3, 3)
        expected[f"features.{index}.bias"] = (cout,)
    assert {k: tuple(v.shape) for k, v in vgg.items()} == expected
    assert list(vgg) == list(expected)  # torchvision's order
    heads = LPIPS().heads_state_dict()
    assert {k: tuple(v.shape) for k, v in heads.items()} == {
        f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(LPIPS_HEAD_CHANNELS)}
    assert set(LPIPS().state_dict()) == {"net." + k for k in expected} | set(heads)


def test_load_lpips_round_trip(tmp_path):
    source = _random_lpips(seed=5)
    sd = source.state_dict()
    # torchvision's file: features.* plus classifier.* (ignored); lpips' file: heads only, saved from CUDA
    # in the original, a plain dict here
    vgg_file, heads_file = tmp_path / "vgg16.pth", tmp_path / "vgg_heads.pth"
    torch.save({**{k[len("net."):]: v for k, v in sd.items() if k.startswith("net.")},
                "classifier.0.weight": torch.zeros(4, 4)}, vgg_file)
    torch.save(source.heads_state_dict(), heads_file)
    net = load_lpips(vgg_file, heads_file)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, sd[k]), k
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(net(x, y), source(x, y))
    # a heads file of the wrong network is refused by name
    torch.save({"lin0.model.1.weight": torch.zeros(1, 96, 1, 1)}, tmp_path / "alex.pth")
    with pytest.raises(CheckpointMismatchError, match="lin0.model.1.weight"):
        load_lpips(vgg_file, tmp_path / "alex.pth")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, an empty torch hub cache, no env paths, no installed lpips package."""
    import lipsync.hub
    import lipsync.training.lpips as lp

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    for var in ("LIPSYNC_LPIPS_VGG", "LIPSYNC_LPIPS_HEADS", "LIPSYNC_SYNC_EXPERT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(lipsync.hub, "_answers", {})  # no remembered reachability answers
    monkeypatch.setattr(lp, "_lpips_package_heads", lambda: ())
    return tmp_path


def test_missing_weights_fail_fast_naming_the_flag(offline):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"--lpips-vgg PATH.*vgg16-397923af\.pth|vgg16-397923af\.pth.*--lpips-vgg PATH"):
        load_lpips()
    vgg_file = offline / "vgg.pth"
    torch.save(VGG16Features().state_dict(), vgg_file)
    with pytest.raises(WeightsUnavailableError, match=r"--lpips-heads PATH") as err:
        load_lpips(vgg_file)
    assert "v0.1/vgg.pth" in str(err.value)
    with pytest.raises(WeightsUnavailableError, match=r"--sync-expert PATH") as err:
        load_sync_expert()
    assert "lipsync_expert.pth" in str(err.value)
    with pytest.raises(WeightsUnavailableError, match=r"does not exist.*--sync-expert"):
        load_sync_expert(offline / "nope.pth")
    assert time.monotonic() - start < 15.0  # no long retries


# ----------------------------------------------------------------------------------------------------
# SyncNet expert
# ----------------------------------------------------------------------------------------------------


def test_syncnet_color_layout_matches_wav2lip(fixtures_dir):
    ref = json.loads((fixtures_dir / "syncnet_color_keys.json").read_text())
    model = SyncNetColor()
    sd = model.state_dict()
    assert list(sd) == [e["key"] for e in ref["entries"]]
    assert {k: list(v.shape) for k, v in sd.items()} == {e["key"]: e["shape"] for e in ref["entries"]}
    assert sum(p.numel() for p in model.parameters()) == ref["total_params"] == 16_435_072
    a, f = model.eval()(torch.randn(2, 1, 80, 16), torch.rand(2, 15, 48, 96))
    assert a.shape == f.shape == (2, 512)


def test_sync_expert_input_layout():
    # frame k has the constant colour (R, G, B) = (k/10, -k/10, 0.5) in [-1, 1]
    halves = torch.zeros(1, 5, 3, 64, 128)
    for k in range(5):
        halves[0, k, 0], halves[0, k, 1], halves[0, k, 2] = k / 10, -k / 10, 0.5
    faces = sync_expert_input(halves)
    assert faces.shape == (1, 15, 48, 96)
    for k in range(5):  # BGR per frame, in [0, 1]
        assert torch.allclose(faces[0, 3 * k], torch.full((48, 96), 0.75))
        assert torch.allclose(faces[0, 3 * k + 1], torch.full((48, 96), (1 - k / 10) / 2))
        assert torch.allclose(faces[0, 3 * k + 2], torch.full((48, 96), (1 + k / 10) / 2))


def test_loss_sync_is_bce_of_cosine():
    torch.manual_seed(7)
    expert = SyncNetColor().eval()
    g = _gen(7)
    halves = torch.rand(2, 5, 3, 64, 128, generator=g) * 2 - 1
    mel = torch.randn(2, 1, 80, 16, generator=g)
    # independent input: per frame BGR, area (= adaptive average) resize, [0, 1], frames on channels
    frames = [F.adaptive_avg_pool2d(halves[:, k][:, [2, 1, 0]], (48, 96)) for k in range(5)]
    faces = (torch.cat(frames, dim=1) + 1) / 2
    with torch.no_grad():
        a = expert.audio_encoder(mel).flatten(1)
        f = expert.face_encoder(faces).flatten(1)
        cos = (a * f).sum(1) / (a.norm(dim=1) * f.norm(dim=1))
        assert (cos > 0).all() and (cos <= 1).all()
        expected = (-torch.log(cos)).mean()
        assert loss_sync(expert, halves, mel).item() == pytest.approx(expected.item(), rel=1e-5)


def test_load_sync_expert_round_trip(tmp_path):
    torch.manual_seed(8)
    source = SyncNetColor()
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    # Wav2Lip's training checkpoints: {"state_dict": {"module.<key>": ...}, "global_step": ...}
    path = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}, "global_step": 3}, path)
    expert = load_sync_expert(path)
    assert not expert.training and not any(p.requires_grad for p in expert.parameters())
    for k, v in expert.state_dict().items():
        assert torch.equal(v, source.state_dict()[k]), k
    mel, faces = torch.randn(1, 1, 80, 16), torch.rand(1, 15, 48, 96)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(expert(mel, faces), source.eval()(mel, faces)))


# ----------------------------------------------------------------------------------------------------
# Sequential GAN
# ----------------------------------------------------------------------------------------------------


def test_gan_losses_are_non_saturating_logistic():
    torch.manual_seed(9)
    disc = SequentialDiscriminator(base_channels=8, num_layers=2)
    g = _gen(9)
    real = torch.rand(2, 5, 3, 32, 32, generator=g) * 2 - 1
    fake = (torch.rand(2, 5, 3, 32, 32, generator=g) * 2 - 1).requires_grad_(True)
    with torch.no_grad():
        d_real = disc(real)
        d_fake = disc(fake)
    assert d_real.shape == (2, 1, 6, 6)
    expected_d = -torch.log(torch.sigmoid(d_real)).mean() - torch.log(1 - torch.sigmoid(d_fake)).mean()
    expected_g = -torch.log(torch.sigmoid(d_fake)).mean()
    loss_d = gan_discriminator_loss(disc, real, fake)
    assert loss_d.item() == pytest.approx(expected_d.item(), rel=1e-5)
    loss_d.backward()
    assert fake.grad is None  # the discriminator step does not reach the generator
    assert disc.net[0].weight.grad.abs().sum() > 0
    loss_g = gan_generator_loss(disc, fake)
    assert loss_g.item() == pytest.approx(expected_g.item(), rel=1e-5)
    loss_g.backward()
    assert fake.grad.abs().sum() > 0
    # the frames are judged together: changing one frame changes the logits
    other = real.clone()
    other[:, 2] = -other[:, 2]
    with torch.no_grad():
        assert not torch.allclose(disc(other), d_real)
    with pytest.raises(ValueError, match="built for 32x32 frames, got 64x64"):
        SequentialDiscriminator(base_channels=8, image_size=32)(torch.zeros(1, 5, 3, 64, 64))


# ----------------------------------------------------------------------------------------------------
# Weights and presets
# ----------------------------------------------------------------------------------------------------


def test_presets_are_the_paper_ablation_rows():
    active = {name: set(w.active()) for name, w in LOSS_PRESETS.items()}
    assert active["simple"] == {"simple", "vlb"}
    assert active["sync"] == active["simple"] | {"l2", "sync"}
    assert active["perceptual"] == active["sync"] | {"lpips"}
    assert active["full"] == active["perceptual"] | {"gan"}
    full = LOSS_PRESETS["full"]
    assert (full.l2, full.sync, full.lpips, full.gan) == (1.0, 0.1, 0.25, 0.5)  # the authors' eq. 9 weights
    tuned = preset_weights("sync").replace(sync=0.03, lpips=None)
    assert tuned.sync == 0.03 and tuned.lpips == 0.0 and LOSS_PRESETS["sync"].sync == 0.1
    with pytest.raises(ValueError, match="unknown loss preset 'fancy'"):
        preset_weights("fancy")
    with pytest.raises(ValueError, match="lpips must be a finite number >= 0"):
        LossWeights(lpips=-1.0)
