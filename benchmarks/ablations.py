"""Which training options stop the copy shortcut? The same short fine-tune for each variant, then the same
audio-dependence scores.

    python benchmarks/ablations.py --init ../shared/models/small64_h200 --minutes 10 [--variants baseline,combined]
    python benchmarks/ablations.py --init ... --dry-run          # the commands only

A model trained with L_simple alone can copy the reference frame's mouth and the known upper face and never use
its mel windows (issue 16: ``small64_h200`` gives the same output with the right and the wrong audio). Each
variant below fine-tunes the ``--init`` model with ``python -m lipsync.train`` for the same budget
(``--minutes`` of wall time, or ``--max-steps`` steps, which is the fairer budget on a shared machine) and the
same recipe (``--preset simple --lambda-l2 1``, the recipe ``small64_h200`` was trained with), changing one
option; ``combined`` changes all of them. Then every model, and the ``--init`` model itself, is scored on the
held-out ``pub_*`` clips (``--val-data``) with :func:`lipsync.evaluate.evaluate_audio_dependence`, as
``benchmarks/train_small.py`` does:

* ``ratio_t300``: the one-step audio dependence at t = 300, mean|ε̂(right) − ε̂(wrong)| / mean|ε̂(right)| over
  the lower half, with the audio of other frames of the same clip (and of another clip, and silence);
* ``psnr_right``: lower-half PSNR (dB) to the ground truth of the frames sampled with their own audio (DDIM);
* ``psnr_wrong_vs_right``: lower-half PSNR between the samples with other frames' audio and with the right
  audio (inf: the audio changed nothing).

Writes ``--json`` (default ``docs/ablations_results.json``) and prints a table. Each run folder is reused when
its ``final/`` exists, so an interrupted script resumes. Not part of CI; it trains for
``len(variants) x --minutes``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIPSYNC_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))

# name -> extra flags of python -m lipsync.train (each a change against the baseline)
VARIANTS: Dict[str, List[str]] = {
    "baseline": [],
    "audio_dropout_0.1": ["--audio-dropout", "0.1"],
    "audio_lr_x10": ["--audio-lr-scale", "10"],
    "reference_distance_25": ["--reference-min-distance", "25"],
    "reference_augment_0.5": ["--reference-augment", "0.5"],
    "no_x0_clip": ["--no-x0-clip"],
}
VARIANTS["combined"] = [flag for name, flags in VARIANTS.items() for flag in flags]
SCORE_T = 300  # the one-step ratio's noise level (the trainer's validation audio_dep uses the same)


def train_command(args, variant: str, run_dir: Path) -> List[str]:
    """The ``python -m lipsync.train`` command of one variant."""
    cmd = [sys.executable, "-m", "lipsync.train", "--data", args.data, "--output", run_dir, "--preset", "simple",
           "--lambda-l2", "1", "--batch-size", args.batch_size, "--lr", args.lr, "--lr-warmup-steps",
           args.warmup_steps, "--ema-decay", args.ema_decay, "--mixed-precision", "bf16", "--seed", args.seed,
           "--max-steps", args.max_steps or 1_000_000, "--checkpoint-every", 0, "--validate-every", 0,
           "--log-every", 25, "--quiet"]
    if args.init:
        cmd += ["--init", args.init]
    if args.minutes is not None:
        cmd += ["--max-minutes", args.minutes]
    if args.device == "cpu":
        cmd += ["--cpu", "--threads", args.threads]
    else:
        cmd += ["--num-workers", args.workers]
    cmd += [*args.train_flags, *VARIANTS[variant]]
    return [str(c) for c in cmd]


def score(model: str, held, device: str, steps: int) -> dict:
    """The audio-dependence figures of one model folder (fp32)."""
    from lipsync import load_pipeline
    from lipsync.evaluate import evaluate_audio_dependence

    pipe = load_pipeline(model, device=device, dtype="fp32")
    report = evaluate_audio_dependence(pipe, held, steps=steps, timesteps=(SCORE_T,), sample=True)
    one, smp = report.one_step, report.samples
    return {
        "ratio_t300": {name: one.ratio(SCORE_T, name) for name in one.ratios},
        "psnr_right": smp.psnr_to_truth["right"],
        "psnr_wrong": {name: smp.psnr_to_truth[name] for name in one.ratios},
        "psnr_wrong_vs_right": dict(smp.psnr_to_right),
        "report": report.as_dict(),
    }


def copy_reference_psnr(held) -> float:
    """Lower-half PSNR (dB) of pasting each frame's reference lower half unchanged: the copy shortcut's score."""
    import numpy as np

    from lipsync.scoring.metrics import psnr

    top = held.faces.shape[1] // 2
    return float(np.mean([psnr(a[top:], b[top:]) for a, b in zip(held.faces, held.references)]))


def table(rows: Dict[str, dict], copy_ref: float) -> str:
    """The printed summary: one row per model."""
    def fmt(v, spec):
        return f"{v:{spec}}" if isinstance(v, (int, float)) and math.isfinite(v) else str(v)

    lines = ["| model | steps | ratio t=300, other frames | other clip | silence | PSNR right (dB) | "
             "wrong vs right (dB) |", "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        r = row["ratio_t300"]
        lines.append(f"| {name} | {row.get('steps', 0)} | {fmt(100 * r.get('other_frames', math.nan), '.3g')}% | "
                     f"{fmt(100 * r.get('other_clip', math.nan), '.3g')}% | "
                     f"{fmt(100 * r.get('silence', math.nan), '.3g')}% | "
                     f"{fmt(row['psnr_right'], '.2f')} | "
                     f"{fmt(row['psnr_wrong_vs_right'].get('other_frames', math.nan), '.2f')} |")
    lines.append(f"| copy the reference | | | | | {copy_ref:.2f} | |")
    return "\n".join(lines)


def jsonable(obj):
    """``obj`` with non-finite floats as strings ("inf": the audio changed nothing), so the file is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def read_steps(run_dir: Path) -> dict:
    import csv

    with open(run_dir / "losses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {"steps": int(rows[-1]["step"]), "minutes": float(rows[-1]["seconds"]) / 60} if rows else {"steps": 0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", default=str(SHARED / "models" / "small64_h200"),
                   help="the model every variant starts from")
    p.add_argument("--minutes", type=float, default=None, help="wall-time budget of each variant")
    p.add_argument("--max-steps", type=int, default=None, help="step budget of each variant (fairer on a busy machine)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--output", type=Path, default=Path("/work/runs/ablations"), help="run folders (outside git)")
    p.add_argument("--data", type=Path, default=Path("/work/data/train_mp"), help="training dataset (lipsync.prepare)")
    p.add_argument("--val-data", type=Path, default=Path("/work/data/val_pub_mp"), help="held-out pub_* dataset")
    p.add_argument("--json", type=Path, default=REPO / "docs" / "ablations_results.json")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per training process")
    p.add_argument("--workers", type=int, default=8, help="data loader workers on a GPU")
    p.add_argument("--eval-frames", type=int, default=30, help="held-out frames scored")
    p.add_argument("--sampling-steps", type=int, default=25, help="DDIM steps of the sampled check")
    p.add_argument("--train-flags", nargs=argparse.REMAINDER, default=[],
                   help="more python -m lipsync.train flags for every variant (last on the line)")
    p.add_argument("--dry-run", action="store_true", help="print the training commands and stop")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.minutes is None and args.max_steps is None:
        p.error("give a budget: --minutes M and/or --max-steps N (the same for every variant)")

    commands = {v: train_command(args, v, args.output / v) for v in variants}
    if args.dry_run:
        for v, cmd in commands.items():
            print(f"# {v}\n{' '.join(cmd)}")
        return 0

    # 1. train each variant (a finished run is reused)
    for v, cmd in commands.items():
        if (args.output / v / "final" / "model_index.json").is_file():
            print(f"{v}: reusing {args.output / v / 'final'}")
            continue
        print("+", " ".join(cmd), flush=True)
        started = time.time()
        subprocess.run(cmd, check=True, cwd=REPO)
        print(f"{v}: trained for {(time.time() - started) / 60:.1f} min", flush=True)

    # 2. score the starting model and every variant on the same held-out frames
    import torch

    from lipsync.evaluate import audio_dependence_frames

    if args.device == "cpu":
        torch.set_num_threads(max(1, args.threads))
    held = audio_dependence_frames(args.val_data, count=args.eval_frames)
    rows: Dict[str, dict] = {}
    if args.init:
        rows["init"] = {"steps": 0, **score(args.init, held, args.device, args.sampling_steps)}
    for v in variants:
        run_dir = args.output / v
        rows[v] = {**read_steps(run_dir), "flags": VARIANTS[v],
                   **score(str(run_dir / "final"), held, args.device, args.sampling_steps)}
    copy_ref = copy_reference_psnr(held)
    results = {
        "init": args.init, "budget": {"minutes": args.minutes, "max_steps": args.max_steps},
        "train_command": {v: cmd[1:] for v, cmd in commands.items()}, "device": args.device,
        "held_out_frames": len(held.faces), "held_out_clips": sorted(set(held.clips)), "score_t": SCORE_T,
        "sampling_steps": args.sampling_steps, "copy_reference_psnr": copy_ref,
        "models": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(jsonable(results), indent=1, default=str))
    print(f"\n{table(rows, copy_ref)}\n\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
