"""Diff2Lip's training losses, each a named function of tensors, and the λ weights that combine them.

Shapes: images (N, 3, H, W) in [-1, 1]; ``mask`` (1 or N, 1, H, W) with 1 on the pixels that count (the
generated lower half, :func:`lipsync.model.pipeline.lower_half_mask`) or None for every pixel; a
"sequence" is (N, 5, 3, H, W): 5 consecutive frames of one clip. Every loss returns a 0-d tensor.

Per-sample terms (L_simple, VLB, L2) are means over the sample's (masked) elements, then averaged over the
batch, as guided-diffusion's ``mean_flat`` does.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import asdict, dataclass, fields
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from lipsync.training.diffusion import DiffusionSchedule, split_model_output

LN2 = math.log(2.0)
BIN_HALF_WIDTH = 1.0 / 255.0  # 8-bit images in [-1, 1]: bins of width 2/255


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------


def masked_mean_per_sample(values: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of ``values`` (N, C, H, W) over (C, H, W), counting only where ``mask`` (1|N, 1, H, W) is 1 -> (N,)."""
    if mask is None:
        return values.flatten(1).mean(dim=1)
    weights = mask.to(values.dtype).expand_as(values)
    count = weights.flatten(1).sum(dim=1)
    if not _known_good_mask(mask):
        if bool((count <= 0).any()):
            raise ValueError("the loss mask selects no pixel of some sample; pass a mask with 1 on the generated "
                             "region")
        _remember_good_mask(mask)
    return (values * weights).flatten(1).sum(dim=1) / count


_GOOD_MASKS: Dict[int, tuple] = {}  # id -> (weak reference, version) of masks already checked


def _known_good_mask(mask: torch.Tensor) -> bool:
    """Whether this very mask tensor, unchanged since, passed the check (the trainer's mask is checked once,
    not at every step, where reading the check back would wait for the device)."""
    entry = _GOOD_MASKS.get(id(mask))
    return entry is not None and entry[0]() is mask and entry[1] == mask._version


def _remember_good_mask(mask: torch.Tensor) -> None:
    if len(_GOOD_MASKS) > 16:
        _GOOD_MASKS.clear()
    _GOOD_MASKS[id(mask)] = (weakref.ref(mask), mask._version)


def normal_kl(mean1: torch.Tensor, log_var1: torch.Tensor, mean2: torch.Tensor, log_var2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^log_var1) || N(mean2, e^log_var2)) in nats (broadcasting shapes)."""
    return 0.5 * (-1.0 + log_var2 - log_var1 + torch.exp(log_var1 - log_var2)
                  + (mean1 - mean2) ** 2 * torch.exp(-log_var2))


def discretized_gaussian_log_likelihood(x0: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Elementwise log-probability (nats) of 8-bit images x0 (in [-1, 1]) under N(mean, e^(2·log_scale)).

    Each value owns the bin x ± 1/255; the first and last bins extend to −∞ / +∞ (Ho et al. 2020, eq. 13).
    The exact normal CDF is used (torch.special.ndtr / log_ndtr), not guided-diffusion's tanh approximation.
    """
    inv_std = torch.exp(-log_scale)
    upper = inv_std * (x0 - mean + BIN_HALF_WIDTH)
    lower = inv_std * (x0 - mean - BIN_HALF_WIDTH)
    log_cdf_upper = torch.special.log_ndtr(upper)  # log P(X <= x + 1/255)
    log_sf_lower = torch.special.log_ndtr(-lower)  # log P(X >= x - 1/255)
    log_bin = torch.log((torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=1e-12))
    return torch.where(x0 < -0.999, log_cdf_upper, torch.where(x0 > 0.999, log_sf_lower, log_bin))


# ----------------------------------------------------------------------------------------------------
# Diffusion losses
# ----------------------------------------------------------------------------------------------------


def loss_simple(eps_pred: torch.Tensor, noise: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """L_simple = ‖ε − ε̂‖²: mean squared error of the predicted noise.

    eps_pred: (N, C, H, W) predicted ε (the first C channels of the model output); noise: (N, C, H, W) the
    true ε; mask: (1|N, 1, H, W) or None. Returns the batch mean of the per-sample masked means.
    """
    if eps_pred.shape != noise.shape:
        raise ValueError(f"eps_pred {tuple(eps_pred.shape)} and noise {tuple(noise.shape)} must have the same shape")
    return masked_mean_per_sample((noise - eps_pred) ** 2, mask).mean()


def vlb_terms(schedule: DiffusionSchedule, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
              t: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample variational bound term L_{t−1} in bits per (masked) dimension -> (N,).

    model_output: (N, 2C, H, W) = [ε̂, v]; x0, x_t: (N, C, H, W); t: LongTensor (N,).
    t > 0: KL(q(x_{t−1}|x_t, x0) || p(x_{t−1}|x_t)); t = 0: −log p(x0|x1) of the discretised decoder.
    The mean of p uses a *detached* ε̂, so this term trains only the variance channels v (Improved DDPM).
    """
    eps, v = split_model_output(model_output, x0.shape[1])
    frozen = torch.cat([eps.detach(), v], dim=1)
    p_mean, p_log_var, _ = schedule.p_mean_log_variance(frozen, x_t, t)
    q_mean, _, q_log_var = schedule.q_posterior_mean_variance(x0, x_t, t)
    kl = masked_mean_per_sample(normal_kl(q_mean, q_log_var, p_mean, p_log_var), mask) / LN2
    nll = -masked_mean_per_sample(discretized_gaussian_log_likelihood(x0, p_mean, 0.5 * p_log_var), mask) / LN2
    return torch.where(t.to(kl.device) == 0, nll, kl)


def loss_vlb(schedule: DiffusionSchedule, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
             t: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """guided-diffusion's learned-range variance term (``L_vlb``): the batch mean of :func:`vlb_terms`.

    model_output: (N, 2C, H, W) = [ε̂, v] with v in [-1, 1] interpolating log σ² between log β̃_t and log β_t;
    x0, x_t: (N, C, H, W) in [-1, 1] (x0 on the 8-bit grid for the t = 0 likelihood); t: LongTensor (N,);
    mask: (1|N, 1, H, W) or None. Bits per dimension, ≥ 0 at t > 0.
    """
    return vlb_terms(schedule, model_output, x0, x_t, t, mask).mean()


def loss_x0_l2(x0_pred: torch.Tensor, x0: torch.Tensor, mask: Optional[torch.Tensor] = None,
               weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """L2 = ‖x0 − x̂0‖²: mean squared error of the recovered image (:meth:`DiffusionSchedule.predict_x0`).

    x0_pred, x0: (N, C, H, W) in [-1, 1]; mask: (1|N, 1, H, W) or None; weights: (N,) per-sample factors
    (:func:`l2_time_weights`) or None (the paper's plain L2).
    """
    if x0_pred.shape != x0.shape:
        raise ValueError(f"x0_pred {tuple(x0_pred.shape)} and x0 {tuple(x0.shape)} must have the same shape")
    per_sample = masked_mean_per_sample((x0 - x0_pred) ** 2, mask)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample)
    return per_sample.mean()


L2_WEIGHTINGS = ("none", "snr")


def l2_time_weights(schedule: DiffusionSchedule, t: torch.Tensor, weighting: str) -> Optional[torch.Tensor]:
    """Per-sample factors of the L2 term: None for "none" (the paper's ‖x0 − x̂0‖² at every t), or for "snr"
    min(1, SNR_t) with SNR_t = ᾱ_t/(1 − ᾱ_t), shape (N,) float32.

    x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t multiplies ε̂'s error by √(1/SNR_t) (about 56 at t = 900), so at high noise
    the plain L2 term's gradient is tens of times L_simple's (6–90× at t ≥ 600 on the small model of
    benchmarks/train_small.py) and dominates every clipped step. Weighted by
    min(1, SNR_t) it is the plain L2 where x̂0 is well determined (SNR ≥ 1, t ≲ 250 on the linear schedule)
    and equals ‖ε − ε̂‖² above.
    """
    if weighting not in L2_WEIGHTINGS:
        raise ValueError(f"unknown L2 weighting {weighting!r}: choose one of {', '.join(L2_WEIGHTINGS)}")
    if weighting == "none":
        return None
    from lipsync.training.diffusion import gather_table

    ac = gather_table(schedule.alphas_cumprod, t)
    return (ac / (1.0 - ac)).clamp(max=1.0).float().to(t.device)


# ----------------------------------------------------------------------------------------------------
# Perceptual, lip-sync and adversarial losses
# ----------------------------------------------------------------------------------------------------


def loss_lpips(lpips_net, x0_pred: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """LPIPS distance between x̂0 and x0, averaged over the batch.

    lpips_net: :class:`lipsync.training.lpips.LPIPS` (frozen, eval mode); x0_pred, x0: (N, 3, H, W) in
    [-1, 1] (pass the lower halves to restrict it to the generated region).
    """
    return lpips_net(x0_pred, x0).mean()


def loss_sync(expert, lower_halves: torch.Tensor, sync_mel: torch.Tensor, rgb: bool = True) -> torch.Tensor:
    """Wav2Lip's expert lip-sync loss: BCE(cos(audio_emb, face_emb), 1) = −log cos, batch mean.

    expert: :class:`lipsync.training.sync_expert.SyncNetColor` (frozen, eval mode);
    lower_halves: (N, 5, 3, h, w) in [-1, 1], the recovered lower halves of 5 consecutive frames (resized to
    the expert's 48×96 here); sync_mel: (N, 1, 80, 16) the mel segment the 5 frames cover;
    rgb: the frames are RGB (the expert was trained on OpenCV's BGR and gets the channels flipped).
    """
    from lipsync.training.sync_expert import sync_expert_input

    audio_emb, face_emb = expert(sync_mel, sync_expert_input(lower_halves, rgb=rgb))
    cos = F.cosine_similarity(audio_emb.float(), face_emb.float(), dim=1)  # (N,) in [0, 1]: ReLU'd, unit-norm embeddings
    # BCE against 1 written out (F.binary_cross_entropy refuses to run under autocast); its log is clamped at -100
    return -torch.log(cos.clamp(0.0, 1.0)).clamp(min=-100.0).mean()


def gan_discriminator_loss(disc, real_seq: torch.Tensor, fake_seq: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss of the discriminator: E[softplus(−D(real))] + E[softplus(D(fake))].

    = −log σ(D(real)) − log(1 − σ(D(fake))) (Goodfellow et al. 2014), D's logits averaged over its patches.
    disc: :class:`lipsync.training.discriminator.SequentialDiscriminator`; real_seq, fake_seq:
    (N, 5, 3, S, S) in [-1, 1]. ``fake_seq`` is detached: this step trains the discriminator only.
    """
    return F.softplus(-disc(real_seq)).mean() + F.softplus(disc(fake_seq.detach())).mean()


def gan_generator_loss(disc, fake_seq: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss of the generator: E[softplus(−D(fake))] = −log σ(D(fake)).

    disc: the discriminator (its parameters get gradients too; freeze them or zero them before its own step);
    fake_seq: (N, 5, 3, S, S) in [-1, 1], the recovered frames, with gradients to the diffusion model.
    """
    return F.softplus(-disc(fake_seq)).mean()


# ----------------------------------------------------------------------------------------------------
# Weights and presets
# ----------------------------------------------------------------------------------------------------


@dataclass
class LossWeights:
    """One λ per term of L = λ_simple·L_simple + λ_vlb·L_vlb + λ_l2·L2 + λ_lpips·LPIPS + λ_sync·L_sync + λ_gan·L_gan.

    A term with λ = 0 is not computed (its network is not even needed).
    """

    simple: float = 1.0
    vlb: float = 1.0
    l2: float = 0.0
    lpips: float = 0.0
    sync: float = 0.0
    gan: float = 0.0

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"loss weight {f.name} must be a finite number >= 0, got {value!r}")
            setattr(self, f.name, float(value))

    def active(self) -> Dict[str, float]:
        """The terms with λ > 0, name -> λ."""
        return {k: v for k, v in asdict(self).items() if v > 0}

    def replace(self, **overrides: Optional[float]) -> "LossWeights":
        """A copy with the given λs changed (None values are ignored, so unset CLI flags keep the preset)."""
        values = asdict(self)
        for name, value in overrides.items():
            if name not in values:
                raise ValueError(f"unknown loss term {name!r}; the terms are {', '.join(values)}")
            if value is not None:
                values[name] = value
        return LossWeights(**values)


# The paper's ablation rows (Diff2Lip, Table 4), with the λs of its eq. 9 that the authors gave for the
# released checkpoint (soumik-kanad/diff2lip issue #41): λ_L2 = 1, λ_sync = 0.1, λ_lpips = 0.25, λ_GAN = 0.5.
# L_vlb (λ = 1, guided-diffusion's hybrid loss) trains the variance channels of the 6-channel output.
LOSS_PRESETS: Dict[str, LossWeights] = {
    "simple": LossWeights(simple=1.0, vlb=1.0),
    "sync": LossWeights(simple=1.0, vlb=1.0, l2=1.0, sync=0.1),
    "perceptual": LossWeights(simple=1.0, vlb=1.0, l2=1.0, sync=0.1, lpips=0.25),
    "full": LossWeights(simple=1.0, vlb=1.0, l2=1.0, sync=0.1, lpips=0.25, gan=0.5),
}


def preset_weights(name: str) -> LossWeights:
    """A copy of ``LOSS_PRESETS[name]``; a clear ValueError for an unknown name."""
    if name not in LOSS_PRESETS:
        raise ValueError(f"unknown loss preset {name!r}; choose one of {', '.join(LOSS_PRESETS)}")
    return LossWeights(**asdict(LOSS_PRESETS[name]))
