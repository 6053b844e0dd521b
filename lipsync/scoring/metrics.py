"""Image metrics for lip-sync results: PSNR over a whole clip and SSIM (Wang et al. 2004) on BT.601 luma.

* PSNR: 10·log10(255² / MSE) with the MSE over every pixel and RGB channel of all compared frames
  (one MSE for the whole clip, so a clip with some unchanged frames stays finite); inf when identical.
* SSIM: 11×11 Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, L = 255, mean of the SSIM map over the "valid"
  region (no padding, as the authors' ssim_index.m); a clip's SSIM is the mean over frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class SSIMConfig:
    """Wang et al. 2004 constants."""

    window: int = 11
    sigma: float = 1.5
    k1: float = 0.01
    k2: float = 0.03
    data_range: float = 255.0


SSIM_CONFIG = SSIMConfig()


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two equally shaped arrays (an image, or a stack of frames).

    10·log10(data_range² / MSE), the MSE over all elements in float64; inf when a == b.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"PSNR needs equal shapes, got {a.shape} and {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def to_luma(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB or (H, W) gray → (H, W) float64 BT.601 luma, same range."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) RGB or (H, W) gray, got {image.shape}")
    return image @ np.array([0.299, 0.587, 0.114])


def _gaussian_kernel(window: int, sigma: float) -> np.ndarray:
    x = np.arange(window, dtype=np.float64) - (window - 1) / 2
    k = np.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def ssim(a: np.ndarray, b: np.ndarray, config: SSIMConfig = SSIM_CONFIG) -> float:
    """Mean SSIM (Wang et al. 2004) of two images: (H, W, 3) RGB (compared on luma) or (H, W) gray.

    Gaussian window ``config.window``², σ ``config.sigma``; the map is averaged over positions where the
    window fits entirely ("valid"). Images must be at least window × window.
    """
    x, y = to_luma(a), to_luma(b)
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs equal shapes, got {np.shape(a)} and {np.shape(b)}")
    if min(x.shape) < config.window:
        raise ValueError(f"SSIM needs images of at least {config.window}×{config.window} pixels, got {x.shape}")
    k = _gaussian_kernel(config.window, config.sigma)
    r = config.window // 2

    def blur(img):  # separable Gaussian, "valid" part only
        return cv2.sepFilter2D(img, cv2.CV_64F, k, k, borderType=cv2.BORDER_REFLECT)[r:-r, r:-r]

    c1 = (config.k1 * config.data_range) ** 2
    c2 = (config.k2 * config.data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


class ReconstructionMeter:
    """Accumulates PSNR (global MSE) and SSIM (mean over frames) over frame chunks of a clip."""

    def __init__(self, config: SSIMConfig = SSIM_CONFIG):
        self.config = config
        self.squared_error = 0.0
        self.n_values = 0
        self.ssim_sum = 0.0
        self.n_frames = 0

    def update(self, generated: np.ndarray, reference: np.ndarray) -> None:
        """Add (n, H, W, 3) uint8 generated frames and the matching ground-truth frames."""
        if generated.shape != reference.shape:
            raise ValueError(
                f"generated frames are {generated.shape[1:3]} but ground-truth frames are {reference.shape[1:3]}; "
                "PSNR/SSIM need the ground truth at the generated video's resolution"
            )
        diff = generated.astype(np.float64) - reference.astype(np.float64)
        self.squared_error += float(np.sum(diff * diff))
        self.n_values += diff.size
        for g, r in zip(generated, reference):
            self.ssim_sum += ssim(g, r, self.config)
        self.n_frames += len(generated)

    @property
    def psnr(self) -> float:
        if self.n_values == 0:
            raise ValueError("no frames were compared")
        mse = self.squared_error / self.n_values
        return math.inf if mse == 0 else 10.0 * math.log10(self.config.data_range**2 / mse)

    @property
    def ssim(self) -> float:
        if self.n_frames == 0:
            raise ValueError("no frames were compared")
        return self.ssim_sum / self.n_frames

