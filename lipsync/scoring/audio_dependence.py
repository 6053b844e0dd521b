"""Does a Diff2Lip model use its audio input? Two checks that feed the same frames with the right and with
wrong mel windows and measure how much the model's answer changes.

* :func:`one_step_audio_dependence`: at a few noise levels t, the same x0, reference, noise ε and masked
  condition go through the UNet once with the right mel windows and once with each wrong set; the figure is
  ``mean|ε̂(right) − ε̂(wrong)| / mean|ε̂(right)|`` over the lower half of the crop (the generated region) and
  the 3 noise channels. 0 means the audio is ignored at that t; cheap (two forward passes per t).
* :func:`sample_audio_dependence`: the frames sampled through the pipeline (DDIM, one shared initial noise from
  one seed) with the right audio and with each wrong set; per wrong set the lower-half PSNR between the
  right-audio output and that output (inf when identical: the audio changed nothing) and every output's
  lower-half PSNR to the ground truth.

A model that lip-syncs gives ratios of the order of several percent or more and right/wrong PSNRs well below
the 40 dB where differences become invisible; a model that ignores its audio gives ratios near 0 and PSNRs
near inf. Wrong sets are the caller's: mel windows of other frames of the same clip, of another clip, of
silence (``lipsync.evaluate.audio_dependence_frames`` builds them from a prepared dataset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from lipsync.model.pipeline import FACE_HIDE_PERCENTAGE, default_scheduler, lower_half_mask, resize_faces
from lipsync.scoring.metrics import psnr, ssim

TIMESTEPS = (100, 300, 500, 700, 900)  # noise levels of the one-step check (of 1000 training steps)
Mels = Union[np.ndarray, torch.Tensor]


def _images(images, name: str) -> torch.Tensor:
    """uint8 (N, H, W, 3) in [0, 255] or float (N, 3, H, W) in [-1, 1] -> float32 (N, 3, H, W) in [-1, 1]."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"{name} must be uint8 (N, H, W, 3) or float (N, 3, H, W) images, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    if images.dtype == torch.uint8:
        return images.permute(0, 3, 1, 2).float() / 127.5 - 1
    if images.shape[1] != 3:
        raise ValueError(f"float {name} must be (N, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
    return images.float()


def _mels(mels: Mels, n: int, name: str) -> torch.Tensor:
    mels = torch.as_tensor(np.asarray(mels) if not isinstance(mels, torch.Tensor) else mels).float()
    if tuple(mels.shape) != (n, 80, 16):
        raise ValueError(f"{name} must be ({n}, 80, 16) mel windows, one per frame, got {tuple(mels.shape)}")
    return mels


def _variants(wrong: Union[Mels, Mapping[str, Mels]], n: int) -> Dict[str, torch.Tensor]:
    items = wrong.items() if isinstance(wrong, Mapping) else [("wrong", wrong)]
    variants = {str(k): _mels(v, n, f"the wrong mels {k!r}") for k, v in items}
    if not variants:
        raise ValueError("give at least one set of wrong mel windows")
    return variants


def _finite(value: float):
    return value if math.isfinite(value) else str(value)


# ----------------------------------------------------------------------------------------------------------
# One step


@dataclass
class OneStepAudioDependence:
    """Result of :func:`one_step_audio_dependence`.

    ratios: wrong set -> {t: mean|ε̂(right) − ε̂(wrong)| / mean|ε̂(right)|} over the lower half (>= 0; 0: the
    audio is unused; nan when ε̂(right) is 0 everywhere). eps_size: {t: mean|ε̂(right)|} over the lower half
    (about 0.8 for a model that predicts unit-variance noise). frames: N; image_size: the side the model saw.
    """

    ratios: Dict[str, Dict[int, float]]
    eps_size: Dict[int, float]
    frames: int
    image_size: int

    def ratio(self, t: int, variant: Optional[str] = None) -> float:
        """The ratio at ``t`` for ``variant`` (default: the first wrong set)."""
        return self.ratios[variant if variant is not None else next(iter(self.ratios))][int(t)]

    def as_dict(self) -> dict:
        """JSON-ready: {"ratios": {variant: {"t": ratio}}, "eps_size": {"t": size}, "frames", "image_size"} (a
        ratio of a model whose ε̂ is 0 everywhere, e.g. a zero-initialised head, is the string "nan")."""
        return {"ratios": {v: {str(t): _finite(r) for t, r in per_t.items()} for v, per_t in self.ratios.items()},
                "eps_size": {str(t): s for t, s in self.eps_size.items()}, "frames": self.frames,
                "image_size": self.image_size}

    def summary(self) -> str:
        """One line, e.g. ``one-step audio dependence (...): silence t=100 0.05%, t=300 0.04%; ...``."""
        parts = ["{} {}".format(v, ", ".join(f"t={t} {100 * r:.3g}%" for t, r in per_t.items()))
                 for v, per_t in self.ratios.items()]
        return (f"one-step audio dependence (mean|ε̂ right − ε̂ wrong| / mean|ε̂ right|, lower half, "
                f"{self.frames} frames at {self.image_size} px): " + "; ".join(parts))


@torch.no_grad()
def one_step_audio_dependence(unet, x0, reference, mels: Mels, wrong_mels: Union[Mels, Mapping[str, Mels]],
                              timesteps: Sequence[int] = TIMESTEPS, seed: int = 0,
                              batch_size: int = 16) -> OneStepAudioDependence:
    """How much one UNet call's noise prediction changes when the mel windows are wrong.

    Args:
        unet: a ``Diff2LipUNetModel`` (any dtype and device; eval mode is the caller's). Frames of another size
            than ``unet.config.image_size`` are resized to it (area down, bicubic up, 8-bit grid).
        x0: the clean frames, uint8 (N, H, W, 3) in [0, 255] or float (N, 3, H, W) in [-1, 1].
        reference: identity references in the same format, or None (each frame is its own reference).
        mels: (N, 80, 16) mel windows in [-4, 4], the right ones (one per frame).
        wrong_mels: (N, 80, 16) wrong windows, or a mapping name -> (N, 80, 16) for several wrong sets.
        timesteps: noise levels t in [0, 1000).
        seed: seeds ε and the condition's noise ε_c, drawn on the CPU for each t in turn (the same for every
            model; another list of timesteps draws other noises).
        batch_size: frames per UNet call; right and wrong calls have the same batches, so a model that
            ignores its audio gives exactly 0.

    Per t: x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε (ᾱ from :func:`lipsync.model.pipeline.default_scheduler`), the
    masked condition x0·(1−mask) + mask·ε_c and
    ε̂ = ``unet(x_t, t, cond_image=..., mask=..., reference=..., audio=...).sample[:, :3]``.
    """
    x0 = _images(x0, "x0")
    reference = x0 if reference is None else _images(reference, "reference")
    if reference.shape != x0.shape:
        raise ValueError(f"reference {tuple(reference.shape)} must match x0 {tuple(x0.shape)}")
    n = len(x0)
    mels = _mels(mels, n, "mels")
    variants = _variants(wrong_mels, n)
    size = int(getattr(unet.config, "image_size", x0.shape[-1]))
    if x0.shape[-2:] != (size, size):  # a model trained at another size sees its own size
        x0, reference = resize_faces(x0, size), resize_faces(reference, size)
    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    mask = lower_half_mask(size, size)  # (1, 1, S, S)
    top = int(size * (1 - FACE_HIDE_PERCENTAGE))
    alphas = default_scheduler().alphas_cumprod
    if any(not 0 <= int(t) < len(alphas) for t in timesteps):
        raise ValueError(f"timesteps must lie in [0, {len(alphas)}), got {tuple(timesteps)}")
    step = max(1, int(batch_size))

    def eps(x_t, t, cond, rows, audio):  # ε̂ of the lower half, float64 on the CPU
        m = len(x_t[rows])
        out = unet(x_t[rows].to(device, dtype), torch.full((m,), t, device=device),
                   cond_image=cond[rows].to(device, dtype), mask=mask.expand(m, -1, -1, -1).to(device, dtype),
                   reference=reference[rows].to(device, dtype), audio=audio[rows].to(device, dtype)).sample
        return out[:, :3, top:].double().cpu()

    generator = torch.Generator().manual_seed(int(seed))
    ratios: Dict[str, Dict[int, float]] = {v: {} for v in variants}
    eps_size: Dict[int, float] = {}
    for t in timesteps:
        t = int(t)
        noise = torch.randn(x0.shape, generator=generator)
        cond_noise = torch.randn(x0.shape, generator=generator)
        a = alphas[t].float()
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = x0 * (1 - mask) + mask * cond_noise
        size_sum, diff_sums = 0.0, {v: 0.0 for v in variants}
        for start in range(0, n, step):
            rows = slice(start, start + step)
            right = eps(x_t, t, cond, rows, mels)
            size_sum += float(right.abs().sum())
            for name, wrong in variants.items():
                diff_sums[name] += float((right - eps(x_t, t, cond, rows, wrong)).abs().sum())
        count = n * 3 * (size - top) * size
        eps_size[t] = size_sum / count
        for name in variants:
            ratios[name][t] = diff_sums[name] / size_sum if size_sum > 0 else float("nan")
    return OneStepAudioDependence(ratios=ratios, eps_size=eps_size, frames=n, image_size=size)


# ----------------------------------------------------------------------------------------------------------
# Sampling


@dataclass
class SampleAudioDependence:
    """Result of :func:`sample_audio_dependence` (PSNRs in dB over the lower half of the crops).

    psnr_to_right: wrong set -> PSNR of its outputs to the right-audio outputs, one MSE over all frames (inf:
    identical, the audio changed nothing). psnr_to_truth / ssim_to_truth: "right" and each wrong set -> the mean
    per-frame PSNR / SSIM of its outputs to the ground-truth frames. outputs: "right" and each wrong set ->
    the composited uint8 (N, H, W, 3) frames (not in :meth:`as_dict`).
    """

    psnr_to_right: Dict[str, float]
    psnr_to_truth: Dict[str, float]
    ssim_to_truth: Dict[str, float]
    frames: int
    steps: int
    seed: int
    outputs: Dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        """JSON-ready (an infinite PSNR is written as the string "inf")."""
        return {"psnr_to_right": {k: _finite(v) for k, v in self.psnr_to_right.items()},
                "psnr_to_truth": {k: _finite(v) for k, v in self.psnr_to_truth.items()},
                "ssim_to_truth": dict(self.ssim_to_truth), "frames": self.frames, "steps": self.steps,
                "seed": self.seed}

    def summary(self) -> str:
        """One line: each wrong set's PSNR to the right-audio output, then every output's PSNR to the truth."""
        right = ", ".join(f"{k} {v:.2f} dB" for k, v in self.psnr_to_right.items())
        truth = ", ".join(f"{k} {v:.2f}" for k, v in self.psnr_to_truth.items())
        return (f"sampled audio dependence (DDIM {self.steps}, {self.frames} frames, lower half): wrong vs right "
                f"audio {right} (inf = identical); to the ground truth {truth} dB")


def sample_audio_dependence(pipe, faces, reference_faces, mels: Mels, wrong_mels: Union[Mels, Mapping[str, Mels]],
                            num_inference_steps: int = 25, seed: int = 7, batch_size: int = 8,
                            keep_outputs: bool = False, progress=None) -> SampleAudioDependence:
    """Sample the same frames with the right and with wrong audio and compare the lower halves.

    Args:
        pipe: a ``Diff2LipPipeline`` (its scheduler is used as it is: DDIM by default).
        faces: the ground-truth crops, uint8 (N, H, W, 3) (the paper: 128 x 128), as the pipeline takes them.
        reference_faces: uint8 (N, H, W, 3) identity references, or None (each frame is its own reference).
        mels: (N, 80, 16) the right mel windows; wrong_mels: (N, 80, 16) or name -> (N, 80, 16).
        num_inference_steps: sampler steps; seed: one generator seed for every run, so every run starts from
            the same initial noise (the pipeline shares one noise between the frames).
        batch_size: frames denoised together; keep_outputs: keep the uint8 outputs in ``outputs``.
        progress: ``progress(name)`` before each run ("right", then every wrong set), e.g. to print a line.
    """
    faces = np.asarray(faces)
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be uint8 (N, H, W, 3) crops, got {faces.dtype} {faces.shape}")
    n = len(faces)
    variants = _variants(wrong_mels, n)
    if "right" in variants:
        raise ValueError("a wrong set may not be called 'right' (that name is the right audio's)")
    runs = {"right": _mels(mels, n, "mels"), **variants}
    top = int(faces.shape[1] * (1 - FACE_HIDE_PERCENTAGE))
    pipe.set_progress_bar_config(disable=True)
    outputs = {}
    for name, windows in runs.items():
        if progress is not None:
            progress(name)
        outputs[name] = pipe(faces=faces, reference_faces=reference_faces, mels=windows,
                             num_inference_steps=int(num_inference_steps),
                             generator=torch.Generator().manual_seed(int(seed)), batch_size=int(batch_size),
                             output_type="uint8", progress_bar=False).frames
    truth = faces[:, top:]
    to_right = {k: psnr(outputs["right"][:, top:], v[:, top:]) for k, v in outputs.items() if k != "right"}
    to_truth = {k: float(np.mean([psnr(a, b) for a, b in zip(truth, v[:, top:])])) for k, v in outputs.items()}
    ssims = {k: float(np.mean([ssim(a, b) for a, b in zip(truth, v[:, top:])])) for k, v in outputs.items()}
    return SampleAudioDependence(psnr_to_right=to_right, psnr_to_truth=to_truth, ssim_to_truth=ssims, frames=n,
                                 steps=int(num_inference_steps), seed=int(seed),
                                 outputs=outputs if keep_outputs else {})
