"""The sequential discriminator: judges 5 consecutive frames together, so flicker between frames is
penalised, not only per-frame realism (Diff2Lip's sequential adversarial loss).

The 5 frames are stacked on channels (N, 15, S, S) and fed to a PatchGAN-style convolutional network
(Isola et al. 2017): strided 4×4 convs with LeakyReLU(0.2) and GroupNorm (independent of the batch size, so
one and many processes train alike), ending in one real/fake logit per patch. Trained in alternation with
the diffusion model through :func:`lipsync.training.losses.gan_discriminator_loss` /
:func:`~lipsync.training.losses.gan_generator_loss` (non-saturating loss).
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import nn

SEQUENCE_FRAMES = 5


class SequentialDiscriminator(nn.Module):
    """PatchGAN over a 5-frame sequence.

    Args:
        num_frames: frames per sequence (5).
        base_channels: channels of the first conv, doubled per level up to 8×.
        num_layers: levels after the first conv (as pix2pix's ``n_layers``): the first conv and all but the last
            level halve the size, so a 128×128 sequence with 3 layers gives 14×14 logits, each seeing a
            70×70 patch; keep S / 2**num_layers >= 4.
        image_size: the frame size S it will judge, when known: ``num_layers`` is then lowered to fit
            (S / 2**num_layers >= 4) and other sizes are refused with a clear error.
    ``forward(seq)``: seq (N, num_frames, 3, S, S) in [-1, 1] -> logits (N, 1, h, w) (> 0 means "real").
    """

    def __init__(self, num_frames: int = SEQUENCE_FRAMES, base_channels: int = 64, num_layers: int = 3,
                 image_size: Optional[int] = None):
        super().__init__()
        if image_size is not None:
            if image_size < 16:
                raise ValueError(f"the sequential discriminator needs frames of at least 16x16, got {image_size}")
            num_layers = max(1, min(num_layers, int(math.log2(image_size)) - 2))
        self.num_frames = num_frames
        self.image_size = image_size
        self.config = dict(num_frames=num_frames, base_channels=base_channels, num_layers=num_layers,
                           image_size=image_size)
        layers: List[nn.Module] = [
            nn.Conv2d(3 * num_frames, base_channels, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        channels = base_channels
        for level in range(1, num_layers + 1):
            out = base_channels * min(2 ** level, 8)
            stride = 2 if level < num_layers else 1
            layers += [
                nn.Conv2d(channels, out, kernel_size=4, stride=stride, padding=1),
                nn.GroupNorm(min(32, out // 4), out),
                nn.LeakyReLU(0.2),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, kernel_size=4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        if seq.ndim != 5 or seq.shape[1] != self.num_frames or seq.shape[2] != 3:
            raise ValueError(f"the discriminator takes (N, {self.num_frames}, 3, S, S) sequences, got {tuple(seq.shape)}")
        n, t, c, h, w = seq.shape
        if self.image_size is not None and (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"the discriminator was built for {self.image_size}x{self.image_size} frames, got {h}x{w}")
        return self.net(seq.reshape(n, t * c, h, w))
