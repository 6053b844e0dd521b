"""One optimiser step of the trainer, shared by ``python -m lipsync.train`` and ``benchmarks/train_speed.py``.

A step never waits for the device: the loss terms and the gradient norm stay device tensors, and
:class:`StepLog` reads them back (one transfer for many steps) only at log intervals, checkpoints and the end.
The parameter-wide work is one fused or multi-tensor kernel per operation: clipping
(``clip_grad_norm_(foreach=True)``), AdamW (:func:`make_adamw`) and the EMA (:class:`lipsync.training.ema.EMA`).

    inputs = step_inputs(config, schedule, batch, step, mask, device)    x0, x_t, t, ε, cond, reference, mels
    out    = unet_forward(accelerator, model, inputs, mask)              (B*5, 6, S, S) float32
    terms  = trainer.losses(...)                                         0-d tensors, "loss" their weighted sum
    train_step(trainer, parts, batches, step)                            backward, clip, AdamW, EMA
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, NamedTuple, Optional

import torch

from lipsync.training.augment import augment_references
from lipsync.training.sampling import apply_audio_dropout, draw_noise


@dataclass
class TrainParts:
    """Everything a step touches, built once by :meth:`lipsync.training.trainer.Trainer.setup`."""

    accelerator: Any
    unet: torch.nn.Module  # the model itself (compiled in place with --compile)
    model: torch.nn.Module  # what Accelerate prepared: the model, or its DDP wrapper
    params: List[torch.nn.Parameter]
    optimizer: Any
    lr_schedule: Any
    ema: Any
    ema_unet: torch.nn.Module
    mask: torch.Tensor  # (1, 1, S, S): 1 on the generated lower half
    disc_model: Optional[torch.nn.Module] = None
    disc_optimizer: Optional[Any] = None


class StepInputs(NamedTuple):
    """The tensors of one batch's diffusion step, on the training device (N = B * 5 frames)."""

    faces: torch.Tensor  # (B, 5, 3, S, S) in [-1, 1]
    x0: torch.Tensor  # (N, 3, S, S) in [-1, 1]
    x_t: torch.Tensor  # (N, 3, S, S)
    t: torch.Tensor  # (N,) int64
    noise: torch.Tensor  # (N, 3, S, S): ε
    cond: torch.Tensor  # (N, 3, S, S): upper half x0, lower half noise
    reference: torch.Tensor  # (N, 3, S, S) in [-1, 1], jittered for some samples with --reference-augment
    mels: torch.Tensor  # (N, 80, 16), the dropped-out samples' replaced by the null audio


def step_inputs(config, schedule, batch: Dict[str, Any], step: int, mask: torch.Tensor, device) -> StepInputs:
    """The inputs of step ``step`` for a collated batch (see :meth:`Trainer.losses`). t and the noises are
    :func:`draw_noise`'s, from ``(config.seed, g, step)`` per sample on the CPU (every device and layout draws the
    same): the batch's ``t``, ``noise``, ``cond_noise`` when the loader drew them, else drawn here."""
    faces = batch["faces"].to(device, non_blocking=True).float()  # (B, 5, 3, S, S)
    b, f, c, s, _ = faces.shape
    x0 = faces.reshape(b * f, c, s, s)
    indices = batch["index"].tolist()
    reference = augment_references(batch["reference"].to(device, non_blocking=True).float(), config.seed, indices,
                                   step, config.reference_augment)  # (B, 3, S, S): some jittered
    reference = reference[:, None].expand(-1, f, -1, -1, -1).reshape(b * f, c, s, s)
    mels = apply_audio_dropout(batch["mels"].to(device, non_blocking=True).float(), config.seed, indices, step,
                               config.audio_dropout)  # (B, 5, 80, 16): some samples silenced
    mels = mels.reshape(b * f, *mels.shape[2:])
    if "noise" in batch:  # drawn by the loader (IndexedDataset with a NoiseSpec): the same numbers
        t, noise, cond_noise = batch["t"].reshape(-1), batch["noise"].flatten(0, 1), batch["cond_noise"].flatten(0, 1)
    else:
        t, noise, cond_noise = draw_noise(config.seed, indices, step, f, s, schedule.num_timesteps, c)
    t, noise, cond_noise = (v.to(device, non_blocking=True) for v in (t, noise, cond_noise))
    x_t = schedule.q_sample(x0, t, noise)
    cond = x0 * (1 - mask) + mask * cond_noise
    return StepInputs(faces, x0, x_t, t, noise, cond, reference, mels)


def unet_forward(accelerator, model, inputs: StepInputs, mask: torch.Tensor) -> torch.Tensor:
    """The UNet's output for ``inputs`` under the run's autocast: (N, 6, S, S) float32 = [ε̂, v]."""
    n = inputs.x_t.shape[0]
    with accelerator.autocast():
        out = model(inputs.x_t, inputs.t, cond_image=inputs.cond, mask=mask.expand(n, -1, -1, -1),
                    reference=inputs.reference, audio=inputs.mels).sample
    return out.float()


def train_step(trainer, parts: TrainParts, batches: Iterator[Dict[str, Any]], step: int) -> Dict[str, torch.Tensor]:
    """One optimiser step (``config.grad_accum`` micro-batches from ``batches``): backward, clipping, AdamW, the
    LR schedule, the discriminator's step and the EMA update. Returns the step's terms averaged over the
    micro-batches, plus ``grad_norm`` when clipping, as 0-d device tensors (nothing is read back)."""
    cfg, accelerator = trainer.config, parts.accelerator
    totals: Dict[str, torch.Tensor] = {}
    for micro in range(cfg.grad_accum):
        batch = next(batches)
        last = micro == cfg.grad_accum - 1
        syncing = contextlib.nullcontext() if last else accelerator.no_sync(parts.model)
        with syncing:
            with _phase("step: inputs, forward, losses"):
                terms, fake_seq, real_seq = trainer.losses(parts.model, batch, step, parts.mask, parts.disc_model)
            with _phase("step: backward"):
                accelerator.backward(terms["loss"] / cfg.grad_accum)
        if parts.disc_model is not None:
            from lipsync.training.losses import gan_discriminator_loss

            disc_sync = contextlib.nullcontext() if last else accelerator.no_sync(parts.disc_model)
            with disc_sync, _phase("step: discriminator"):
                with accelerator.autocast():
                    d_loss = gan_discriminator_loss(parts.disc_model, real_seq, fake_seq.detach()).float()
                accelerator.backward(d_loss / cfg.grad_accum)
            terms["gan_d"] = d_loss.detach()
        for k, v in terms.items():
            v = v.detach().float() / cfg.grad_accum
            totals[k] = totals[k] + v if k in totals else v
    if cfg.max_grad_norm > 0:
        with _phase("step: clip grad norm"):
            accelerator.unscale_gradients()  # fp16: the loss scaler's factor out first
            totals["grad_norm"] = torch.nn.utils.clip_grad_norm_(parts.params, cfg.max_grad_norm, foreach=True)
    with _phase("step: optimizer"):
        parts.optimizer.step()
        parts.optimizer.zero_grad(set_to_none=True)
        parts.lr_schedule.step()
        if parts.disc_model is not None:
            parts.disc_optimizer.step()
            parts.disc_optimizer.zero_grad(set_to_none=True)
    with _phase("step: EMA"):
        parts.ema.update(parts.unet)
    return totals


def _phase(name: str):
    """A named range in ``torch.profiler`` tables (benchmarks/train_speed.py); next to free otherwise."""
    return torch.profiler.record_function(name)


class StepLog:
    """Per-step values kept on the device until :meth:`flush`, which reads them all back at once (averaged over
    processes: every process must flush at the same steps) and returns one row per step."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.pending: List[tuple] = []

    def add(self, host: Dict[str, Any], terms: Dict[str, torch.Tensor]) -> None:
        """Keep a step's host values (step, lr, times) and device terms."""
        self.pending.append((host, terms))

    def flush(self) -> List[Dict[str, Any]]:
        """The rows of the kept steps, oldest first: host values plus each term as a float."""
        if not self.pending:
            return []
        names = sorted(self.pending[0][1])
        device = self.accelerator.device
        stacked = torch.stack([torch.stack([terms[k].float().to(device) for k in names])
                               for _, terms in self.pending])  # (steps, terms)
        reduced = self.accelerator.reduce(stacked, reduction="mean").cpu().tolist()
        rows = [{**host, **dict(zip(names, values))} for (host, _), values in zip(self.pending, reduced)]
        self.pending = []
        return rows


# ----------------------------------------------------------------------------------------------------
# AdamW
# ----------------------------------------------------------------------------------------------------


def adamw_kernels(device) -> Dict[str, bool]:
    """AdamW's implementation per device: the fused kernel on CUDA and on the CPU (torch >= 2.4), where it
    measured fastest (benchmarks/train_speed.py --optimizers); else the multi-tensor one."""
    kind = torch.device(device).type
    if kind == "cuda" or (kind == "cpu" and _has_cpu_fused_adamw()):
        return {"fused": True, "foreach": False}
    return {"fused": False, "foreach": True}


AUDIO_PREFIX = "audio_encoder"  # the UNet's audio encoder: audio_encoder.* and audio_encoder_to_style.*


def adamw_param_groups(unet: torch.nn.Module, lr: float, audio_lr_scale: float = 1.0):
    """What :func:`make_adamw` optimises: ``unet.parameters()`` when ``audio_lr_scale`` is 1 (one group, the
    paper's), else two groups: every other parameter at ``lr``, then the audio encoder's (names starting with
    ``audio_encoder``) at ``audio_lr_scale * lr``. An LR schedule scales both groups by the same factor."""
    if audio_lr_scale == 1:
        return unet.parameters()
    named = [(n, p) for n, p in unet.named_parameters() if p.requires_grad]
    audio = [p for n, p in named if n.startswith(AUDIO_PREFIX)]
    if not audio:
        raise ValueError(f"--audio-lr-scale: the model has no parameters named {AUDIO_PREFIX}*")
    rest = [p for n, p in named if not n.startswith(AUDIO_PREFIX)]
    return [{"params": rest, "lr": lr}, {"params": audio, "lr": lr * audio_lr_scale}]


def make_adamw(params, device, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999),
               kernels: Optional[Dict[str, bool]] = None) -> torch.optim.AdamW:
    """AdamW over ``params`` (parameters, or param groups of :func:`adamw_param_groups`; on ``device``) with
    :func:`adamw_kernels`, or the given ``kernels``."""
    kernels = kernels or adamw_kernels(device)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas,
                             fused=kernels["fused"], foreach=kernels["foreach"])


def load_adamw_state(optimizer, state: Dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)`` keeping this optimiser's kernels: a checkpoint written with another
    implementation (or on another device) continues with the one this machine uses."""
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper
    kernels = [{k: g.get(k) for k in ("fused", "foreach", "capturable")} for g in inner.param_groups]
    saved = len(state.get("param_groups", ()))
    if saved != len(inner.param_groups):
        raise ValueError(f"the checkpoint's optimiser has {saved} parameter group(s), this run's "
                         f"{len(inner.param_groups)}: resume with the run's --audio-lr-scale (1 gives one group, any other value two)")
    optimizer.load_state_dict(state)
    for group, keep in zip(inner.param_groups, kernels):
        group.update(keep)
        on_device = bool(keep.get("fused") or keep.get("capturable"))
        for p in group["params"]:
            st = inner.state.get(p, {})
            if "step" in st:  # fused/capturable kernels keep the step count on the device, the others on the CPU
                st["step"] = st["step"].to(p.device if on_device else "cpu", torch.float32)


def has_fused_adamw(device) -> bool:
    """Whether this torch has AdamW's fused kernel for ``device``."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return torch.device(device).type in _get_fused_kernels_supported_devices()


def _has_cpu_fused_adamw() -> bool:
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return "cpu" in _get_fused_kernels_supported_devices()
