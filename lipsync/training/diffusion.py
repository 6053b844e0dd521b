"""The forward diffusion process Diff2Lip was trained with (guided-diffusion's Gaussian diffusion).

Written from Ho et al. 2020 ("Denoising Diffusion Probabilistic Models") and Nichol & Dhariwal 2021
("Improved DDPM": the linear schedule scaled by 1000/T, the learned-range variance). Every table is float64
and is cast to the input's dtype only when it is gathered for a batch of timesteps, so training sees the
same ᾱ_t as inference (:func:`lipsync.model.pipeline.default_scheduler`, DDIM over 1000 train steps).

Notation: x0 the clean image, x_t the noised one, ε the noise, ᾱ_t = ∏_{s<=t} (1 − β_s),
all images (N, C, H, W) in [-1, 1], t a LongTensor (N,) in [0, T).
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 1e-4  # at T = 1000; scaled by 1000 / T
BETA_END = 0.02


def linear_betas(num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """guided-diffusion's "linear" schedule: float64 (T,) from 1e-4·1000/T to 0.02·1000/T, evenly spaced."""
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * BETA_START, scale * BETA_END, num_timesteps, dtype=np.float64)


def _gather(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """table[t] as ``like``'s dtype/device, shaped (N, 1, 1, ...) to broadcast over ``like`` (N, ...)."""
    values = gather_table(table, t).to(device=like.device, dtype=like.dtype)
    return values.view(-1, *([1] * (like.ndim - 1)))


_DEVICE_TABLES: Dict[Tuple[int, str], Tuple[torch.Tensor, torch.Tensor]] = {}


def gather_table(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """table[t] in the table's dtype (float64), on t's device: on a GPU from a copy of the table made once,
    so that no step waits for the device to hand t back to the host."""
    if t.device.type in ("cpu", "mps"):  # mps has no float64: index on the CPU
        return table[t.to("cpu", torch.long)]
    key = (id(table), str(t.device))
    cached = _DEVICE_TABLES.get(key)
    if cached is None or cached[0] is not table:
        cached = _DEVICE_TABLES[key] = (table, table.to(t.device))
    return cached[1][t.long()]


class DiffusionSchedule:
    """The fixed tables of the forward process and the closed forms built on them.

    Attributes (float64 CPU tensors of shape (T,)): ``betas``, ``alphas_cumprod`` (ᾱ_t),
    ``alphas_cumprod_prev`` (ᾱ_{t-1}, with ᾱ_{-1} = 1), ``posterior_variance`` (β̃_t),
    ``posterior_log_variance_clipped`` (log β̃_t with β̃_0 replaced by β̃_1, as guided-diffusion does since
    β̃_0 = 0), ``posterior_mean_coef1`` / ``posterior_mean_coef2``.
    """

    def __init__(self, num_timesteps: int = NUM_TRAIN_TIMESTEPS):
        if num_timesteps < 2:
            raise ValueError(f"num_timesteps must be at least 2, got {num_timesteps}")
        self.num_timesteps = int(num_timesteps)
        betas = linear_betas(self.num_timesteps)
        alphas = 1.0 - betas
        ac = np.cumprod(alphas)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
        self.betas = as_t(betas)
        self.alphas_cumprod = as_t(ac)
        self.alphas_cumprod_prev = as_t(ac_prev)
        self.sqrt_alphas_cumprod = as_t(np.sqrt(ac))
        self.sqrt_one_minus_alphas_cumprod = as_t(np.sqrt(1.0 - ac))
        self.sqrt_recip_alphas_cumprod = as_t(np.sqrt(1.0 / ac))
        self.sqrt_recipm1_alphas_cumprod = as_t(np.sqrt(1.0 / ac - 1.0))
        self.posterior_variance = as_t(post_var)
        self.posterior_log_variance_clipped = as_t(np.log(np.append(post_var[1], post_var[1:])))
        self.posterior_mean_coef1 = as_t(betas * np.sqrt(ac_prev) / (1.0 - ac))
        self.posterior_mean_coef2 = as_t((1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac))
        self.log_betas = as_t(np.log(betas))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε.  x0, noise (N, C, H, W); t LongTensor (N,) -> (N, C, H, W)."""
        return _gather(self.sqrt_alphas_cumprod, t, x0) * x0 + _gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t (not clipped; up to ~160× ε̂ at t = T−1).

        x_t, eps (N, C, H, W) (eps: the first C output channels only); t LongTensor (N,) -> (N, C, H, W).
        """
        return _gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps

    def q_posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The Gaussian q(x_{t−1} | x_t, x0): (mean (N, C, H, W), variance (N, 1, 1, 1), clipped log variance (N, 1, 1, 1)).

        mean = coef1_t·x0 + coef2_t·x_t; variance = β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t).
        """
        mean = _gather(self.posterior_mean_coef1, t, x_t) * x0 + _gather(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, _gather(self.posterior_variance, t, x_t), _gather(self.posterior_log_variance_clipped, t, x_t)

    def learned_range_log_variance(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Improved DDPM's learned variance: log σ² = f·log β_t + (1 − f)·log β̃_t (clipped), f = (v + 1)/2.

        v: the model's variance channels (N, C, H, W), nominally in [-1, 1] -> log σ² (N, C, H, W).
        """
        frac = (v + 1.0) / 2.0
        return frac * _gather(self.log_betas, t, v) + (1.0 - frac) * _gather(self.posterior_log_variance_clipped, t, v)

    def p_mean_log_variance(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The model's p(x_{t−1} | x_t): (mean, log variance, x̂0), each (N, C, H, W).

        model_output (N, 2C, H, W) = [ε̂, v]; the mean is q's posterior mean at x̂0 (x̂0 not clipped, as in
        training).
        """
        eps, v = split_model_output(model_output, x_t.shape[1])
        x0_hat = self.predict_x0(x_t, t, eps)
        mean, _, _ = self.q_posterior_mean_variance(x0_hat, x_t, t)
        return mean, self.learned_range_log_variance(v, t), x0_hat


def split_model_output(model_output: torch.Tensor, channels: int = 3) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, 2C, H, W) learned-sigma output -> (ε̂ (N, C, H, W), v (N, C, H, W))."""
    if model_output.shape[1] != 2 * channels:
        raise ValueError(
            f"the model output has {model_output.shape[1]} channels; a learned-variance model gives "
            f"{2 * channels} (ε̂ and the variance interpolation v)"
        )
    return model_output[:, :channels], model_output[:, channels:]
