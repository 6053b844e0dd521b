"""Show that the trainer learns: train a small Diff2Lip on this CPU for a fixed wall time, then measure it.

    python benchmarks/train_small.py [--minutes 60] [--output /work/runs/small] [--sync-expert PATH]
    python benchmarks/train_small.py --device cuda [--minutes 8] [--compile] [--init SOURCE]    # the GPU recipe

Not part of CI. Steps (each skipped when its output already exists, so the script resumes):

1. prepare the training clips of ``../shared/media/train/`` (never ``pub_*``) and, separately, the held-out
   ``../shared/media/pub_video*`` clips (all in split "val") with ``python -m lipsync.prepare``;
2. train with ``python -m lipsync.train`` for ``--minutes`` of wall time (L_simple + VLB + L2; the SyncNet
   term only when ``--sync-expert`` is given), validating on the held-out clips;
3. score lower-half PSNR / SSIM (``lipsync.evaluate``) on held-out frames at the 128 px crop size for the
   trained model (``RUN/final`` through ``load_pipeline``, as the CLI and the app load it), the untrained
   model (the trainer's seeded initialisation) and a copy-the-reference baseline (the reference frame's
   lower half pasted unchanged); and whether the models use their audio (``lipsync.scoring.audio_dependence``:
   the one-step check for both, the sampled check for the trained one, with audio of other frames, of another
   clip and silence);
4. write ``docs/train_small_loss.png`` (loss curve), ``docs/train_small_grid.png`` (held-out frames:
   source | copy reference | untrained | trained) and ``docs/train_small_results.json``.

The size is chosen for a 2-core CPU shared with other jobs: 64 px crops (the pipeline resizes the 128 px
crops in and out), 32 base channels, 4 levels (64/32/16/8 px, attention at 16 and 8), one residual block
per level (about 5 M parameters against the paper's ~100 M), batch 2 x 5 frames, bf16 autocast (AMX),
one thread per process (faster than two on a busy machine).

``--device cuda`` is the GPU recipe (:data:`GPU_RECIPE`, about 8 minutes on one H100/H200): the model size of
``small64_h200`` (64 px, 64 base channels, 15.9 M parameters), batch 64, bf16, 8 loader workers, and the training
options against the copy shortcut (audio dropout 0.1, the reference at least 25 frames from the window and
jittered half of the time, the audio encoder at 5x the learning rate). It scores on the GPU and writes
``docs/train_small_gpu_*`` (the same JSON and figures), so the CPU figures stay. The CPU path is unchanged.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIPSYNC_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))

MODEL_FLAGS = ["--image-size", "64", "--model-channels", "32", "--channel-mult", "1,2,2,4",
               "--num-res-blocks", "1", "--attention-resolutions", "16,8", "--num-head-channels", "32"]
# --device cuda: small64_h200's model size and loop settings, plus the options against the copy shortcut
GPU_MODEL_FLAGS = ["--image-size", "64", "--model-channels", "64", "--channel-mult", "1,2,2,4",
                   "--num-res-blocks", "1", "--attention-resolutions", "16,8", "--num-head-channels", "32"]
GPU_RECIPE = ["--batch-size", 64, "--lr", 3e-4, "--lr-warmup-steps", 200, "--ema-decay", 0.998,
              "--mixed-precision", "bf16", "--num-workers", 8, "--threads", 4, "--checkpoint-every", 500,
              "--validate-every", 500, "--log-every", 50,
              "--audio-dropout", 0.1, "--reference-min-distance", 25, "--reference-augment", 0.5,
              "--audio-lr-scale", 5]


def run(cmd, **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=REPO, **kwargs)


def prepare(videos: Path, output: Path, detector: str, val_fraction: float, workers: int) -> None:
    """python -m lipsync.prepare (resumes when ``output`` exists)."""
    names = [p.name for p in videos.iterdir()] if videos.is_dir() else []
    if val_fraction < 1 and any(n.startswith("pub_") for n in names):
        raise SystemExit(f"{videos} holds pub_* clips: those are the held-out test set, never train on them")
    run([sys.executable, "-m", "lipsync.prepare", "--videos", videos, "--output", output, "--detector", detector,
         "--workers", workers, "--val-fraction", val_fraction, "--no-progress"])


def held_out_folder(media: Path, folder: Path) -> Path:
    """A folder of links to the pub_video* clips (the held-out set)."""
    folder.mkdir(parents=True, exist_ok=True)
    for clip in sorted(media.glob("pub_video*")):
        link = folder / clip.name
        if not link.exists():
            link.symlink_to(clip.resolve())
    return folder


# -- scoring ----------------------------------------------------------------------------------------------


def held_out_frames(val_data: Path, count: int, seed: int = 0):
    """Middle frames of ``count`` evenly spaced held-out windows at 128 px: (faces, references, mels, clip ids).

    faces/references uint8 (K, 128, 128, 3); mels (K, 80, 16).
    """
    from lipsync.training.data import Diff2LipDataset

    dataset = Diff2LipDataset(val_data, split="val", image_size=128, seed=seed)
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    faces, refs, mels, clips = [], [], [], []
    for i in picks:
        s = dataset[int(i)]
        faces.append(s["faces"][2])
        refs.append(s["reference"])
        mels.append(s["mels"][2])
        clips.append(int(s["clip"]))
    def to_u8(images):  # (K, 3, S, S) in [-1, 1] -> (K, S, S, 3) uint8
        array = (np.stack([t.numpy() for t in images]) + 1) * 127.5
        return array.round().clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)

    return to_u8(faces), to_u8(refs), np.stack([m.numpy() for m in mels]), clips


def generate(pipe, faces, refs, mels, steps: int = 25, seed: int = 7) -> np.ndarray:
    """The pipeline's composited frames, uint8 (K, 128, 128, 3) (one shared noise, as the engine)."""
    import torch

    pipe.set_progress_bar_config(disable=True)
    out = pipe(faces=faces, reference_faces=refs, mels=mels, num_inference_steps=steps,
               generator=torch.Generator().manual_seed(seed), batch_size=8, output_type="uint8", progress_bar=False)
    return out.frames


def lower_scores(truth: np.ndarray, made: np.ndarray) -> dict:
    """Mean per-frame lower-half PSNR (dB) and SSIM of uint8 (K, 128, 128, 3) stacks."""
    from lipsync.scoring.metrics import psnr, ssim

    top = truth.shape[1] // 2
    p = [psnr(a[top:], b[top:]) for a, b in zip(truth, made)]
    s = [ssim(a[top:], b[top:]) for a, b in zip(truth, made)]
    return {"psnr": float(np.mean(p)), "ssim": float(np.mean(s)), "frames": len(p)}


def one_step_psnr(unet, val_data: Path, count: int, timesteps=(100, 300, 500, 700, 900), seed: int = 0) -> dict:
    """Lower-half PSNR (dB) of the one-step estimate x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t at the model's size, per t.

    Shows which noise levels a model has learned: the same held-out frames, noises and condition for every model.
    """
    import torch

    from lipsync.scoring.metrics import psnr
    from lipsync.model.pipeline import lower_half_mask
    from lipsync.training.data import Diff2LipDataset
    from lipsync.training.diffusion import DiffusionSchedule

    size = int(unet.config.image_size)
    dataset = Diff2LipDataset(val_data, split="val", image_size=size, seed=seed)
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    samples = [dataset[int(i)] for i in picks]
    x0 = torch.stack([s["faces"][2] for s in samples])  # (K, 3, S, S)
    ref = torch.stack([s["reference"] for s in samples])
    mels = torch.stack([s["mels"][2] for s in samples])
    mask = lower_half_mask(size, size)
    schedule = DiffusionSchedule()
    gen = torch.Generator().manual_seed(seed)
    result = {}
    for t in timesteps:
        tt = torch.full((len(x0),), t)
        noise, cond_noise = torch.randn(x0.shape, generator=gen), torch.randn(x0.shape, generator=gen)
        x_t = schedule.q_sample(x0, tt, noise)
        with torch.no_grad():
            eps = unet(x_t, tt, cond_image=x0 * (1 - mask) + mask * cond_noise, mask=mask.expand(len(x0), -1, -1, -1),
                       reference=ref, audio=mels).sample[:, :3]
        x0_hat = schedule.predict_x0(x_t, tt, eps).clamp(-1, 1)
        top = size // 2
        to_u8 = lambda x: ((x[:, :, top:] + 1) * 127.5).round().numpy()  # noqa: E731
        result[int(t)] = psnr(to_u8(x0), to_u8(x0_hat))
    ref_lower = psnr(((x0[:, :, size // 2:] + 1) * 127.5).round().numpy(), ((ref[:, :, size // 2:] + 1) * 127.5).round().numpy())
    return {"per_t": result, "copy_reference": ref_lower, "image_size": size}


def untrained_pipeline(run_dir: Path):
    """The trainer's starting point for this run's model: seeded, guided-diffusion initialisation."""
    import torch

    from lipsync.model.pipeline import Diff2LipPipeline, default_scheduler
    from lipsync.training.config import build_unet, init_like_guided_diffusion

    config = json.loads((run_dir / "run_config.json").read_text())
    torch.manual_seed(int(config["train"]["seed"]))
    unet = build_unet(config["unet_config"])
    init_like_guided_diffusion(unet)
    return Diff2LipPipeline(unet=unet.eval(), scheduler=default_scheduler())


# -- figures ----------------------------------------------------------------------------------------------


def read_csv(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def loss_curve_png(losses_csv: Path, val_csv: Path, path: Path, title: str) -> None:
    """Training L_simple per step (light), its 50-step moving average (dark) and the held-out L_simple
    (dots), log-scale y, drawn with PIL."""
    from PIL import Image, ImageDraw

    rows = read_csv(losses_csv)
    steps = np.array([int(r["step"]) for r in rows])
    simple = np.array([float(r["simple"]) for r in rows])
    val = read_csv(val_csv) if val_csv.is_file() else []
    vsteps = np.array([int(r["step"]) for r in val])
    vsimple = np.array([float(r["simple"]) for r in val])
    k = min(50, len(simple))
    smooth = np.convolve(simple, np.ones(k) / k, mode="valid")
    width, height, left, right, top, bottom = 720, 420, 70, 20, 40, 50
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    lo = math.floor(math.log10(max(1e-4, min(simple.min(), vsimple.min() if len(vsimple) else 1))))
    hi = math.ceil(math.log10(max(simple.max(), vsimple.max() if len(vsimple) else 0)))
    hi = max(hi, lo + 1)
    xmax = max(1, int(steps.max()))
    X = lambda s: left + (width - left - right) * s / xmax  # noqa: E731
    Y = lambda v: top + (height - top - bottom) * (hi - math.log10(max(v, 10 ** lo))) / (hi - lo)  # noqa: E731
    for e in range(lo, hi + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if 10 ** lo <= v <= 10 ** hi:
                d.line([(left, Y(v)), (width - right, Y(v))], fill=(225, 225, 225) if m > 1 else (190, 190, 190))
                d.text((5, Y(v) - 6), f"{v:g}", fill="black")
    for i in range(6):
        s = xmax * i / 5
        d.line([(X(s), height - bottom), (X(s), height - bottom + 4)], fill="black")
        d.text((X(s) - 10, height - bottom + 8), f"{int(s)}", fill="black")
    d.rectangle([left, top, width - right, height - bottom], outline="black")
    d.line([(X(s), Y(v)) for s, v in zip(steps, simple)], fill=(160, 190, 230), width=1)
    d.line([(X(s), Y(v)) for s, v in zip(steps[k - 1:], smooth)], fill=(20, 60, 160), width=2)
    for s, v in zip(vsteps, vsimple):
        d.ellipse([X(s) - 4, Y(v) - 4, X(s) + 4, Y(v) + 4], fill=(210, 60, 30))
    d.text((left, 10), title, fill="black")
    d.text((width // 2 - 40, height - 20), "optimiser step", fill="black")
    d.text((width - 330, top + 6), "train L_simple (light: per step, dark: 50-step mean)", fill=(20, 60, 160))
    d.text((width - 330, top + 20), "held-out L_simple (EMA weights)", fill=(210, 60, 30))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def grid_png(columns, labels, path: Path) -> None:
    from lipsync.training.reporting import image_grid, save_png

    save_png(image_grid(columns, labels), path)


# -- main -------------------------------------------------------------------------------------------------


def train_command(args, run_dir: Path) -> list:
    """The ``python -m lipsync.train`` command: the CPU run of the README, or the GPU recipe (``--device cuda``)."""
    cmd = [sys.executable, "-m", "lipsync.train", "--data", args.data, "--val-data", args.val_data,
           "--output", run_dir, "--preset", "sync" if args.sync_expert else "simple", "--lambda-l2", args.lambda_l2,
           "--l2-weighting", args.l2_weighting]
    if args.device == "cuda":
        cmd += [*(["--init", args.init] if args.init else GPU_MODEL_FLAGS), *GPU_RECIPE, "--max-steps", 1_000_000,
                "--max-minutes", args.minutes, "--val-samples", 16, "--val-grid", 6, "--seed", 0]
        if args.compile:
            cmd += ["--compile"]
    else:
        cmd += [*MODEL_FLAGS, "--batch-size", args.batch_size, "--lr", args.lr, "--lr-warmup-steps", 100,
                "--ema-decay", 0.999, "--mixed-precision", "bf16", "--threads", 1, "--max-steps", 1_000_000,
                "--max-minutes", args.minutes, "--checkpoint-every", 100, "--validate-every", 100,
                "--val-samples", 16, "--val-grid", 6, "--log-every", 25, "--seed", 0]
    if args.sync_expert:
        cmd += ["--sync-expert", args.sync_expert]
    if (run_dir / "checkpoints").is_dir():
        cmd += ["--resume"]
    return cmd


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu: the README's 2-core run; cuda: the GPU recipe (GPU_RECIPE, docs/train_small_gpu_*)")
    p.add_argument("--minutes", type=float, default=None, help="training wall time (default 60 on the CPU, 8 on a GPU)")
    p.add_argument("--output", type=Path, default=None,
                   help="run folder, outside git (default /work/runs/small; /work/runs/small_gpu with --device cuda)")
    p.add_argument("--init", default=None, help="--device cuda: fine-tune this model instead of training from scratch")
    p.add_argument("--compile", action="store_true", help="--device cuda: torch.compile the UNet")
    p.add_argument("--dry-run", action="store_true", help="print the training command and stop")
    p.add_argument("--data", type=Path, default=Path("/work/data/train_opencv"), help="training dataset (made or reused)")
    p.add_argument("--val-data", type=Path, default=Path("/work/data/val_pub"), help="held-out dataset (made or reused)")
    p.add_argument("--media", type=Path, default=SHARED / "media")
    p.add_argument("--detector", default="opencv", help="face detector of the data preparation")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--sync-expert", default=None, help="Wav2Lip lipsync_expert.pth: adds the SyncNet term")
    p.add_argument("--lambda-l2", type=float, default=1.0, help="weight of the L2 term on x̂0")
    p.add_argument("--l2-weighting", choices=["none", "snr"], default="none",
                   help="none: the paper's plain L2 (the README's run); snr: weighted by min(1, SNR_t)")
    p.add_argument("--eval-frames", type=int, default=30, help="held-out frames scored")
    p.add_argument("--docs", type=Path, default=REPO / "docs")
    p.add_argument("--skip-train", action="store_true", help="only score and draw an existing run")
    args = p.parse_args(argv)
    gpu = args.device == "cuda"
    if args.minutes is None:
        args.minutes = 8.0 if gpu else 60.0
    if args.output is None:
        args.output = Path("/work/runs/small_gpu" if gpu else "/work/runs/small")
    if not gpu and (args.init or args.compile):
        p.error("--init and --compile belong to the GPU recipe (--device cuda)")
    if args.dry_run:
        print(" ".join(str(c) for c in train_command(args, args.output)))
        return 0
    import torch

    if gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU here; run without --device for the CPU run")
    device = "cuda" if gpu else "cpu"
    stem = "train_small_gpu" if gpu else "train_small"  # the GPU run's figures beside the CPU run's

    # 1. data
    if not (args.data / "manifest.json").is_file():
        prepare(args.media / "train", args.data, args.detector, 0.0, args.workers)
    if not (args.val_data / "manifest.json").is_file():
        prepare(held_out_folder(args.media, args.output.parent / "held_out_videos"), args.val_data, args.detector,
                1.0, 1)

    # 2. train
    run_dir = args.output
    if not args.skip_train and not (run_dir / "final" / "model_index.json").is_file():
        started = time.time()
        run(train_command(args, run_dir))
        print(f"trained for {(time.time() - started) / 60:.1f} min")

    # 3. score held-out frames at the 128 px crop size
    from lipsync import load_pipeline

    if not gpu:
        torch.set_num_threads(1)
    faces, refs, mels, clips = held_out_frames(args.val_data, args.eval_frames)

    def starting_pipeline():  # the weights training began from: the --init model, else the seeded initialisation
        if args.init:
            return load_pipeline(args.init, device=device, dtype="fp32")
        return untrained_pipeline(run_dir).to(device) if gpu else untrained_pipeline(run_dir)

    trained = generate(load_pipeline(run_dir / "final", device=device), faces, refs, mels)
    untrained = generate(starting_pipeline(), faces, refs, mels)
    copy_ref = faces.copy()
    copy_ref[:, 64:] = refs[:, 64:]
    rows = {"trained": lower_scores(faces, trained), "untrained": lower_scores(faces, untrained),
            "copy the reference": lower_scores(faces, copy_ref)}
    trained_pipe = load_pipeline(run_dir / "final", device="cpu")  # one-step PSNR on the CPU in fp32 on any device
    one_step = {"trained": one_step_psnr(trained_pipe.unet, args.val_data, args.eval_frames),
                "untrained": one_step_psnr(starting_pipeline().unet.cpu(), args.val_data, args.eval_frames)}
    # does the model use its audio? right vs wrong audio (other frames, another clip, silence), in fp32
    from lipsync.evaluate import audio_dependence_frames, evaluate_audio_dependence

    held = audio_dependence_frames(args.val_data, count=args.eval_frames)
    audio_dep = {"trained": evaluate_audio_dependence(load_pipeline(run_dir / "final", device=device, dtype="fp32"),
                                                      held),
                 "untrained": evaluate_audio_dependence(starting_pipeline(), held, sample=False)}
    losses = read_csv(run_dir / "losses.csv")
    config = json.loads((run_dir / "run_config.json").read_text())
    summary = {
        "steps": int(losses[-1]["step"]), "minutes": float(losses[-1]["seconds"]) / 60,
        "samples_seen": int(losses[-1]["samples"]), "parameters": config["parameters"],
        "image_size": config["unet_config"]["image_size"], "unet_config": config["unet_config"],
        "loss_weights": config["loss_weights"], "global_batch": config["global_batch"],
        "train_simple_first_50": float(np.mean([float(r["simple"]) for r in losses[:50]])),
        "train_simple_last_50": float(np.mean([float(r["simple"]) for r in losses[-50:]])),
        "held_out_frames": len(faces), "held_out_clips": sorted(set(clips)), "scores": rows,
        "one_step_x0_psnr": one_step,
        "audio_dependence": {name: report.as_dict() for name, report in audio_dep.items()},
    }
    if gpu:
        summary["device"] = torch.cuda.get_device_name(0)
        summary["train_options"] = {k: config["train"].get(k) for k in (
            "audio_dropout", "reference_min_distance", "reference_augment", "x0_clip", "audio_lr_scale", "compile",
            "batch_size", "lr", "init")}  # with --init, "untrained" rows are that model's
    val = read_csv(run_dir / "validation.csv") if (run_dir / "validation.csv").is_file() else []
    if val:
        summary["held_out_simple_first"], summary["held_out_simple_last"] = float(val[0]["simple"]), float(val[-1]["simple"])
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"{stem}_results.json").write_text(json.dumps(summary, indent=1))

    # 4. figures
    where = f"on one {summary['device']}" if gpu else "on a shared 2-core CPU"
    title = (f"Diff2Lip small ({config['parameters'] / 1e6:.1f} M params, {summary['image_size']} px), "
             f"{summary['steps']} steps in {summary['minutes']:.0f} min {where}")
    loss_curve_png(run_dir / "losses.csv", run_dir / "validation.csv", args.docs / f"{stem}_loss.png", title)
    shown = np.linspace(0, len(faces) - 1, min(6, len(faces))).round().astype(int)
    grid_png([faces[shown], copy_ref[shown], untrained[shown], trained[shown]],
             ["source", "copy reference", "untrained", "trained"], args.docs / f"{stem}_grid.png")

    print(f"\n{title}\n")
    print("| lower half, held-out frames | PSNR (dB) | SSIM |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} |")
    ts = list(one_step["trained"]["per_t"])
    print(f"\none-step x̂0, lower-half PSNR (dB) at {one_step['trained']['image_size']} px\n")
    print("| model | " + " | ".join(f"t = {t}" for t in ts) + " |\n|---|" + "---|" * len(ts))
    for name in ("trained", "untrained"):
        print(f"| {name} | " + " | ".join(f"{one_step[name]['per_t'][t]:.2f}" for t in ts) + " |")
    print(f"| copy the reference | {one_step['trained']['copy_reference']:.2f} (any t) |")
    for name, report in audio_dep.items():
        print(f"\naudio dependence, {name} model (nan: its ε̂ is 0 everywhere)\n{report.table()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
