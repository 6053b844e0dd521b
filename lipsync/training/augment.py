"""Reference-frame augmentation (``python -m lipsync.train --reference-augment P``).

The reference frame shows the speaker's mouth from another moment of the clip. With the reference pasted pixel
for pixel into its input, a small model can lower L_simple by copying the reference's lower half (and the
known upper face) and never use the mel. Jittering the reference a little (scale, position, colour) keeps its
identity and appearance but makes pixel copying a worse answer than drawing the mouth the audio asks for.

Each sample of a batch is augmented with probability P, with its own draws from ``(seed, g, step)`` (the run's
seed, the global sample index, the optimiser step; :mod:`lipsync.training.sampling`), so a resumed run and any
number of processes or accumulation steps augment exactly as the uninterrupted run does. The work is two
batched ops on the training device (``affine_grid`` + ``grid_sample``, then the colour arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of the grey image used by the saturation jitter


@dataclass(frozen=True)
class ReferenceJitter:
    """The ranges of the jitter, each drawn uniformly per augmented sample.

    scale: zoom factor in [1 − scale, 1 + scale]; shift: translation in [−shift, shift] of the image side, per
    axis; brightness: added in [−brightness, brightness] (of the [0, 1] range); contrast, saturation: factors in
    [1 − c, 1 + c] about the image's mean grey and each pixel's grey.
    """

    scale: float = 0.05
    shift: float = 0.04
    brightness: float = 0.06
    contrast: float = 0.1
    saturation: float = 0.1


DEFAULT_JITTER = ReferenceJitter()


def reference_jitter_draws(seed: int, indices: Sequence[int], step: int, p: float,
                           jitter: ReferenceJitter = DEFAULT_JITTER) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per sample: whether its reference is augmented (B,) bool, and its draws (B, 6) float32 = (scale, shift x,
    shift y, brightness, contrast factor, saturation factor). Each sample's numbers come from its own stream of
    ``(seed, g, step)``, independent of the noise and of audio dropout."""
    flags, draws = [], []
    for g in indices:
        rng = np.random.default_rng([int(seed), 0x2EF06, int(g), int(step) & 0xFFFFFFFF])
        flags.append(rng.random() < p)
        u = rng.uniform(-1.0, 1.0, size=6)
        draws.append([1 + jitter.scale * u[0], jitter.shift * u[1], jitter.shift * u[2], jitter.brightness * u[3],
                      1 + jitter.contrast * u[4], 1 + jitter.saturation * u[5]])
    return torch.tensor(flags, dtype=torch.bool), torch.tensor(draws, dtype=torch.float32)


def jitter_images(images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Apply :func:`reference_jitter_draws`' draws (B, 6) to images (B, 3, S, S) in [-1, 1] -> (B, 3, S, S) in
    [-1, 1]: zoom and shift (bilinear, borders repeated), then contrast, saturation and brightness."""
    draws = draws.to(images.device, torch.float32)
    b = images.shape[0]
    scale, tx, ty = draws[:, 0], draws[:, 1], draws[:, 2]
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale  # output pixel -> input pixel: zoom in by `scale`
    theta[:, 0, 2], theta[:, 1, 2] = -2.0 * tx, -2.0 * ty  # grid units: the side is 2 long
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = (moved + 1) / 2  # (B, 3, S, S) in [0, 1]
    luma = torch.tensor(LUMA, device=images.device).view(1, 3, 1, 1)
    grey = (x * luma).sum(dim=1, keepdim=True)  # (B, 1, S, S)
    mean = grey.mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
    x = (x - mean) * draws[:, 4].view(b, 1, 1, 1) + mean
    grey = (x * luma).sum(dim=1, keepdim=True)
    x = grey + (x - grey) * draws[:, 5].view(b, 1, 1, 1)
    x = x + draws[:, 3].view(b, 1, 1, 1)
    return (x.clamp(0, 1) * 2 - 1).to(images.dtype)


def augment_references(references: torch.Tensor, seed: int, indices: Sequence[int], step: int, p: float,
                       jitter: ReferenceJitter = DEFAULT_JITTER) -> torch.Tensor:
    """The batch's reference frames (B, 3, S, S) in [-1, 1] with those of the samples drawn (probability ``p``)
    jittered by :func:`jitter_images`. ``p`` = 0 or ``step`` < 0 (the trainer's fixed validation draw) returns
    ``references`` itself."""
    if p <= 0 or step < 0:
        return references
    flags, draws = reference_jitter_draws(seed, indices, step, p, jitter)
    if not bool(flags.any()):
        return references
    augmented = jitter_images(references, draws)
    return torch.where(flags.to(references.device)[:, None, None, None], augmented, references)
