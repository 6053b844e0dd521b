"""Wav2Lip generator (Prajwal et al., "A Lip Sync Expert Is All You Need", ACM MM 2020).

The comparison baseline of the studio. Written from the paper and the state_dict layout of the public
checkpoints (``wav2lip_keys.json``: 352 keys, 36,298,035 parameters):

* face encoder over a 6-channel 96×96 image (masked target frame + reference frame), seven levels
  96 → 48 → 24 → 12 → 6 → 3 → 1;
* audio encoder over one mel window [B, 1, 80, 16] → [B, 512, 1, 1];
* decoder that starts from the audio embedding and upsamples with transposed convolutions, concatenating
  the face-encoder feature of the same resolution after every level (U-Net skips);
* output head conv → 1×1 conv to 3 channels → sigmoid.

Every block is Conv2d + BatchNorm2d + ReLU, with an identity residual where input and output match.

The module also holds the small checkpoint helpers (local path / env var / Hub download, ``module.``
prefix stripping, key-and-shape verification) that :mod:`lipsync.scoring.syncnet` reuses.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lipsync.checkpoints import load_checked_state_dict, read_state_dict
from lipsync.errors import WeightsUnavailableError

# Wav2Lip's fixed face geometry; the engine detects, crops with these pads and pastes back.
WAV2LIP_FACE_SIZE = 96
WAV2LIP_PADS = (0, 10, 0, 0)  # (top, bottom, left, right) pixels added to the detector box
WAV2LIP_MEL_STEP = 16  # mel frames per window (0.2 s)
WAV2LIP_BATCH_SIZE = 128  # inference.py's default wav2lip_batch_size

WAV2LIP_HUB_REPO = "Nekochu/Wav2Lip"
WAV2LIP_HUB_FILENAMES = {"wav2lip_gan": "wav2lip_gan.pth", "wav2lip": "wav2lip.pth"}
WAV2LIP_CHECKPOINT_ENV = "LIPSYNC_WAV2LIP_CHECKPOINT"
WAV2LIP_CHECKPOINT_FLAG = "--wav2lip-checkpoint"


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """Conv2d + BatchNorm2d, optional identity residual, then ReLU.

    The state_dict names are ``conv_block.0`` (conv) and ``conv_block.1`` (batch norm).
    """

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class ConvTransposeBlock(nn.Module):
    """ConvTranspose2d + BatchNorm2d + ReLU (decoder upsampling step)."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0, output_padding=0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _level(cin: int, cout: int, n_residual: int, **first) -> nn.Sequential:
    """One encoder level: a (strided) conv from cin to cout, then ``n_residual`` 3×3 residual convs."""
    blocks = [ConvBlock(cin, cout, **first)]
    blocks += [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(n_residual)]
    return nn.Sequential(*blocks)


def _up_level(cin: int, cout: int, n_residual: int, **first) -> nn.Sequential:
    """One decoder level: a transposed conv from cin to cout, then ``n_residual`` residual convs."""
    blocks = [ConvTransposeBlock(cin, cout, **first)]
    blocks += [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(n_residual)]
    return nn.Sequential(*blocks)


# ----------------------------------------------------------------------------------------------------
# The generator
# ----------------------------------------------------------------------------------------------------


class Wav2LipModel(nn.Module):
    """The public Wav2Lip generator.

    ``forward(audio_sequences, face_sequences)``:
      audio [B, 1, 80, 16] mel windows (or [B, T, 1, 80, 16]);
      face  [B, 6, 96, 96] in [0, 1] = [masked target (lower half zeroed), reference] (or [B, 6, T, 96, 96]);
      returns [B, 3, 96, 96] in (0, 1) (or [B, 3, T, 96, 96]). Channel order is whatever the caller fed
      (the released weights were trained on BGR, see :func:`wav2lip_infer`).
    """

    def __init__(self):
        super().__init__()
        up = dict(kernel_size=3, stride=2, padding=1, output_padding=1)
        # 96 → 96 → 48 → 24 → 12 → 6 → 3 → 1
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(6, 16, 7, 1, 3)),
            _level(16, 32, 2, kernel_size=3, stride=2, padding=1),
            _level(32, 64, 3, kernel_size=3, stride=2, padding=1),
            _level(64, 128, 2, kernel_size=3, stride=2, padding=1),
            _level(128, 256, 2, kernel_size=3, stride=2, padding=1),
            _level(256, 512, 1, kernel_size=3, stride=2, padding=1),
            nn.Sequential(ConvBlock(512, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)),
        ])
        # 80×16 → 27×16 → 9×6 → 3×3 → 1×1
        self.audio_encoder = nn.Sequential(
            *_level(1, 32, 2, kernel_size=3, stride=1, padding=1),
            *_level(32, 64, 2, kernel_size=3, stride=(3, 1), padding=1),
            *_level(64, 128, 2, kernel_size=3, stride=3, padding=1),
            *_level(128, 256, 1, kernel_size=3, stride=(3, 2), padding=1),
            ConvBlock(256, 512, 3, 1, 0),
            ConvBlock(512, 512, 1, 1, 0),
        )
        # input channels = previous decoder output + the face skip of the same size
        # 1 → 3 → 6 → 12 → 24 → 48 → 96
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(512, 512, 1, 1, 0)),
            _up_level(1024, 512, 1, kernel_size=3, stride=1, padding=0),
            _up_level(1024, 512, 2, **up),
            _up_level(768, 384, 2, **up),
            _up_level(512, 256, 2, **up),
            _up_level(320, 128, 2, **up),
            _up_level(160, 64, 2, **up),
        ])
        self.output_block = nn.Sequential(
            ConvBlock(80, 32, 3, 1, 1),
            nn.Conv2d(32, 3, 1, 1, 0),
            nn.Sigmoid(),
        )

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        # 1. Fold a time axis into the batch
        time_steps = None
        if face_sequences.dim() == 5:
            time_steps = face_sequences.size(2)
            audio_sequences = torch.cat(torch.unbind(audio_sequences, dim=1), dim=0)  # (T·B, 1, 80, 16)
            face_sequences = torch.cat(torch.unbind(face_sequences, dim=2), dim=0)  # (T·B, 6, 96, 96)

        # 2. Encode audio and face
        x = self.audio_encoder(audio_sequences)  # (B, 512, 1, 1)
        skips = []
        h = face_sequences
        for block in self.face_encoder_blocks:
            h = block(h)
            skips.append(h)

        # 3. Decode from the audio embedding, concatenating [h, skip] after every level
        for block in self.face_decoder_blocks:
            x = block(x)
            x = torch.cat([x, skips.pop()], dim=1)

        # 4. Output head
        out = self.output_block(x)  # (B, 3, 96, 96) in (0, 1)

        # 5. Unfold the time axis
        if time_steps is not None:
            out = torch.stack(torch.chunk(out, time_steps, dim=0), dim=2)  # (B, 3, T, 96, 96)
        return out


# ----------------------------------------------------------------------------------------------------
# Checkpoint helpers (shared with lipsync.scoring.syncnet)
# ----------------------------------------------------------------------------------------------------


def resolve_checkpoint(
    source: str | os.PathLike | None,
    *,
    env_var: str,
    repo_id: str,
    filename: str,
    flag: str,
    download: bool = True,
) -> Path | None:
    """Find a checkpoint file: ``source`` if given, else the path in ``env_var``, else the Hub.

    ``download=False`` only checks: a Hub file that is not cached yet but could be downloaded gives None.

    Raises WeightsUnavailableError naming the missing path, or the repo, file, flag and env var when the
    Hub download fails (offline, not found, ...); within seconds when the Hub is out of reach.
    """
    if source is None:
        source = os.environ.get(env_var) or None
        origin = f"the environment variable {env_var}"
    else:
        origin = flag
    if source is not None:
        path = Path(source).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"the checkpoint {str(path)!r} given by {origin} does not exist or is not a file; "
                f"pass an existing file with {flag} PATH or set {env_var}"
            )
        return path

    from lipsync.hub import hub_file

    return hub_file(repo_id, filename, what=f"the weights {filename}", download=download,
                    remedy=f"Download it yourself and pass {flag} PATH or set {env_var}=PATH.")


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_wav2lip_weights(source: str | os.PathLike | None = None, variant: str = "wav2lip_gan") -> None:
    """Raise WeightsUnavailableError within seconds when ``load_wav2lip(source, variant)`` cannot get its file
    (a missing path, or a Hub file that is neither cached nor downloadable now); download nothing."""
    resolve_checkpoint(source, env_var=WAV2LIP_CHECKPOINT_ENV, repo_id=WAV2LIP_HUB_REPO,
                       filename=WAV2LIP_HUB_FILENAMES[variant], flag=WAV2LIP_CHECKPOINT_FLAG, download=False)


def load_wav2lip(
    source: str | os.PathLike | None = None,
    variant: str = "wav2lip_gan",
    device: str | torch.device | None = None,
) -> Wav2LipModel:
    """Build a Wav2LipModel in eval mode with released weights.

    Args:
        source: checkpoint path; None → env ``LIPSYNC_WAV2LIP_CHECKPOINT`` → Hub ``Nekochu/Wav2Lip``.
        variant: ``"wav2lip_gan"`` (wav2lip_gan.pth) or ``"wav2lip"`` (wav2lip.pth); only used for the Hub.
        device: torch device; None → cuda if available else cpu.
    Raises WeightsUnavailableError (no file / download failed) or CheckpointMismatchError (wrong keys).
    """
    if variant not in WAV2LIP_HUB_FILENAMES:
        raise ValueError(f"unknown Wav2Lip variant {variant!r}; use one of {sorted(WAV2LIP_HUB_FILENAMES)}")
    path = resolve_checkpoint(
        source,
        env_var=WAV2LIP_CHECKPOINT_ENV,
        repo_id=WAV2LIP_HUB_REPO,
        filename=WAV2LIP_HUB_FILENAMES[variant],
        flag=WAV2LIP_CHECKPOINT_FLAG,
    )
    model = Wav2LipModel()
    load_checked_state_dict(model, read_state_dict(path, what="Wav2Lip"), what="Wav2Lip")
    return model.to(_pick_device(device)).eval()


# ----------------------------------------------------------------------------------------------------
# Inference on arrays
# ----------------------------------------------------------------------------------------------------


def faces_to_wav2lip_input(faces96: np.ndarray, references96: np.ndarray) -> torch.Tensor:
    """uint8 RGB (N, 96, 96, 3) targets + references → float (N, 6, 96, 96) in [0, 1], BGR channels.

    Channels 0-2: the target with its lower half (rows ≥ 48) zeroed; channels 3-5: the reference.
    The released weights were trained on cv2 (BGR) frames, so RGB is flipped to BGR here.
    """
    half = faces96.shape[1] // 2
    masked = faces96.copy()
    masked[:, half:] = 0
    stacked = np.concatenate([masked[..., ::-1], references96[..., ::-1]], axis=3)  # (N, 96, 96, 6) BGR
    return torch.from_numpy(np.ascontiguousarray(stacked)).permute(0, 3, 1, 2).float() / 255.0


def wav2lip_output_to_faces(out: torch.Tensor) -> np.ndarray:
    """float (N, 3, 96, 96) BGR in (0, 1) → uint8 RGB (N, 96, 96, 3); ×255 then truncation like Wav2Lip."""
    pixels = (out.detach().float().cpu().permute(0, 2, 3, 1).numpy() * 255.0).astype(np.uint8)
    return np.ascontiguousarray(pixels[..., ::-1])


@torch.no_grad()
def wav2lip_infer(
    model: Wav2LipModel,
    faces96: np.ndarray,
    mels: np.ndarray,
    batch_size: int = WAV2LIP_BATCH_SIZE,
    references96: np.ndarray | None = None,
) -> np.ndarray:
    """Lip-sync face crops to mel windows with Wav2Lip.

    Args:
        model: a Wav2LipModel (eval mode).
        faces96: (N, 96, 96, 3) uint8 **RGB** face crops (target frames).
        mels: (N, 80, 16) float mel windows, one per frame (the same mels Diff2Lip uses).
        batch_size: frames per forward pass.
        references96: (N, 96, 96, 3) uint8 RGB reference crops; default = ``faces96`` (Wav2Lip's
            inference.py uses the unmasked frame itself as the reference).
    Returns (N, 96, 96, 3) uint8 RGB generated faces. Internally the model is fed BGR (its training
    order) and the output is flipped back to RGB.
    """
    # 1. Check inputs
    faces96 = np.asarray(faces96)
    mels = np.asarray(mels)
    references96 = faces96 if references96 is None else np.asarray(references96)
    size = WAV2LIP_FACE_SIZE
    if faces96.dtype != np.uint8 or faces96.ndim != 4 or faces96.shape[1:] != (size, size, 3):
        raise ValueError(f"faces96 must be uint8 (N, {size}, {size}, 3), got {faces96.dtype} {faces96.shape}")
    if references96.shape != faces96.shape or references96.dtype != np.uint8:
        raise ValueError(f"references96 must match faces96 {faces96.shape} uint8, got {references96.shape}")
    if mels.ndim != 3 or mels.shape[1:] != (80, WAV2LIP_MEL_STEP) or len(mels) != len(faces96):
        raise ValueError(f"mels must be ({len(faces96)}, 80, {WAV2LIP_MEL_STEP}), got {mels.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")

    # 2. Batched forward passes
    param = next(model.parameters())
    outputs = []
    for start in range(0, len(faces96), batch_size):
        stop = start + batch_size
        face_in = faces_to_wav2lip_input(faces96[start:stop], references96[start:stop])  # (B, 6, 96, 96)
        mel_in = torch.from_numpy(np.ascontiguousarray(mels[start:stop], dtype=np.float32))[:, None]  # (B,1,80,16)
        out = model(mel_in.to(param.device, param.dtype), face_in.to(param.device, param.dtype))
        outputs.append(wav2lip_output_to_faces(out))

    # 3. Postprocess
    if not outputs:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.concatenate(outputs, axis=0)
