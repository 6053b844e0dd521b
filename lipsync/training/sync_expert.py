"""Wav2Lip's expert lip-sync discriminator ``SyncNet_color`` (Prajwal et al., ACM MM 2020), frozen, as a loss.

Written from the paper and the released checkpoint's layout (``syncnet_color_keys.json``: 217 keys,
16,435,072 parameters): every block is Conv2d + BatchNorm2d + ReLU with an identity residual where the
shapes match (:class:`lipsync.scoring.wav2lip.ConvBlock`, the same block as the Wav2Lip generator).

* face stream: the lower halves of 5 consecutive 96×96 faces, BGR in [0, 1], stacked on channels
  (N, 15, 48, 96) -> 48×96 -> 46×47 -> 23×24 -> 12×12 -> 6×6 -> 3×3 -> 1×1 -> 512-d;
* audio stream: one mel segment (N, 1, 80, 16) (0.2 s) -> 27×16 -> 9×6 -> 3×3 -> 1×1 -> 512-d;
* both embeddings are ReLU outputs L2-normalised, so their cosine similarity lies in [0, 1] and is read as
  the probability that face and audio are in sync.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from lipsync.checkpoints import load_checked_state_dict, read_state_dict
from lipsync.scoring.wav2lip import ConvBlock
from lipsync.training.weights import WeightsSource, find_weights

SYNC_FRAMES = 5
SYNC_FACE_SIZE = (48, 96)  # lower half of a 96x96 Wav2Lip face

SYNC_EXPERT_SOURCE = WeightsSource(
    what="Wav2Lip lip-sync expert (lipsync_expert.pth)",
    flag="--sync-expert",
    env_var="LIPSYNC_SYNC_EXPERT",
    hub_repo="Nekochu/Wav2Lip",
    hub_filename="lipsync_expert.pth",
    elsewhere="the 'Expert Discriminator' link in the README of github.com/Rudrabha/Wav2Lip",
)


def _stream(*specs) -> nn.Sequential:
    """ConvBlocks from (cin, cout, kernel, stride, padding, residual) tuples."""
    return nn.Sequential(*[ConvBlock(cin, cout, k, s, p, residual=r) for cin, cout, k, s, p, r in specs])


def _residuals(channels: int, n: int):
    return [(channels, channels, 3, 1, 1, True)] * n


class SyncNetColor(nn.Module):
    """The expert. ``forward(audio, faces)``: audio (N, 1, 80, 16) mel; faces (N, 15, 48, 96) BGR in [0, 1]
    (:func:`sync_expert_input`); returns (audio_emb, face_emb), each (N, 512), unit length, ≥ 0."""

    def __init__(self):
        super().__init__()
        self.face_encoder = _stream(
            (15, 32, 7, 1, 3, False),
            (32, 64, 5, (1, 2), 1, False), *_residuals(64, 2),
            (64, 128, 3, 2, 1, False), *_residuals(128, 3),
            (128, 256, 3, 2, 1, False), *_residuals(256, 2),
            (256, 512, 3, 2, 1, False), *_residuals(512, 2),
            (512, 512, 3, 2, 1, False),
            (512, 512, 3, 1, 0, False),
            (512, 512, 1, 1, 0, False),
        )
        self.audio_encoder = _stream(
            (1, 32, 3, 1, 1, False), *_residuals(32, 2),
            (32, 64, 3, (3, 1), 1, False), *_residuals(64, 2),
            (64, 128, 3, 3, 1, False), *_residuals(128, 2),
            (128, 256, 3, (3, 2), 1, False), *_residuals(256, 2),
            (256, 512, 3, 1, 0, False),
            (512, 512, 1, 1, 0, False),
        )

    def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        audio_emb = F.normalize(self.audio_encoder(audio).flatten(1), p=2, dim=1)  # (N, 512)
        face_emb = F.normalize(self.face_encoder(faces).flatten(1), p=2, dim=1)  # (N, 512)
        return audio_emb, face_emb


def sync_expert_input(lower_halves: torch.Tensor, rgb: bool = True) -> torch.Tensor:
    """Our lower halves -> the expert's face input.

    lower_halves: (N, 5, 3, h, w) in [-1, 1] (e.g. the bottom 64×128 of 128×128 crops); rgb: channel order
    (flipped to the BGR the expert was trained on when True). Returns (N, 15, 48, 96) in [0, 1]: each frame
    area-resized to 48×96, frames stacked on channels in time order (frame 0's B, G, R first).
    """
    if lower_halves.ndim != 5 or lower_halves.shape[1] != SYNC_FRAMES or lower_halves.shape[2] != 3:
        raise ValueError(f"lower_halves must be (N, {SYNC_FRAMES}, 3, h, w), got {tuple(lower_halves.shape)}")
    n, t, c, h, w = lower_halves.shape
    frames = lower_halves.reshape(n * t, c, h, w)
    if rgb:
        frames = frames.flip(1)
    if (h, w) != SYNC_FACE_SIZE:
        frames = F.interpolate(frames, size=SYNC_FACE_SIZE, mode="area")
    frames = (frames + 1.0) / 2.0
    return frames.reshape(n, t * c, *SYNC_FACE_SIZE)


def load_sync_expert(path: Optional[os.PathLike | str] = None,
                     device: Optional[torch.device | str] = None) -> SyncNetColor:
    """The released expert (``lipsync_expert.pth``), frozen, in eval mode (BatchNorm uses its running stats).

    Args:
        path: the checkpoint (Wav2Lip's ``{"state_dict": ...}`` dict or a bare state dict; ``module.``
            prefixes are stripped); None -> env ``LIPSYNC_SYNC_EXPERT`` -> Hub ``Nekochu/Wav2Lip``.
        device: where to put it (default CPU).
    Raises WeightsUnavailableError (naming --sync-expert) or CheckpointMismatchError.
    """
    model = SyncNetColor()
    state = read_state_dict(find_weights(SYNC_EXPERT_SOURCE, path), what="the Wav2Lip lip-sync expert")
    load_checked_state_dict(model, state, what="the Wav2Lip lip-sync expert (SyncNet_color)",
                            hint="pass Wav2Lip's lipsync_expert.pth with --sync-expert")
    model.requires_grad_(False)
    return model.to(device or "cpu").eval()
