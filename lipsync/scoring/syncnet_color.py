"""Wav2Lip's lip-sync expert architecture ``SyncNet_color`` (Prajwal et al., ACM MM 2020), and the lip-sync score
of an expert of that architecture that this project trains itself (``python -m lipsync.train_syncnet``).

Written from the paper and the released checkpoint's layout (``syncnet_color_keys.json``: 217 keys,
16,435,072 parameters): every block is Conv2d + BatchNorm2d + ReLU with an identity residual where the
shapes match (:class:`lipsync.scoring.wav2lip.ConvBlock`, the same block as the Wav2Lip generator).

* face stream: the lower halves of 5 consecutive 96×96 faces, BGR in [0, 1], stacked on channels
  (N, 15, 48, 96) -> 48×96 -> 46×47 -> 23×24 -> 12×12 -> 6×6 -> 3×3 -> 1×1 -> 512-d;
* audio stream: one mel segment (N, 1, 80, 16) (0.2 s) -> 27×16 -> 9×6 -> 3×3 -> 1×1 -> 512-d;
* both embeddings are ReLU outputs L2-normalised, so their cosine similarity lies in [0, 1] and is read as
  the probability that face and audio are in sync.

The score (:func:`expert_sync_score`) is shaped like LSE-D/LSE-C but is NOT comparable to published LSE figures:
it comes from an expert trained here on a few minutes of video, and it is labelled "own expert" everywhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lipsync.errors import CheckpointMismatchError
from lipsync.media import audio as audio_io
from lipsync.scoring.wav2lip import ConvBlock

SYNC_FRAMES = 5
SYNC_FACE_SIZE = (48, 96)  # lower half of a 96x96 Wav2Lip face
SYNC_COLUMNS = audio_io.DEFAULT_AUDIO.mel_step_size  # 16 mel columns = 0.2 s
OWN_EXPERT_WEIGHTS = "expert.safetensors"  # what python -m lipsync.train_syncnet writes, beside expert.json
OWN_EXPERT_LABEL = "own expert"


def _stream(*specs) -> nn.Sequential:
    """ConvBlocks from (cin, cout, kernel, stride, padding, residual) tuples."""
    return nn.Sequential(*[ConvBlock(cin, cout, k, s, p, residual=r) for cin, cout, k, s, p, r in specs])


def _residuals(channels: int, n: int):
    return [(channels, channels, 3, 1, 1, True)] * n


class SyncNetColor(nn.Module):
    """The expert. ``forward(audio, faces)``: audio (N, 1, 80, 16) mel; faces (N, 15, 48, 96) BGR in [0, 1]
    (:func:`sync_expert_input`); returns (audio_emb, face_emb), each (N, 512 * width), unit length, ≥ 0.

    ``width`` scales every layer's channels (1: Wav2Lip's expert, key for key; 0.5 costs a quarter of the
    compute, for training an own expert on a CPU).
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.width = float(width)
        c = self.channels
        self.face_encoder = _stream(
            (15, c(32), 7, 1, 3, False),
            (c(32), c(64), 5, (1, 2), 1, False), *_residuals(c(64), 2),
            (c(64), c(128), 3, 2, 1, False), *_residuals(c(128), 3),
            (c(128), c(256), 3, 2, 1, False), *_residuals(c(256), 2),
            (c(256), c(512), 3, 2, 1, False), *_residuals(c(512), 2),
            (c(512), c(512), 3, 2, 1, False),
            (c(512), c(512), 3, 1, 0, False),
            (c(512), c(512), 1, 1, 0, False),
        )
        self.audio_encoder = _stream(
            (1, c(32), 3, 1, 1, False), *_residuals(c(32), 2),
            (c(32), c(64), 3, (3, 1), 1, False), *_residuals(c(64), 2),
            (c(64), c(128), 3, 3, 1, False), *_residuals(c(128), 2),
            (c(128), c(256), 3, (3, 2), 1, False), *_residuals(c(256), 2),
            (c(256), c(512), 3, 1, 0, False),
            (c(512), c(512), 1, 1, 0, False),
        )

    def channels(self, n: int) -> int:
        """Channels of a layer that has ``n`` in Wav2Lip's expert."""
        return max(4, int(round(n * self.width)))

    @staticmethod
    def width_of(state_dict) -> float:
        """The ``width`` of the expert whose weights are ``state_dict`` (read off its first layer)."""
        return state_dict["face_encoder.0.conv_block.0.weight"].shape[0] / 32

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


def sync_column(start_frame: int, fps) -> int:
    """First mel column of the 0.2 s segment of a window starting at ``start_frame``: floor(80 * t) with
    t = start_frame / fps (Wav2Lip's ``crop_audio_window``)."""
    return int(audio_io.DEFAULT_AUDIO.mel_rate * int(start_frame) // Fraction(fps))


def faces_to_expert_input(faces: np.ndarray) -> torch.Tensor:
    """Face crops -> the expert's face input, one per 5-frame window.

    faces: (W, 5, S, S, 3) uint8 RGB crops (the engine's square face crops, any S). Returns (W, 15, 48, 96) in
    [0, 1]: the lower half of each crop, as :func:`sync_expert_input` makes it.
    """
    faces = torch.from_numpy(np.array(faces, np.uint8)).permute(0, 1, 4, 2, 3).float()  # (W, 5, 3, S, S)
    lower = faces[:, :, :, faces.shape[3] // 2:] / 127.5 - 1.0
    return sync_expert_input(lower, rgb=True)


def load_own_expert(path, device: Optional[torch.device | str] = None) -> SyncNetColor:
    """An expert written by ``python -m lipsync.train_syncnet``: its output folder (``expert.safetensors``) or
    the ``.safetensors`` file itself; frozen, in eval mode. Raises CheckpointMismatchError with the remedy."""
    from safetensors.torch import load_file

    from lipsync.checkpoints import load_checked_state_dict

    path = Path(path)
    file = path / OWN_EXPERT_WEIGHTS if path.is_dir() else path
    if not file.is_file():
        raise CheckpointMismatchError(f"{file} does not exist; pass the folder written by python -m "
                                      "lipsync.train_syncnet --output DIR (it holds expert.safetensors)")
    try:
        state = load_file(os.fspath(file))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointMismatchError(f"{file} could not be read as safetensors ({exc}); train the expert again "
                                      "with python -m lipsync.train_syncnet") from exc
    try:
        model = SyncNetColor(width=SyncNetColor.width_of(state))
    except KeyError:
        model = SyncNetColor()  # not this architecture: the key check below says how
    load_checked_state_dict(model, state, what="the lip-sync expert (SyncNet_color)",
                            hint="pass an expert written by python -m lipsync.train_syncnet")
    model.requires_grad_(False)
    return model.to(device or "cpu").eval()


def own_expert_info(path) -> dict:
    """The ``expert.json`` beside an own expert's weights (what it was trained on and how well), or {}."""
    path = Path(path)
    info = (path if path.is_dir() else path.parent) / "expert.json"
    return json.loads(info.read_text()) if info.is_file() else {}


@dataclass(frozen=True)
class ExpertSyncScore:
    """The own expert's lip-sync score of a clip, shaped like LSE (not comparable to published LSE figures).

    offset: the offset (frames, LSE's sign: negative when the audio lags the video) with the smallest mean
    distance; confidence: median over offsets of the mean distance minus its minimum (higher: surer);
    distance: the minimum mean distance; distance_at_0: the mean distance at offset 0; dists: mean distance per
    offset −max_offset..+max_offset; windows: 5-frame windows scored.
    """

    offset: int
    confidence: float
    distance: float
    distance_at_0: float
    dists: np.ndarray
    windows: int

    def as_dict(self) -> dict:
        return {"offset": self.offset, "confidence": self.confidence, "distance": self.distance,
                "distance_at_0": self.distance_at_0, "windows": self.windows, "label": OWN_EXPERT_LABEL}


@torch.no_grad()
def expert_embeddings(expert: SyncNetColor, faces: np.ndarray, mel: np.ndarray, fps, batch_size: int = 64
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face embeddings of every 5-frame window and audio embeddings of every window start.

    faces: (N, S, S, 3) uint8 RGB crops of consecutive frames; mel: (80, T) of the speech
    (``lipsync.media.audio.melspectrogram``); fps: the clip's frame rate.
    Returns (face_emb (W, 512), audio_emb (A, 512), audio_ok (A,) bool): window w covers frames w..w+4; audio
    embedding a is the segment starting at frame a's time (zeros and False where it runs past the audio).
    """
    device = next(iter(expert.parameters()), torch.zeros(())).device
    n = len(faces)
    if n < SYNC_FRAMES:
        raise ValueError(f"at least {SYNC_FRAMES} frames are needed to score lip sync, got {n}")
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(faces), SYNC_FRAMES, axis=0)  # (W, S, S, 3, 5)
    windows = np.moveaxis(windows, -1, 1)  # (W, 5, S, S, 3)
    face_emb = []
    for i in range(0, len(windows), batch_size):
        x = faces_to_expert_input(windows[i:i + batch_size]).to(device)
        face_emb.append(expert.face_encoder(x).flatten(1))
    face_emb = F.normalize(torch.cat(face_emb), dim=1).cpu().numpy()
    columns = [sync_column(a, fps) for a in range(n)]
    audio_ok = np.array([c + SYNC_COLUMNS <= mel.shape[1] for c in columns])
    segments = np.stack([mel[:, c:c + SYNC_COLUMNS] if ok else np.zeros((mel.shape[0], SYNC_COLUMNS), np.float32)
                         for c, ok in zip(columns, audio_ok)]).astype(np.float32)[:, None]  # (A, 1, 80, 16)
    audio_emb = []
    for i in range(0, len(segments), batch_size):
        audio_emb.append(expert.audio_encoder(torch.from_numpy(segments[i:i + batch_size]).to(device)).flatten(1))
    audio_emb = F.normalize(torch.cat(audio_emb), dim=1).cpu().numpy()
    return face_emb, audio_emb, audio_ok


def expert_sync_score(expert: SyncNetColor, faces: np.ndarray, mel: np.ndarray, fps, max_offset: int = 15
                      ) -> ExpertSyncScore:
    """Score lip sync with an own expert, shaped like LSE: for every 5-frame window w and offset o in
    −max_offset..+max_offset, the distance between the face embedding of w and the audio embedding of the
    segment starting at frame w − o (so o < 0 means the sound comes later than the picture, as LSE's sign);
    offsets whose audio runs outside the clip are left out of that window's mean.

    faces: (N, S, S, 3) uint8 RGB face crops of consecutive frames; mel: (80, T) of the speech; fps: frame rate.
    """
    face_emb, audio_emb, audio_ok = expert_embeddings(expert, faces, mel, fps)
    offsets = np.arange(-max_offset, max_offset + 1)
    n_windows, n_audio = len(face_emb), len(audio_emb)
    dists = np.full((n_windows, len(offsets)), np.nan)
    for j, o in enumerate(offsets):
        a = np.arange(n_windows) - o
        ok = (a >= 0) & (a < n_audio)
        ok[ok] &= audio_ok[a[ok]]
        dists[ok, j] = np.linalg.norm(face_emb[ok] - audio_emb[a[ok]], axis=1)
    counted = ~np.isnan(dists).any(axis=1)  # windows that have every offset: the same windows for each offset
    if not counted.any():
        counted = ~np.isnan(dists[:, max_offset])
        if not counted.any():
            raise ValueError("the speech is too short for the clip's frames; no window could be scored")
    mean = np.nanmean(dists[counted], axis=0)
    best = int(np.nanargmin(mean))
    return ExpertSyncScore(offset=int(offsets[best]), confidence=float(np.nanmedian(mean) - mean[best]),
                           distance=float(mean[best]), distance_at_0=float(mean[max_offset]), dists=mean,
                           windows=int(counted.sum()))
