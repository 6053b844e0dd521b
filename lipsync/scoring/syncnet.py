"""SyncNet (Chung & Zisserman, "Out of Time", ACCV-W 2016) and the LSE-D / LSE-C lip-sync metrics.

``SyncNetV2`` is the two-stream network stored in ``syncnet_v2.model`` (syncnet_python's
``SyncNetModel.S(num_layers_in_fc_layers=1024)``; layout in ``syncnet_v2_keys.json``: 102 keys,
13,631,616 parameters). It is written here from the paper and that key layout.

Evaluation recipe (the one LSE-D / LSE-C are published with, Prajwal et al. 2020):

* video: 224×224 face-track crops at 25 fps, fed as BGR pixel values 0..255 (no normalisation);
  window v = frames v..v+4 → [B, 3, 5, 224, 224];
* audio: 16 kHz int16 samples → MFCC (13 cepstra, 100 frames/s, python_speech_features' definition,
  see :func:`mfcc`); window v = MFCC frames 4v..4v+19 → [B, 1, 13, 20];
* windows v = 0 .. min_length − 6 with min_length = min(#frames, #samples // 640);
* distances: see :func:`compute_lse`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft
import scipy.signal
import torch
from torch import nn

from lipsync.checkpoints import load_checked_state_dict, read_state_dict
from lipsync.errors import AudioTooShortError
from lipsync.scoring.wav2lip import _pick_device, resolve_checkpoint

SYNCNET_HUB_REPO = "ByteDance/LatentSync-1.5"
SYNCNET_HUB_FILENAME = "auxiliary/syncnet_v2.model"
SYNCNET_CHECKPOINT_ENV = "LIPSYNC_SYNCNET_CHECKPOINT"
SYNCNET_CHECKPOINT_FLAG = "--syncnet-checkpoint"


@dataclass(frozen=True)
class SyncNetConfig:
    """The evaluation recipe's constants."""

    fps: float = 25.0
    sample_rate: int = 16000
    crop_size: int = 224  # face-track crop side, pixels
    crop_scale: float = 0.40  # run_pipeline's crop_scale: extra margin around the detector box
    video_window: int = 5  # frames per video window
    mfcc_window: int = 20  # MFCC frames per audio window (0.2 s)
    mfcc_per_frame: int = 4  # 100 MFCC frames/s ÷ 25 video frames/s
    samples_per_frame: int = 640  # 16000 / 25
    vshift: int = 15  # offsets −15..+15 frames
    batch_size: int = 20


SYNCNET_CONFIG = SyncNetConfig()


# ----------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------


def _conv_bn_relu(conv: nn.Module, channels: int, bn=nn.BatchNorm2d) -> list[nn.Module]:
    return [conv, bn(channels), nn.ReLU(inplace=True)]


def _fc_head(dim_in: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim_in, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, dim_out)
    )


class SyncNetV2(nn.Module):
    """Two-stream SyncNet: MFCC windows and 5-frame face clips → ``embedding_dim`` embeddings.

    ``forward_aud(mfcc)``: [B, 1, 13, 20] MFCC window → [B, embedding_dim].
    ``forward_lip(video)``: [B, 3, 5, 224, 224] BGR 0..255 → [B, embedding_dim].
    Embeddings are not normalised; sync is measured by Euclidean distance.
    """

    def __init__(self, embedding_dim: int = 1024):
        super().__init__()
        conv2 = nn.Conv2d
        # audio: 13×20 → 13×20 → 11×9 → 5×4 → 1×1
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu(conv2(1, 64, 3, 1, 1), 64),
            nn.MaxPool2d(1, 1),
            *_conv_bn_relu(conv2(64, 192, 3, 1, 1), 192),
            nn.MaxPool2d(3, (1, 2)),
            *_conv_bn_relu(conv2(192, 384, 3, 1, 1), 384),
            *_conv_bn_relu(conv2(384, 256, 3, 1, 1), 256),
            *_conv_bn_relu(conv2(256, 256, 3, 1, 1), 256),
            nn.MaxPool2d(3, 2),
            *_conv_bn_relu(conv2(256, 512, (5, 4), 1, 0), 512),
        )
        self.netfcaud = _fc_head(512, embedding_dim)
        self.netfclip = _fc_head(512, embedding_dim)
        bn3 = nn.BatchNorm3d
        # lips: 5×224×224 → 1×109×109 → 54 → 26 → 13 → 13 → 6 → 1×1×1
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), 96, bn3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, bn3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)), 256, bn3),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)), 256, bn3),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)), 256, bn3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(256, 512, (1, 6, 6), 1, 0), 512, bn3),
        )

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        h = self.netcnnaud(mfcc)  # (B, 512, 1, 1)
        return self.netfcaud(h.flatten(1))  # (B, D)

    def forward_lip(self, video: torch.Tensor) -> torch.Tensor:
        h = self.netcnnlip(video)  # (B, 512, 1, 1, 1)
        return self.netfclip(h.flatten(1))  # (B, D)

    def forward(self, mfcc: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_aud(mfcc), self.forward_lip(video)


def check_syncnet_weights(source: str | os.PathLike | None = None) -> None:
    """Raise WeightsUnavailableError within seconds when ``load_syncnet(source)`` cannot get its file
    (a missing path, or a Hub file that is neither cached nor downloadable now); download nothing."""
    resolve_checkpoint(source, env_var=SYNCNET_CHECKPOINT_ENV, repo_id=SYNCNET_HUB_REPO,
                       filename=SYNCNET_HUB_FILENAME, flag=SYNCNET_CHECKPOINT_FLAG, download=False)


def load_syncnet(source: str | os.PathLike | None = None, device: str | torch.device | None = None) -> SyncNetV2:
    """Build SyncNetV2 in eval mode with the released ``syncnet_v2.model`` weights.

    Args:
        source: checkpoint path; None → env ``LIPSYNC_SYNCNET_CHECKPOINT`` → Hub
            ``ByteDance/LatentSync-1.5`` file ``auxiliary/syncnet_v2.model``.
        device: torch device; None → cuda if available else cpu.
    The file is a plain name → tensor dict (a ``state_dict`` wrapper and ``module.`` prefixes are also
    accepted), loaded with ``weights_only=True``. Raises WeightsUnavailableError / CheckpointMismatchError.
    """
    path = resolve_checkpoint(
        source,
        env_var=SYNCNET_CHECKPOINT_ENV,
        repo_id=SYNCNET_HUB_REPO,
        filename=SYNCNET_HUB_FILENAME,
        flag=SYNCNET_CHECKPOINT_FLAG,
    )
    model = SyncNetV2()
    load_checked_state_dict(model, read_state_dict(path, what="SyncNet v2"), what="SyncNet v2")
    return model.to(_pick_device(device)).eval()


# ----------------------------------------------------------------------------------------------------
# MFCC (python_speech_features.mfcc's definition, default parameters)
# ----------------------------------------------------------------------------------------------------


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_triangle_filterbank(n_filters: int = 26, nfft: int = 512, sample_rate: int = 16000) -> np.ndarray:
    """(n_filters, nfft//2 + 1) triangular filters, edges equally spaced on the HTK mel scale over
    0..sample_rate/2 and snapped to FFT bins with floor((nfft + 1)·f / sample_rate); peak 1, not
    area-normalised."""
    edges_hz = _mel_to_hz(np.linspace(0.0, _hz_to_mel(sample_rate / 2), n_filters + 2))
    edges = np.floor((nfft + 1) * edges_hz / sample_rate)
    bins = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (bins - lo) / np.where(mid > lo, mid - lo, 1.0)
    fall = (hi - bins) / np.where(hi > mid, hi - mid, 1.0)
    return np.where((bins >= lo) & (bins < mid), rise, 0.0) + np.where((bins >= mid) & (bins < hi), fall, 0.0)


def mfcc(
    signal: np.ndarray,
    sample_rate: int = 16000,
    win_length_s: float = 0.025,
    hop_length_s: float = 0.01,
    n_cepstra: int = 13,
    n_filters: int = 26,
    nfft: int = 512,
    preemphasis: float = 0.97,
    lifter: int = 22,
    append_energy: bool = True,
) -> np.ndarray:
    """MFCC features, (T, n_cepstra) float64, to python_speech_features.mfcc's definition.

    Args:
        signal: 1-D samples **in the scale the recipe uses** (SyncNet: int16 values, not [-1, 1]).
    Steps: pre-emphasis y[n] = x[n] − 0.97·x[n−1] (y[0] = x[0]); frames of 400 samples every 160
    (T = 1 + ceil((len − 400) / 160), the last frame zero-padded; one frame if len ≤ 400), rectangular
    window; power spectrum |rfft(frame, 512)|² / 512; 26 mel filters; log (zeros → machine epsilon);
    orthonormal DCT-II, first 13; sinusoidal lifter 1 + (22/2)·sin(πn/22); c0 replaced by log frame energy.
    """
    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise AudioTooShortError("the audio is empty; at least 0.2 s of speech is needed")
    # 1. Pre-emphasis
    x = np.concatenate([x[:1], x[1:] - preemphasis * x[:-1]])
    # 2. Framing (round-half-up of seconds × rate)
    frame_len = int(math.floor(win_length_s * sample_rate + 0.5))
    hop = int(math.floor(hop_length_s * sample_rate + 0.5))
    n_frames = 1 if x.size <= frame_len else 1 + int(math.ceil((x.size - frame_len) / hop))
    x = np.concatenate([x, np.zeros((n_frames - 1) * hop + frame_len - x.size)])
    frames = np.lib.stride_tricks.sliding_window_view(x, frame_len)[::hop][:n_frames]  # (T, 400)
    # 3. Power spectrum and energies
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft  # (T, 257)
    eps = np.finfo(np.float64).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    fbank = power @ mel_triangle_filterbank(n_filters, nfft, sample_rate).T  # (T, 26)
    fbank = np.where(fbank == 0, eps, fbank)
    # 4. Cepstra, lifter, energy
    cep = scipy.fft.dct(np.log(fbank), type=2, axis=1, norm="ortho")[:, :n_cepstra]
    if lifter > 0:
        cep = cep * (1.0 + (lifter / 2.0) * np.sin(np.pi * np.arange(n_cepstra) / lifter))
    if append_energy:
        cep[:, 0] = np.log(energy)
    return cep


def wav_to_int16_scale(wav: np.ndarray) -> np.ndarray:
    """float waveform in [-1, 1] → float64 int16 sample values (×32768, rounded, clipped), as the recipe's
    scipy.io.wavfile read of an int16 WAV gives them."""
    return np.clip(np.round(np.asarray(wav, dtype=np.float64) * 32768.0), -32768, 32767)


# ----------------------------------------------------------------------------------------------------
# LSE-D / LSE-C
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncScore:
    """Result of a SyncNet evaluation.

    offset: AV offset in frames (vshift − argmin); min_dist: LSE-D; confidence: LSE-C;
    dists: (2·vshift + 1,) mean distance per offset −vshift..+vshift;
    frame_dists: (T, 2·vshift + 1) distance of every video window at every offset.
    """

    offset: int
    min_dist: float
    confidence: float
    dists: np.ndarray
    frame_dists: np.ndarray

    @property
    def lse_d(self) -> float:
        return self.min_dist

    @property
    def lse_c(self) -> float:
        return self.confidence


def compute_lse(
    video_emb: np.ndarray, audio_emb: np.ndarray, vshift: int = SYNCNET_CONFIG.vshift, eps: float = 1e-6
) -> SyncScore:
    """LSE-D / LSE-C from per-window embeddings (syncnet_python's ``calc_pdist`` + ``evaluate``).

    Args:
        video_emb: (T, D) lip embeddings, one per 5-frame window.
        audio_emb: (T', D) audio embeddings, one per window (T' = T in the recipe).
        vshift: largest offset tried, in frames.
        eps: torch.pairwise_distance's epsilon, d(a, b) = ‖a − b + eps‖₂ (kept for parity).
    For every video window t and offset o in −vshift..+vshift: d[t, o] = dist(video_emb[t], audio_emb[t + o]),
    where an audio index outside 0..T'−1 reads a **zero vector** (the recipe zero-pads the audio
    embeddings by vshift at both ends). mean_o = mean over t of d[t, o];
    LSE-D = min_o mean_o; LSE-C = median_o(mean_o) − LSE-D; offset = vshift − argmin (index into
    −vshift..+vshift). Sign: if audio_emb[t + k] matches video_emb[t] (the sound of frame t comes k frames
    later, i.e. the audio lags the video) the reported offset is −k.
    """
    video_emb = np.asarray(video_emb, dtype=np.float64)
    audio_emb = np.asarray(audio_emb, dtype=np.float64)
    if video_emb.ndim != 2 or audio_emb.ndim != 2 or video_emb.shape[1] != audio_emb.shape[1]:
        raise ValueError(f"embeddings must be (T, D) and (T', D), got {video_emb.shape} and {audio_emb.shape}")
    if len(video_emb) == 0:
        raise ValueError("no video windows to score (need at least 6 frames)")
    n_video, dim = video_emb.shape
    n_offsets = 2 * vshift + 1
    # 1. Zero-pad the audio so row t + o + vshift holds audio_emb[t + o] (or zeros)
    n_padded = max(len(audio_emb), n_video) + 2 * vshift
    padded = np.zeros((n_padded, dim))
    padded[vshift : vshift + len(audio_emb)] = audio_emb
    # 2. Distance of every window at every offset
    windows = np.lib.stride_tricks.sliding_window_view(padded, n_offsets, axis=0)[:n_video]  # (T, D, 2v+1)
    frame_dists = np.linalg.norm(video_emb[:, :, None] - windows + eps, axis=1)  # (T, 2v+1)
    # 3. Mean per offset, minimum, median
    dists = frame_dists.mean(axis=0)
    min_idx = int(np.argmin(dists))
    min_dist = float(dists[min_idx])
    return SyncScore(
        offset=vshift - min_idx,
        min_dist=min_dist,
        confidence=float(np.median(dists) - min_dist),
        dists=dists,
        frame_dists=frame_dists,
    )


# ----------------------------------------------------------------------------------------------------
# Frames → crops → embeddings → score
# ----------------------------------------------------------------------------------------------------


def resample_frame_indices(n_frames: int, fps: float, target_fps: float = SYNCNET_CONFIG.fps) -> np.ndarray:
    """Source frame index for every output frame at ``target_fps`` (nearest frame in time).

    round(n_frames · target_fps / fps) output frames; output k shows source round(k · fps / target_fps),
    clipped to the last frame. Identity when fps == target_fps.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if abs(fps - target_fps) < 1e-6:
        return np.arange(n_frames)
    n_out = int(round(n_frames * target_fps / fps))
    return np.minimum(np.floor(np.arange(n_out) * fps / target_fps + 0.5).astype(np.int64), n_frames - 1)


def smooth_face_track(boxes: np.ndarray, kernel_size: int = 13) -> np.ndarray:
    """The recipe's track smoothing: (N, 4) x1,y1,x2,y2 → (N, 4) square boxes of half-size
    s = max(w, h)/2 around the box centre, with s, cx and cy each median-filtered over ``kernel_size``
    frames (scipy.signal.medfilt, zero-padded ends as in syncnet_python's run_pipeline; tracks shorter
    than the kernel use the largest odd kernel that fits — the recipe never sees them, its minimum track
    is 100 frames)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    # a track shorter than the kernel would be mostly zero padding: shrink the kernel to the largest odd ≤ N
    kernel_size = min(kernel_size, len(boxes) if len(boxes) % 2 else len(boxes) - 1)
    if kernel_size > 1:
        half, cx, cy = (scipy.signal.medfilt(v, kernel_size=kernel_size) for v in (half, cx, cy))
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def crop_syncnet_faces(
    frames: np.ndarray,
    boxes: np.ndarray,
    crop_scale: float = SYNCNET_CONFIG.crop_scale,
    size: int = SYNCNET_CONFIG.crop_size,
    smooth: bool = True,
) -> np.ndarray:
    """The recipe's face-track crop (syncnet_python run_pipeline): (N, H, W, 3) frames + (N, 4) x1,y1,x2,y2
    boxes → (N, size, size, 3) crops, same dtype/channel order as ``frames``.

    With ``smooth`` the boxes first go through :func:`smooth_face_track` (pass ``smooth=False`` with boxes
    already smoothed over the whole track when cropping chunk by chunk). With s = max(w, h)/2 and the box
    centre (cx, cy), the frame is padded by int(s·(1 + 2·crop_scale)) with value 110 and the crop spans rows
    [cy − s, cy + s·(1 + 2·crop_scale)) and columns cx ± s·(1 + crop_scale) (more room below the face for
    the mouth and chin), resized bilinearly to size².
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if len(frames) != len(boxes) or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"need one x1,y1,x2,y2 box per frame, got {boxes.shape} for {len(frames)} frames")
    if smooth:
        boxes = smooth_face_track(boxes)
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    crops = np.empty((len(frames), size, size, frames.shape[-1]), dtype=frames.dtype)
    for i, frame in enumerate(frames):
        s = half[i]
        pad = int(s * (1 + 2 * crop_scale))
        padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(110, 110, 110))
        my, mx = cy[i] + pad, cx[i] + pad
        rows = slice(int(my - s), int(my + s * (1 + 2 * crop_scale)))
        cols = slice(int(mx - s * (1 + crop_scale)), int(mx + s * (1 + crop_scale)))
        face = padded[rows, cols]
        if face.size == 0:
            raise ValueError(f"frame {i}: the face box {boxes[i].tolist()} gives an empty crop")
        crops[i] = cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR)
    return crops


class SyncScorer:
    """LSE-D / LSE-C of a talking-face clip with a SyncNetV2 (or any module with forward_aud/forward_lip).

    ``SyncScorer(load_syncnet()).score(faces, wav16k, fps=25.0)``.
    """

    def __init__(self, model: nn.Module, config: SyncNetConfig = SYNCNET_CONFIG):
        self.model = model
        self.config = config

    def _prepare_faces(self, faces: np.ndarray, fps: float) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB → (N', 224, 224, 3) uint8 BGR at 25 fps."""
        faces = np.asarray(faces)
        if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8:
            raise ValueError(f"faces must be uint8 (N, H, W, 3) RGB crops, got {faces.dtype} {faces.shape}")
        faces = faces[resample_frame_indices(len(faces), fps, self.config.fps)]
        size = self.config.crop_size
        if faces.shape[1:3] != (size, size):
            faces = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in faces])
        return np.ascontiguousarray(faces[..., ::-1])

    @torch.no_grad()
    def embed(self, faces: np.ndarray, wav16k: np.ndarray, fps: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
        """Per-window embeddings: (video_emb (T, D), audio_emb (T, D)), T = min_length − 5.

        Args:
            faces: (N, H, W, 3) uint8 RGB face-track crops (resized to 224×224 if needed).
            wav16k: (S,) float audio at 16 kHz in [-1, 1].
            fps: frame rate of ``faces``; resampled to 25 fps when different.
        """
        cfg = self.config
        # 1. Check inputs and bring them to the recipe's form
        bgr = self._prepare_faces(faces, fps)  # (N, 224, 224, 3) BGR
        wav = np.asarray(wav16k).reshape(-1)
        min_length = min(len(bgr), len(wav) // cfg.samples_per_frame)
        n_windows = min_length - cfg.video_window
        if n_windows < 1:
            if len(wav) // cfg.samples_per_frame < len(bgr):
                raise AudioTooShortError(
                    f"the audio is {len(wav) / cfg.sample_rate:.2f} s long; SyncNet scoring needs at least "
                    f"{(cfg.video_window + 1) / cfg.fps:.2f} s"
                )
            raise ValueError(
                f"the video has {len(bgr)} frames at 25 fps; SyncNet scoring needs at least {cfg.video_window + 1}"
            )
        cepstra = mfcc(wav_to_int16_scale(wav), cfg.sample_rate).T.astype(np.float32)  # (13, T_mfcc)

        # 2. Batched forward over windows
        param = next(self.model.parameters())
        video_emb, audio_emb = [], []
        for start in range(0, n_windows, cfg.batch_size):
            idx = range(start, min(start + cfg.batch_size, n_windows))
            clips = np.stack([bgr[v : v + cfg.video_window] for v in idx])  # (B, 5, 224, 224, 3)
            video = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).to(param.device, param.dtype)  # (B,3,5,224,224)
            step = cfg.mfcc_per_frame
            mf = np.stack([cepstra[:, step * v : step * v + cfg.mfcc_window] for v in idx])[:, None]  # (B,1,13,20)
            audio = torch.from_numpy(mf).to(param.device, param.dtype)
            video_emb.append(self.model.forward_lip(video).float().cpu().numpy())
            audio_emb.append(self.model.forward_aud(audio).float().cpu().numpy())
        return np.concatenate(video_emb), np.concatenate(audio_emb)

    def score(self, faces: np.ndarray, wav16k: np.ndarray, fps: float = 25.0) -> SyncScore:
        """LSE-D / LSE-C / AV offset of ``faces`` against ``wav16k`` (see :meth:`embed`, :func:`compute_lse`)."""
        video_emb, audio_emb = self.embed(faces, wav16k, fps)
        return compute_lse(video_emb, audio_emb, self.config.vshift)
