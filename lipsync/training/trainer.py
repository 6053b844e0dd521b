"""The Diff2Lip training loop on HF Accelerate: DDP over 1..N processes, mixed precision, gradient
accumulation, AdamW, EMA weights, exact checkpoint/resume, logging and validation.

One training step, consistent with inference (:mod:`lipsync.model.pipeline`) and with the official
``tfg_data_util.py`` (which builds the masked condition with its own fresh noise during training)::

    x0   = faces of B samples x 5 frames                  (B*5, 3, S, S) in [-1, 1]
    t, ε, ε_c drawn per sample from (seed, g, step)        one t per frame
    x_t  = q_sample(x0, t, ε)
    cond = x0 * (1 - mask) + mask * ε_c                    upper half the frame, lower half noise
    out  = unet(x_t, t, cond_image=cond, mask=mask, reference=ref, audio=mels)   (B*5, 6, S, S)
    L    = λ_simple L_simple(ε̂, ε) + λ_vlb L_vlb + λ_l2 L2(x̂0)
           + λ_lpips LPIPS(x̂0) + λ_sync L_sync(x̂0) + λ_gan L_gan(x̂0)

x̂0 is clipped to [-1, 1] (``--no-x0-clip``: not, so the terms keep their gradient where x̂0 is out of range) and
its upper half replaced by the known frame before the x̂0 terms (as sampling does), so a prediction at t ≈ T
(x̂0 up to ~160 ε̂) cannot dominate them. The sequential
discriminator is trained in alternation on the same step's real and (detached) recovered sequences.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from lipsync.errors import LipSyncError
from lipsync.training import checkpointing as ckpt
from lipsync.training.config import (
    AUDIO_DEP_T,
    LOG_COLUMNS,
    LOSS_TERMS,
    MODEL_KEYS,
    NUM_FRAMES,
    VAL_COLUMNS,
    TrainConfig,
    TrainingError,
    build_unet,
    check_config,
    init_like_guided_diffusion,
    load_init_source,
    merge_model_config,
    paper_unet_config,
)
from lipsync.training.ema import EMA
from lipsync.training.reporting import CSVLog, Progress, TensorBoardLog, image_grid, save_png, to_uint8_hwc
from lipsync.training.sampling import BatchLayout, GlobalOrder, IndexedDataset, NoiseSpec, StepBatchSampler
from lipsync.training.step import (
    StepLog,
    TrainParts,
    adamw_param_groups,
    load_adamw_state,
    make_adamw,
    step_inputs,
    train_step,
    unet_forward,
)

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or "out of memory" in text \
        or "can't allocate memory" in text or "not enough memory" in text


class Trainer:
    """Runs one training job described by a :class:`TrainConfig`.

    ``train_dataset`` / ``val_dataset`` may be injected (anything returning the
    :class:`lipsync.training.data.Diff2LipDataset` sample dicts); by default they are read from
    ``config.data`` (split "train") and ``config.val_data or config.data`` (split "val").
    """

    def __init__(self, config: TrainConfig, train_dataset=None, val_dataset=None):
        self.config = config
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.run_dir = Path(config.output)

    # -- setup ----------------------------------------------------------------------------------------
    def _accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        mp = self.config.mixed_precision
        if mp not in ("no", "bf16", "fp16"):
            raise TrainingError(f"--mixed-precision must be no, bf16 or fp16, got {mp!r}")
        if mp == "fp16" and (self.config.cpu or not torch.cuda.is_available()):
            raise TrainingError("--mixed-precision fp16 needs a CUDA GPU; use bf16 or no on the CPU")
        return Accelerator(mixed_precision=mp, cpu=self.config.cpu,
                           kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])

    def _datasets(self, image_size: int):
        from lipsync.training.data import Diff2LipDataset

        cfg = self.config
        if self.train_dataset is None:
            self.train_dataset = Diff2LipDataset(cfg.data, split="train", num_frames=NUM_FRAMES, image_size=image_size,
                                                 seed=cfg.seed, reference_min_distance=cfg.reference_min_distance)
        if self.val_dataset is None and cfg.validate_every > 0:
            root = cfg.val_data or cfg.data
            try:
                self.val_dataset = Diff2LipDataset(root, split="val", num_frames=NUM_FRAMES, image_size=image_size,
                                                   seed=cfg.seed)
            except LipSyncError as exc:
                if cfg.val_data:
                    raise
                logger.warning("no validation clips (%s); validation is skipped", str(exc).splitlines()[0])
                self.val_dataset = None
        if len(self.train_dataset) == 0:
            raise TrainingError(f"the dataset {cfg.data} has no training samples (5 consecutive frames with a face "
                                "in split 'train'); prepare one with python -m lipsync.prepare --videos DIR --output "
                                f"{cfg.data}")
        if self.val_dataset is not None and len(self.val_dataset) == 0:
            self.val_dataset = None

    def _resolve_resume(self) -> Optional[Path]:
        cfg = self.config
        if not cfg.resume:
            return None
        if cfg.resume == "latest":
            found = ckpt.list_checkpoints(self.run_dir)
            if not found:
                raise TrainingError(f"--resume: {self.run_dir}/checkpoints holds no checkpoint yet; start the run "
                                    "without --resume")
            return found[-1]
        path = Path(cfg.resume)
        if not ckpt.is_training_checkpoint(path):
            raise TrainingError(f"--resume {path}: not a training checkpoint (no {ckpt.STATE_FILE}); pass "
                                "RUN/checkpoints/step_N or --resume alone for the latest one")
        return path

    def _model_config(self, resume_from: Optional[Path]):
        """(config, initial weights or None, description) of the model to train."""
        cfg = self.config
        if resume_from is not None:
            state = ckpt.read_state(resume_from)
            config = state["unet_config"]
            mismatched = {k: v for k, v in cfg.model_overrides().items() if _norm(config.get(k)) != _norm(v)}
            if mismatched:
                found = ", ".join(f"{k}={config.get(k)}" for k in mismatched)
                raise TrainingError(f"--resume: the checkpoint's model has {found}, not {mismatched}; resume with the "
                                    "run's original model flags")
            return config, None, f"resumed from {resume_from}"
        recorded = {"audio_dropout": float(cfg.audio_dropout)}  # in the saved config: the app offers guidance
        if cfg.init:
            base, weights = load_init_source(cfg.init)
            return ({**merge_model_config(base, cfg.model_overrides()), **recorded}, weights,
                    f"initialised from {cfg.init}")
        return ({**merge_model_config(paper_unet_config(), cfg.model_overrides()), **recorded}, None,
                "initialised at random")

    # -- setup ------------------------------------------------------------------------------------------------
    def setup(self) -> Tuple[TrainParts, int, Dict[str, Any], str]:
        """Build everything a step needs, once: (parts, start step, the UNet's config, where its weights came
        from). Writes nothing; :meth:`run` calls it, and so does ``benchmarks/train_speed.py``."""
        from lipsync.checkpoints import check_state_dict
        from lipsync.training.diffusion import DiffusionSchedule
        from lipsync.training.losses import preset_weights

        cfg = self.config
        check_config(cfg)
        weights = preset_weights(cfg.preset).replace(**cfg.loss_weights)
        self.weights = weights
        accelerator = self._accelerator()
        self.accelerator = accelerator
        resume_from = self._resolve_resume()
        self.resume_from = resume_from
        unet_config, init_weights, origin = self._model_config(resume_from)
        image_size = int(unet_config["image_size"])
        self.image_size = image_size
        self._datasets(image_size)

        # 1. model (same seeded init on every process), EMA copy
        torch.manual_seed(cfg.seed)
        unet = build_unet(unet_config)
        if init_weights is not None:
            flags = ", ".join("--" + k.replace("_", "-") for k in cfg.model_overrides()) or "none given"
            check_state_dict(unet, init_weights, what=f"the model to train ({_describe(unet_config)})",
                             hint=f"--init {cfg.init} has other sizes: drop the model size flags ({flags}) so the "
                                  "model takes the checkpoint's, or train from scratch without --init")
            unet.load_state_dict(init_weights, strict=True)
        elif resume_from is None:
            init_like_guided_diffusion(unet)
        unet.train()
        ema_unet = build_unet(unet_config)
        ema_unet.eval().requires_grad_(False)

        # 2. optional networks of the loss terms
        self.schedule = DiffusionSchedule()
        self.lpips_net = self.sync_net = None
        discriminator = disc_optimizer = None
        if weights.lpips > 0:
            from lipsync.training.lpips import load_lpips

            self.lpips_net = load_lpips(cfg.lpips_vgg, cfg.lpips_heads).eval().requires_grad_(False)
        if weights.sync > 0:
            from lipsync.training.sync_expert import load_sync_expert

            self.sync_net = load_sync_expert(cfg.sync_expert).eval().requires_grad_(False)
        if weights.gan > 0:
            from lipsync.training.discriminator import SequentialDiscriminator

            discriminator = SequentialDiscriminator(image_size=image_size).train()

        # 3. optimisers (fused kernels where there are), LR schedule; restore a checkpoint
        device = accelerator.device
        unet.to(device)
        ema = EMA(unet, decay=cfg.ema_decay)
        optimizer = make_adamw(adamw_param_groups(unet, cfg.lr, cfg.audio_lr_scale), device, lr=cfg.lr,
                               weight_decay=cfg.weight_decay)  # the audio encoder in its own group with a scale
        warmup = max(0, cfg.lr_warmup_steps)
        lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
        if discriminator is not None:
            discriminator.to(device)
            disc_optimizer = make_adamw(discriminator.parameters(), device, lr=cfg.lr, betas=(0.5, 0.999))
        start_step = 0
        if resume_from is not None:
            start_step = self._restore(resume_from, unet, ema, optimizer, lr_schedule, discriminator, disc_optimizer)
        for net in (self.lpips_net, self.sync_net):
            if net is not None:
                net.to(device)
        ema_unet.to(device)
        if cfg.compile:
            unet.compile()  # in place: the same module, parameters and state_dict keys; compiled at the first step

        # 4. Accelerate: DDP wrapping, mixed precision, the fp16 loss scaler
        if discriminator is not None:
            model, optimizer, disc_model, disc_optimizer = accelerator.prepare(unet, optimizer, discriminator,
                                                                               disc_optimizer)
        else:
            model, optimizer = accelerator.prepare(unet, optimizer)
            disc_model = None
        if resume_from is not None and accelerator.scaler is not None and (resume_from / "scaler.pt").is_file():
            accelerator.scaler.load_state_dict(ckpt.load_tensor_file(resume_from / "scaler.pt"))
        parts = TrainParts(accelerator=accelerator, unet=unet, model=model, params=list(unet.parameters()),
                           optimizer=optimizer, lr_schedule=lr_schedule, ema=ema, ema_unet=ema_unet,
                           mask=_lower_mask(image_size, device), disc_model=disc_model, disc_optimizer=disc_optimizer)
        return parts, start_step, unet_config, origin

    # -- the run ----------------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train; return the final ``save_pretrained`` folder (``RUN/final``)."""
        parts, start_step, unet_config, origin = self.setup()
        cfg, accelerator, weights, image_size = self.config, self.accelerator, self.weights, self.image_size
        device, resume_from = accelerator.device, self.resume_from

        # 5. data: the global order, this process's share of every step from start_step on
        layout = BatchLayout(cfg.batch_size, accelerator.num_processes, cfg.grad_accum)
        order = GlobalOrder(len(self.train_dataset), cfg.seed)
        noise = NoiseSpec(cfg.seed, layout.global_batch, NUM_FRAMES, image_size, self.schedule.num_timesteps)
        loader = torch.utils.data.DataLoader(
            IndexedDataset(self.train_dataset, noise),  # the noises drawn by the workers, off the loop
            batch_sampler=StepBatchSampler(order, layout, accelerator.process_index, start_step, cfg.max_steps),
            num_workers=cfg.num_workers, pin_memory=device.type == "cuda")

        # 6. logs
        main = accelerator.is_main_process
        n_params = sum(p.numel() for p in parts.params)
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "run_config.json").write_text(json.dumps(
                {"train": _jsonable(dataclasses.asdict(cfg)), "unet_config": unet_config,
                 "loss_weights": dataclasses.asdict(weights), "global_batch": layout.global_batch,
                 "num_processes": accelerator.num_processes, "parameters": n_params}, indent=1))
        resume_step = start_step if resume_from is not None else None
        log = CSVLog(self.run_dir / "losses.csv", LOG_COLUMNS, resume_step) if main else None
        val_log = CSVLog(self.run_dir / "validation.csv", VAL_COLUMNS, resume_step) if main else None
        tb = TensorBoardLog(self.run_dir / "tensorboard") if main else None
        progress = Progress(cfg.max_steps, start_step, enabled=main and cfg.progress, every=cfg.log_every)
        progress.write(f"{origin}; {n_params / 1e6:.2f} M parameters at {image_size} px; "
                       f"{len(self.train_dataset)} training samples; global batch {layout.global_batch} "
                       f"({accelerator.num_processes} process(es) x {cfg.batch_size} x {cfg.grad_accum} accumulation); "
                       f"losses {', '.join(f'{k}={v:g}' for k, v in weights.active().items())}")
        if start_step >= cfg.max_steps:
            progress.write(f"the checkpoint is already at step {start_step} >= --max-steps {cfg.max_steps}")

        # 7. the loop: steps are queued without waiting for the device; the logs are read every --log-every steps
        batches = iter(loader)
        started = time.perf_counter()
        step_log = StepLog(accelerator)
        step = start_step
        try:
            for step in range(start_step, cfg.max_steps):
                terms = train_step(self, parts, batches, step)
                done = step + 1
                now = time.perf_counter()
                step_log.add({"step": done, "samples": done * layout.global_batch,
                              "epoch": done * layout.global_batch / len(self.train_dataset),
                              "lr": parts.optimizer.param_groups[0]["lr"],
                              "steps_per_s": progress.steps_per_second(done), "seconds": now - started}, terms)
                out_of_time = False
                if cfg.max_minutes is not None:  # the same decision on every process
                    late = now - started > 60.0 * cfg.max_minutes
                    if accelerator.num_processes > 1:  # agreed at log intervals only: a collective waits
                        late = done % cfg.log_every == 0 and bool(accelerator.reduce(
                            torch.tensor([float(late)], device=device), reduction="sum").item() > 0)
                    out_of_time = late
                last = done == cfg.max_steps or out_of_time
                validating = cfg.validate_every > 0 and self.val_dataset is not None and (
                    done % cfg.validate_every == 0 or last)
                saving = (cfg.checkpoint_every > 0 and done % cfg.checkpoint_every == 0) or last
                if done % cfg.log_every == 0 or last or validating or saving:
                    self._write_logs(step_log.flush(), log, tb, progress)
                if validating:
                    self._validate(done, parts.ema, parts.ema_unet, val_log, tb, progress)
                if saving:
                    self._save(done, layout, unet_config, accelerator, parts.model, parts.ema, parts.ema_unet,
                               parts.optimizer, parts.lr_schedule, parts.disc_model, parts.disc_optimizer)
                if out_of_time:
                    progress.write(f"stopping after step {done}: the --max-minutes {cfg.max_minutes:g} budget is spent")
                    break
        except Exception as exc:
            progress.close()
            if _is_oom(exc) and not isinstance(exc, LipSyncError):
                raise TrainingError(
                    f"out of memory at step {step + 1} with --batch-size {cfg.batch_size} at {image_size} px on "
                    f"{device}; lower --batch-size (and raise --grad-accum to keep the global batch of "
                    f"{layout.global_batch}), or use --mixed-precision bf16") from exc
            if cfg.compile and type(exc).__module__.startswith("torch._dynamo"):
                raise TrainingError(f"--compile failed ({str(exc).splitlines()[0][:300]}); train without --compile, "
                                    "or install a C++ compiler (g++) for torch.compile on the CPU") from exc
            raise
        progress.close()

        # 8. the final pipeline folder: EMA weights, safetensors
        final = self.run_dir / "final"
        if main:
            self._save_final(final, parts.ema, parts.ema_unet)
            progress.write(f"saved the EMA weights to {final} (python -m lipsync --checkpoint {final} ...)")
        accelerator.wait_for_everyone()
        if tb is not None:
            tb.close()
        accelerator.end_training()
        return final

    def _write_logs(self, rows, log: Optional[CSVLog], tb, progress: Progress) -> None:
        """Main process: the read-back rows of the last steps to losses.csv, TensorBoard and the progress line;
        a clear error at the first step whose loss is not finite."""
        if log is None:
            return
        for row in rows:
            values = {k: v for k, v in row.items() if k in LOSS_TERMS + ("loss", "gan_d")}
            log.write({"grad_norm": math.nan, **row})
            tb.scalars(row["step"], {**values, "lr": row["lr"]})
            if not all(math.isfinite(v) for v in values.values()):
                progress.close()
                raise TrainingError(f"the loss became {values} at step {row['step']}; lower --lr or use "
                                    "--mixed-precision no")
        if rows:
            progress.update(rows[-1]["step"], {k: rows[-1][k] for k in ("loss", "simple") if k in rows[-1]})

    # -- one step's losses ------------------------------------------------------------------------------
    def losses(self, model, batch: Dict[str, Any], step: int, mask: torch.Tensor, disc_model=None):
        """The weighted loss of a batch and its terms, plus the real and recovered 5-frame sequences.

        batch: the collated samples (faces (B, 5, 3, S, S), reference (B, 3, S, S), mels (B, 5, 80, 16),
        sync_mel (B, 1, 80, 16), index (B,) global sample indices). Returns (terms dict of 0-d tensors with
        ``loss`` the weighted sum, fake_seq (B, 5, 3, S, S) or None, real_seq (B, 5, 3, S, S)).
        """
        from lipsync.training.losses import (
            gan_generator_loss,
            l2_time_weights,
            loss_lpips,
            loss_simple,
            loss_sync,
            loss_vlb,
            loss_x0_l2,
        )

        accelerator, weights = self.accelerator, self.weights
        device = accelerator.device
        inputs = step_inputs(self.config, self.schedule, batch, step, mask, device)
        faces, x0, x_t, t = inputs.faces, inputs.x0, inputs.x_t, inputs.t
        b, f, c, s, _ = faces.shape
        out = unet_forward(accelerator, model, inputs, mask)  # (B*5, 6, S, S)
        eps = out[:, :c]
        terms: Dict[str, torch.Tensor] = {"simple": loss_simple(eps, inputs.noise, mask)}
        if weights.vlb > 0:
            terms["vlb"] = loss_vlb(self.schedule, out, x0, x_t, t, mask)
        fake_seq = None
        if weights.l2 > 0 or weights.lpips > 0 or weights.sync > 0 or weights.gan > 0:
            x0_hat = self.schedule.predict_x0(x_t, t, eps)
            x0_hat = x0_hat.clamp(-1, 1) if self.config.x0_clip else x0_hat  # clamp: no gradient out of range
            x0_hat = x0 * (1 - mask) + mask * x0_hat  # the known upper half, as sampling composites
            top = int(s * (1 - _mask_fraction()))
            if weights.l2 > 0:
                terms["l2"] = loss_x0_l2(x0_hat, x0, mask, l2_time_weights(self.schedule, t, self.config.l2_weighting))
            with accelerator.autocast():
                if weights.lpips > 0:
                    terms["lpips"] = loss_lpips(self.lpips_net, x0_hat[:, :, top:], x0[:, :, top:]).float()
                if weights.sync > 0:
                    lower = x0_hat[:, :, top:].reshape(b, f, c, s - top, s)
                    terms["sync"] = loss_sync(self.sync_net, lower, batch["sync_mel"].to(device).float()).float()
                fake_seq = x0_hat.reshape(b, f, c, s, s)
                if weights.gan > 0 and disc_model is not None:
                    disc = self.accelerator.unwrap_model(disc_model)
                    disc.requires_grad_(False)  # the generator's term: no gradients into the discriminator
                    try:
                        terms["gan"] = gan_generator_loss(disc, fake_seq).float()
                    finally:
                        disc.requires_grad_(True)
        total = sum(getattr(weights, k) * v for k, v in terms.items())
        terms["loss"] = total
        return terms, fake_seq, faces

    # -- validation ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def _validate(self, step: int, ema: EMA, ema_unet, val_log: Optional[CSVLog], tb, progress: Progress) -> None:
        """Main process: EMA losses on fixed held-out samples (fixed noise), the sampled lower-half PSNR, the one-step
        audio dependence ``audio_dep`` (:mod:`lipsync.scoring.audio_dependence`), a source | generated grid."""
        accelerator = self.accelerator
        if accelerator.is_main_process:
            from torch.utils.data import default_collate

            from lipsync.model.pipeline import Diff2LipPipeline, default_scheduler

            cfg = self.config
            ema.copy_to(ema_unet)
            device = accelerator.device
            mask = _lower_mask(self.image_size, device)
            n = len(self.val_dataset)
            picks = sorted({int(i) for i in np.linspace(0, n - 1, min(cfg.val_samples, n))})
            sums: Dict[str, float] = {}
            samples = []
            for j, i in enumerate(picks):
                sample = dict(self.val_dataset[i])
                sample["index"] = j
                samples.append(sample)
            for a in range(0, len(samples), max(1, cfg.batch_size)):
                batch = default_collate(samples[a:a + max(1, cfg.batch_size)])
                terms, _, _ = self.losses(ema_unet, batch, -1, mask)
                for k, v in terms.items():
                    if k != "gan":
                        sums[k] = sums.get(k, 0.0) + float(v) * len(batch["index"])
            values = {k: v / len(samples) for k, v in sums.items()}

            # sampled lower halves of the middle frames, as inference makes them
            rows = np.linspace(0, len(samples) - 1, min(cfg.val_grid, len(samples))).round().astype(int)
            shown = [samples[r] for r in sorted(set(rows.tolist()))]  # spread over the held-out clips
            mid = NUM_FRAMES // 2
            faces = torch.stack([smp["faces"][mid] for smp in shown])  # (G, 3, S, S) in [-1, 1]
            refs = torch.stack([smp["reference"] for smp in shown])
            mels = torch.stack([smp["mels"][mid] for smp in shown])
            pipe = Diff2LipPipeline(unet=ema_unet, scheduler=default_scheduler())
            pipe.set_progress_bar_config(disable=True)
            out = pipe(faces=(faces + 1) / 2, reference_faces=(refs + 1) / 2, mels=mels,
                       num_inference_steps=cfg.val_sampling_steps, generator=torch.Generator().manual_seed(cfg.seed),
                       batch_size=len(shown), output_type="pt", progress_bar=False)
            generated = out.frames * 2 - 1  # (G, 3, S, S)
            source_u8, generated_u8 = to_uint8_hwc(faces), to_uint8_hwc(generated)
            top = int(self.image_size * (1 - _mask_fraction()))
            from lipsync.scoring.metrics import psnr

            values["psnr_lower"] = psnr(source_u8[:, top:], generated_u8[:, top:])
            # audio_dep: how much ε̂ changes at t = 300 when the mel windows are rolled to other samples (0: unused)
            from lipsync.scoring.audio_dependence import one_step_audio_dependence

            mel_mid = torch.stack([smp["mels"][mid] for smp in samples])
            values["audio_dep"] = one_step_audio_dependence(
                ema_unet, torch.stack([smp["faces"][mid] for smp in samples]),
                torch.stack([smp["reference"] for smp in samples]), mel_mid, mel_mid.roll(1, 0),
                timesteps=(AUDIO_DEP_T,), seed=cfg.seed).ratio(AUDIO_DEP_T) if len(samples) > 1 else math.nan
            grid = image_grid([source_u8, generated_u8], ["source", "generated"])
            save_png(grid, self.run_dir / "validation" / f"step_{step:06d}.png")
            val_log.write({"step": step, **values})
            tb.scalars(step, values, prefix="val")
            tb.image(step, "val/grid", grid)
            progress.write(f"validation at step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
        accelerator.wait_for_everyone()

    # -- checkpoints --------------------------------------------------------------------------------------
    def _save(self, step, layout, unet_config, accelerator, model, ema, ema_unet, optimizer, lr_schedule,
              disc_model, disc_optimizer) -> None:
        ckpt.save_rng_state(self.run_dir, step, accelerator.process_index)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            ema.copy_to(ema_unet)
            state = {
                "step": step, "samples": step * layout.global_batch, "global_batch": layout.global_batch,
                "num_processes": layout.num_processes, "batch_size": layout.batch_size,
                "grad_accum": layout.grad_accum, "seed": self.config.seed, "unet_config": unet_config,
                "ema_num_updates": ema.num_updates, "ema_decay": ema.decay,
                "lr_schedule": _jsonable(lr_schedule.state_dict()),
                "loss_weights": dataclasses.asdict(self.weights), "preset": self.config.preset,
                "train": _jsonable(dataclasses.asdict(self.config)), "torch": torch.__version__,
            }
            ckpt.save_checkpoint(
                self.run_dir, step, unet=accelerator.unwrap_model(model), ema_unet=ema_unet,
                optimizer=_inner_optimizer(optimizer), state=state,
                discriminator=accelerator.unwrap_model(disc_model) if disc_model is not None else None,
                disc_optimizer=_inner_optimizer(disc_optimizer) if disc_optimizer is not None else None,
                scaler=accelerator.scaler, keep=self.config.keep_checkpoints)
        accelerator.wait_for_everyone()

    def _restore(self, path: Path, unet, ema: EMA, optimizer, lr_schedule, discriminator, disc_optimizer) -> int:
        from lipsync.checkpoints import load_checked_state_dict

        state = ckpt.read_state(path)
        cfg = self.config
        layout_now = cfg.batch_size * cfg.grad_accum * self.accelerator.num_processes
        if state["global_batch"] != layout_now or state["seed"] != cfg.seed:
            raise TrainingError(
                f"--resume {path}: the run used a global batch of {state['global_batch']} (batch size x processes x "
                f"accumulation) and --seed {state['seed']}; this one has {layout_now} and --seed {cfg.seed}. Resume "
                "with the same global batch and seed")
        load_checked_state_dict(unet, ckpt.load_unet_weights(path / "unet"), what="the resumed model")
        ema.load_state_dict(ckpt.load_unet_weights(path / "ema"), state["ema_num_updates"])
        load_adamw_state(optimizer, ckpt.load_tensor_file(path / "optimizer.pt"))
        lr_schedule.load_state_dict(state["lr_schedule"])
        if discriminator is not None:
            if not (path / "discriminator.safetensors").is_file():
                raise TrainingError(f"--resume {path}: the checkpoint has no discriminator (it was trained without "
                                    "the GAN term); resume with the run's --preset / --lambda-gan")
            load_checked_state_dict(discriminator, ckpt.load_safetensors(path / "discriminator.safetensors"),
                                    what="the sequential discriminator")
            load_adamw_state(disc_optimizer, ckpt.load_tensor_file(path / "disc_optimizer.pt"))
        rng = ckpt.load_rng_state(path, self.accelerator.process_index)
        if rng is not None:
            ckpt.restore_rng_state(rng)
        return int(state["step"])

    def _save_final(self, final: Path, ema: EMA, ema_unet) -> None:
        from lipsync.model.pipeline import Diff2LipPipeline, default_scheduler

        ema.copy_to(ema_unet)
        tmp = final.with_name(final.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        Diff2LipPipeline(unet=ema_unet, scheduler=default_scheduler()).save_pretrained(tmp, safe_serialization=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _mask_fraction() -> float:
    from lipsync.model.pipeline import FACE_HIDE_PERCENTAGE

    return FACE_HIDE_PERCENTAGE


def _lower_mask(image_size: int, device) -> torch.Tensor:
    from lipsync.model.pipeline import lower_half_mask

    return lower_half_mask(image_size, image_size).to(device)  # (1, 1, S, S)


def _inner_optimizer(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # Accelerate's AcceleratedOptimizer wraps the real one


def _norm(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def _describe(config: Dict[str, Any]) -> str:
    return ", ".join(f"{k}={_norm(config.get(k))}" for k in MODEL_KEYS if k in config)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)
