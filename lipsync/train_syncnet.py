"""Command line: train a lip-sync expert (Wav2Lip's SyncNet_color architecture) from scratch.

    python -m lipsync.train_syncnet --data DATASET --output DIR [--val-data VAL_DATASET] [--max-minutes M] ...
    accelerate launch [--num_processes N] -m lipsync.train_syncnet --data DATASET --output DIR ...

``DATASET`` is a folder made by ``python -m lipsync.prepare``; validation uses held-out clips (its "val" split,
or ``--val-data``). ``DIR`` receives ``expert.safetensors`` and ``expert.json`` (with the held-out balanced
accuracy); running the command again with the same ``--output`` resumes. The expert then scores lip sync
(``python -m lipsync --score --sync-expert DIR``, ``python -m lipsync.evaluate --sync-expert DIR``) and trains
Diff2Lip's sync term (``python -m lipsync.train --preset sync --sync-expert DIR``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from lipsync.console import command_name
from lipsync.errors import LipSyncError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=command_name("python -m lipsync.train_syncnet"),
                                description="Train a lip-sync expert (SyncNet_color) from scratch on Accelerate.")
    p.add_argument("--data", required=True, help="dataset folder made by python -m lipsync.prepare")
    p.add_argument("--output", required=True, help="output folder (an existing one is resumed)")
    p.add_argument("--val-data", default=None, help="dataset of held-out clips (default: the 'val' split of --data)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per step (default 32)")
    p.add_argument("--width", type=float, default=1.0,
                   help="channels relative to Wav2Lip's expert (default 1: the same network; 0.5 costs a quarter "
                        "of the compute, for a CPU)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4, as Wav2Lip)")
    p.add_argument("--max-steps", type=int, default=100_000, help="stop after this many steps")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall time")
    p.add_argument("--validate-every", type=int, default=500, help="held-out accuracy every N steps")
    p.add_argument("--checkpoint-every", type=int, default=500, help="resumable checkpoint every N steps")
    p.add_argument("--log-every", type=int, default=20, help="log.csv and progress every N steps")
    p.add_argument("--val-pairs", type=int, default=512, help="held-out windows scored (each in and off sync)")
    p.add_argument("--same-clip-negatives", type=float, default=0.9, metavar="F",
                   help="fraction of off-sync pairs taken from the same clip, at least 5 frames away (default 0.9; "
                        "the rest use other clips' audio)")
    p.add_argument("--no-augment", action="store_true", help="no flips or brightness changes of the faces")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Returns the exit status: 0 trained, 1 failed, 2 bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from lipsync.training.sync_trainer import ExpertConfig, ExpertTrainer

    config = ExpertConfig(data=args.data, output=args.output, val_data=args.val_data, batch_size=args.batch_size,
                          width=args.width,
                          lr=args.lr, max_steps=args.max_steps, max_minutes=args.max_minutes,
                          validate_every=args.validate_every, checkpoint_every=args.checkpoint_every,
                          log_every=args.log_every, val_pairs=args.val_pairs, seed=args.seed, threads=args.threads,
                          cpu=args.cpu, augment=not args.no_augment,
                          same_clip_negatives=args.same_clip_negatives, progress=not args.no_progress)
    try:
        output = ExpertTrainer(config).run()
    except LipSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to resume from {args.output}/checkpoint", file=sys.stderr)
        return 130
    import json

    held_out = json.loads((output / "expert.json").read_text())["held_out"]
    print(f"expert written to {output}/expert.safetensors; held-out balanced accuracy "
          f"{held_out['balanced_accuracy']:.3f} on {held_out['pairs']} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
