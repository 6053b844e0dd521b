"""Command line: train or fine-tune Diff2Lip.

    python -m lipsync.train --data DATASET --output RUN [--init SOURCE] [--preset simple|sync|perceptual|full] ...
    accelerate launch [--num_processes N] -m lipsync.train --data DATASET --output RUN ...

``DATASET`` is a folder made by ``python -m lipsync.prepare``. ``RUN`` receives ``losses.csv``,
``validation.csv``, ``validation/step_N.png``, ``checkpoints/step_N/`` and, at the end, ``final/``: a
``save_pretrained`` pipeline with the EMA weights that ``python -m lipsync --checkpoint RUN/final`` uses.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from lipsync.console import command_name
from lipsync.errors import LipSyncError


def _int_list(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (e.g. 1,2,2), got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m lipsync.train``."""
    from lipsync.training.losses import LOSS_PRESETS

    p = argparse.ArgumentParser(prog=command_name("python -m lipsync.train"),
                                description="Train or fine-tune Diff2Lip (HF Accelerate).")
    p.add_argument("--data", required=True, help="dataset folder made by python -m lipsync.prepare")
    p.add_argument("--output", required=True, help="run folder: logs, checkpoints, validation grids, final/")
    p.add_argument("--init", default=None, metavar="SOURCE",
                   help="start from weights: 'paper' (the paper checkpoint via $LIPSYNC_CHECKPOINT or the Hub), an "
                        "original checkpoint.pt, a converted folder, a Hub repo, or a training checkpoint "
                        "(RUN/checkpoints/step_N, its EMA weights)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                   help="continue this run exactly: from its latest checkpoint, or from the given step folder")

    g = p.add_argument_group("losses")
    g.add_argument("--preset", choices=list(LOSS_PRESETS), default="simple",
                   help="simple: L_simple + VLB; sync: + L2 + SyncNet; perceptual: + LPIPS; full: + sequential GAN "
                        "(the paper's rows; default simple)")
    for term in ("simple", "vlb", "l2", "lpips", "sync", "gan"):
        g.add_argument(f"--lambda-{term}", type=float, default=None, metavar="W",
                       help=f"weight of the {term} term (overrides the preset)")
    g.add_argument("--l2-weighting", choices=["none", "snr"], default="none",
                   help="none: the paper's plain L2 on x̂0 at every t; snr: weighted by min(1, SNR_t), which keeps "
                        "its gradient bounded at high noise (steadier on small batches)")
    g.add_argument("--audio-dropout", type=float, default=0.0, metavar="P",
                   help="train a fraction P of the samples with the null audio (the mel of silence), so that "
                        "sampling can use audio guidance (--audio-guidance); recorded in the model's config")
    g.add_argument("--x0-clip", action=argparse.BooleanOptionalAction, default=True,
                   help="clip x̂0 to [-1, 1] before L2/LPIPS/sync/GAN (default, as sampling does); --no-x0-clip keeps "
                        "those terms' gradient where x̂0 is out of range (clipping zeroes it there)")

    g = p.add_argument_group("against the copy shortcut (defaults: the paper's training)")
    g.add_argument("--reference-min-distance", type=int, default=0, metavar="N",
                   help="draw the reference frame at least N frames from the sample's 5-frame window (default 0: "
                        "anywhere outside it); clips with no frame that far use their farthest frames")
    g.add_argument("--reference-augment", type=float, default=0.0, metavar="P",
                   help="with probability P per sample, jitter the reference frame (scale and position by a few %%, "
                        "brightness, contrast, saturation), drawn from the seed: resumes stay exact")
    g.add_argument("--audio-lr-scale", type=float, default=1.0, metavar="S",
                   help="learning rate of the audio encoder (audio_encoder*, its own AdamW group) = S x --lr; "
                        "the LR warm-up applies to both groups (default 1: one group)")

    g = p.add_argument_group("losses, networks")
    g.add_argument("--lpips-vgg", default=None, metavar="PATH", help="VGG16 weights for LPIPS (vgg16-397923af.pth)")
    g.add_argument("--lpips-heads", default=None, metavar="PATH", help="LPIPS linear heads (lpips v0.1 vgg.pth)")
    g.add_argument("--sync-expert", default=None, metavar="PATH",
                   help="the lip-sync expert: Wav2Lip's lipsync_expert.pth, or one trained with python -m "
                        "lipsync.train_syncnet (its output folder)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=4, help="samples (of 5 frames) per process and micro-step")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-steps accumulated per optimiser step")
    g.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    g.add_argument("--lr-warmup-steps", type=int, default=0, help="linear LR warm-up steps")
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0: off)")
    g.add_argument("--max-steps", type=int, default=10000, help="optimiser steps of the whole run")
    g.add_argument("--max-minutes", type=float, default=None,
                   help="wall-time budget: after the step that passes it, validate, checkpoint, save final/ and stop")
    g.add_argument("--ema-decay", type=float, default=0.9999, help="EMA decay (with warm-up)")
    g.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=None,
                   help="default: what `accelerate config` / accelerate launch set, else no")
    g.add_argument("--seed", type=int, default=0, help="seed of the init, the data order and every noise")
    g.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    g.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet: a minute or more of compiling at the first step, then faster steps "
                        "(needs a C++ compiler on the CPU)")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads per process (torch.set_num_threads); 1 is fastest on a busy machine")

    g = p.add_argument_group("model (default: the --init source's sizes, else the paper's)")
    g.add_argument("--image-size", type=int, default=None, help="face crop size the model works at (paper 128)")
    g.add_argument("--model-channels", type=int, default=None, help="base width (paper 128; a multiple of 32)")
    g.add_argument("--channel-mult", type=_int_list, default=None, metavar="1,1,2,3,4", help="width per level")
    g.add_argument("--num-res-blocks", type=int, default=None, help="residual blocks per level (paper 2)")
    g.add_argument("--attention-resolutions", type=_int_list, default=None, metavar="32,16,8",
                   help="feature-map sizes with self-attention")
    g.add_argument("--num-head-channels", type=int, default=None, help="attention head width (paper 64)")

    g = p.add_argument_group("checkpoints, logs, validation")
    g.add_argument("--checkpoint-every", type=int, default=1000, help="write a checkpoint every N steps")
    g.add_argument("--keep-checkpoints", type=int, default=2, help="checkpoints kept (0: all)")
    g.add_argument("--validate-every", type=int, default=1000, help="validate every N steps (0: never)")
    g.add_argument("--val-data", default=None, metavar="DATASET",
                   help="held-out dataset to validate on (its 'val' split; default: the 'val' split of --data)")
    g.add_argument("--val-samples", type=int, default=16, help="held-out samples of the validation losses")
    g.add_argument("--val-grid", type=int, default=4, help="rows of the validation grid PNG")
    g.add_argument("--val-sampling-steps", type=int, default=25, help="DDIM steps of the validation samples")
    g.add_argument("--log-every", type=int, default=10, help="plain progress line every N steps (when not a tty)")
    g.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def config_from_args(args: argparse.Namespace):
    """A :class:`lipsync.training.trainer.TrainConfig` from parsed arguments."""
    import os

    from lipsync.training.config import TrainConfig

    mixed = args.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION") or "no"
    return TrainConfig(
        data=args.data, output=args.output, init=args.init, resume=args.resume, preset=args.preset,
        loss_weights={t: getattr(args, f"lambda_{t}") for t in ("simple", "vlb", "l2", "lpips", "sync", "gan")},
        lpips_vgg=args.lpips_vgg, lpips_heads=args.lpips_heads, sync_expert=args.sync_expert,
        l2_weighting=args.l2_weighting, audio_dropout=args.audio_dropout, x0_clip=args.x0_clip,
        reference_min_distance=args.reference_min_distance, reference_augment=args.reference_augment,
        audio_lr_scale=args.audio_lr_scale,
        batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, weight_decay=args.weight_decay,
        lr_warmup_steps=args.lr_warmup_steps, max_grad_norm=args.max_grad_norm, max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        ema_decay=args.ema_decay, mixed_precision=mixed, seed=args.seed, cpu=args.cpu, num_workers=args.num_workers,
        image_size=args.image_size, model_channels=args.model_channels, channel_mult=args.channel_mult,
        num_res_blocks=args.num_res_blocks, attention_resolutions=args.attention_resolutions,
        num_head_channels=args.num_head_channels, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, validate_every=args.validate_every, val_data=args.val_data,
        val_samples=args.val_samples, val_grid=args.val_grid, val_sampling_steps=args.val_sampling_steps,
        log_every=args.log_every, progress=not args.quiet, compile=args.compile,
    )


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status (0 done, 1 a clear error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()  # loading an --init pipeline: no bar before the run's own
    from lipsync.training.trainer import Trainer

    if args.threads:
        import torch

        torch.set_num_threads(max(1, args.threads))
    try:
        final = Trainer(config_from_args(args)).run()
    except (LipSyncError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; resume with the same command plus --resume", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"done: {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
