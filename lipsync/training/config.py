"""What a training run is: :class:`TrainConfig` (every option of ``python -m lipsync.train``), its checks, the
columns it logs, and building the UNet (paper sizes, ``--init`` sources, guided-diffusion initialisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch

from lipsync.errors import LipSyncError

MODEL_KEYS = ("image_size", "model_channels", "channel_mult", "num_res_blocks", "attention_resolutions",
              "num_head_channels")
LOSS_TERMS = ("simple", "vlb", "l2", "lpips", "sync", "gan")
LOG_COLUMNS = ("step", "samples", "epoch", "lr", "loss", *LOSS_TERMS, "gan_d", "grad_norm", "steps_per_s", "seconds")
VAL_COLUMNS = ("step", "loss", "simple", "vlb", "l2", "lpips", "sync", "psnr_lower", "audio_dep")
AUDIO_DEP_T = 300  # validation's audio_dep: the one-step audio-dependence ratio at this t (mels rolled in the batch)
NUM_FRAMES = 5


class TrainingError(LipSyncError):
    """A training run cannot start or continue; the message says why and what to do."""


@dataclass
class TrainConfig:
    """Every option of a run (the CLI's flags). ``None`` model sizes mean: the --init source's, else the paper's."""

    data: str
    output: str
    init: Optional[str] = None
    preset: str = "simple"
    loss_weights: Dict[str, Optional[float]] = field(default_factory=dict)  # λ overrides of the preset
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_warmup_steps: int = 0
    max_grad_norm: float = 1.0
    max_steps: int = 10000
    max_minutes: Optional[float] = None  # wall-time budget: stop (validate, checkpoint, save) after this
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    validate_every: int = 1000
    val_data: Optional[str] = None
    val_samples: int = 16
    val_grid: int = 4
    val_sampling_steps: int = 25
    mixed_precision: str = "no"
    image_size: Optional[int] = None
    model_channels: Optional[int] = None
    channel_mult: Optional[Tuple[int, ...]] = None
    num_res_blocks: Optional[int] = None
    attention_resolutions: Optional[Tuple[int, ...]] = None
    num_head_channels: Optional[int] = None
    ema_decay: float = 0.9999
    seed: int = 0
    resume: Optional[str] = None  # None, "latest", or a checkpoint folder
    num_workers: int = 0
    log_every: int = 10
    cpu: bool = False
    progress: bool = True
    lpips_vgg: Optional[str] = None
    lpips_heads: Optional[str] = None
    sync_expert: Optional[str] = None
    l2_weighting: str = "none"  # "none": the paper's plain L2 on x̂0; "snr": weighted by min(1, SNR_t)
    audio_dropout: float = 0.0  # fraction of samples trained with the null audio (for audio guidance)
    # against the copy shortcut (a model that copies the reference's mouth and ignores the mel); defaults: the paper
    reference_min_distance: int = 0  # the reference frame is at least this many frames from the window (0: outside)
    reference_augment: float = 0.0  # fraction of samples whose reference gets a small affine + colour jitter
    x0_clip: bool = True  # clip x̂0 to [-1, 1] before L2, LPIPS, sync, GAN; False keeps their gradient out of range
    audio_lr_scale: float = 1.0  # the audio encoder's learning rate is this times --lr (its own AdamW group)
    compile: bool = False  # torch.compile the UNet (compiled at the first step)

    def model_overrides(self) -> Dict[str, Any]:
        """The model sizes given explicitly."""
        return {k: getattr(self, k) for k in MODEL_KEYS if getattr(self, k) is not None}


def check_config(cfg: TrainConfig) -> None:
    for name in ("batch_size", "grad_accum", "max_steps"):
        if int(getattr(cfg, name)) < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if not cfg.lr > 0:
        raise TrainingError(f"--lr must be > 0, got {cfg.lr}")
    from lipsync.training.losses import L2_WEIGHTINGS

    if cfg.l2_weighting not in L2_WEIGHTINGS:
        raise TrainingError(f"--l2-weighting must be one of {', '.join(L2_WEIGHTINGS)}, got {cfg.l2_weighting!r}")
    if not 0 <= cfg.audio_dropout < 1:
        raise TrainingError(f"--audio-dropout must be in [0, 1), got {cfg.audio_dropout}")
    if int(cfg.reference_min_distance) != cfg.reference_min_distance or cfg.reference_min_distance < 0:
        raise TrainingError(f"--reference-min-distance must be a whole number of frames >= 0, got "
                            f"{cfg.reference_min_distance}")
    if not 0 <= cfg.reference_augment <= 1:
        raise TrainingError(f"--reference-augment must be in [0, 1], got {cfg.reference_augment}")
    if not (cfg.audio_lr_scale > 0 and cfg.audio_lr_scale < float("inf")):
        raise TrainingError(f"--audio-lr-scale must be a finite number > 0, got {cfg.audio_lr_scale}")
    if not 0 <= cfg.ema_decay < 1:
        raise TrainingError(f"--ema-decay must be in [0, 1), got {cfg.ema_decay}")
    if cfg.image_size is not None and (cfg.image_size < 32 or cfg.image_size % 16):
        raise TrainingError(f"--image-size must be a multiple of 16 and at least 32, got {cfg.image_size}")


# ----------------------------------------------------------------------------------------------------
# Model construction and --init
# ----------------------------------------------------------------------------------------------------


def paper_unet_config() -> Dict[str, Any]:
    """The paper model's sizes (``Diff2LipUNetModel`` defaults), as a plain dict."""
    from lipsync.model.unet import Diff2LipUNetModel

    return {k: v for k, v in Diff2LipUNetModel.extract_init_dict({})[0].items()}


def public_config(unet) -> Dict[str, Any]:
    """A model's constructor arguments (its diffusers config without the private ``_`` entries)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(unet.config).items() if not k.startswith("_")}


def merge_model_config(base: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` with ``overrides``; a new ``image_size`` alone rescales ``attention_resolutions`` so that
    attention stays at the same depths (the weights keep fitting)."""
    merged = dict(base)
    merged.update(overrides)
    old, new = int(base.get("image_size", 128)), int(merged.get("image_size", 128))
    if new != old and "attention_resolutions" not in overrides:
        merged["attention_resolutions"] = [max(1, int(r) * new // old) for r in base.get("attention_resolutions", ())]
    return merged


def init_like_guided_diffusion(unet) -> None:
    """Zero the last conv of every residual branch, attention projection and the output head, as
    guided-diffusion initialises (each block starts as the identity; the first ε̂ is 0)."""
    from lipsync.model.unet import AttentionBlock, ResBlock

    with torch.no_grad():
        for module in unet.modules():
            if isinstance(module, ResBlock):
                targets = [module.out_layers[-1]]
            elif isinstance(module, AttentionBlock):
                targets = [module.proj_out]
            else:
                continue
            for target in targets:
                for p in target.parameters():
                    p.zero_()
        for p in unet.out[-1].parameters():
            p.zero_()


def load_init_source(source: str) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """(model config, state dict) of an ``--init`` source, on the CPU in float32.

    ``source``: ``paper`` (``$LIPSYNC_CHECKPOINT`` or the paper checkpoint on the Hub), an original ``.pt``,
    a converted ``save_pretrained`` folder, a Hub repo in diffusers layout, or a training checkpoint folder
    (its EMA weights). Raises ``WeightsUnavailableError`` / ``CheckpointMismatchError`` with the remedy.
    """
    from lipsync.model.loading import load_pipeline

    pipe = load_pipeline(None if source == "paper" else source, device="cpu", dtype=torch.float32)
    unet = pipe.unet
    return public_config(unet), {k: v.detach().clone() for k, v in unet.state_dict().items()}


def build_unet(config: Dict[str, Any]):
    """A ``Diff2LipUNetModel`` from a config dict (clear error for sizes that cannot be built)."""
    from lipsync.model.unet import Diff2LipUNetModel

    try:
        return Diff2LipUNetModel(**config)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as exc:
        raise TrainingError(f"cannot build a Diff2Lip UNet with {config}: {exc}; check --model-channels "
                            "(a multiple of 32), --channel-mult, --attention-resolutions and --image-size") from exc
