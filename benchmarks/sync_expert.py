"""Train our own lip-sync expert on this CPU and measure lip sync without downloaded weights.

    python benchmarks/sync_expert.py [--minutes 60] [--output /work/runs/expert] [--baseline-model DIR]

Not part of CI. Steps (each skipped when its output exists, so the script resumes):

1. prepare ``../shared/media/train`` (training) and, separately, the held-out ``pub_video*`` clips (never trained
   on) with ``python -m lipsync.prepare --detector mediapipe``;
2. train the expert with ``python -m lipsync.train_syncnet`` for ``--minutes`` of wall time, validating on the
   held-out clips;
3. measure, on each held-out clip, with its own speech and with another clip's speech:
   the held-out balanced accuracy (every window in and off sync), the own-expert score (offset, confidence,
   distance at offset 0) and the mouth-motion check (FaceMesh mouth opening against the speech envelope);
4. the baseline: lip-sync each held-out clip with ``--baseline-model`` (default ``../shared/models/small64_h200``)
   driven by its own speech and by another clip's speech, and score the results with the same measures;
5. write ``docs/sync_expert.json`` and ``docs/sync_expert.png`` (mean distance per offset, own vs other speech).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIPSYNC_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))


def run(cmd) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=REPO)


def prepare(videos: Path, output: Path, val_fraction: float) -> None:
    if (output / "manifest.json").is_file():
        return
    names = [p.name for p in videos.iterdir()]
    if val_fraction < 1 and any(n.startswith("pub_") for n in names):
        raise SystemExit(f"{videos} holds pub_* clips: the held-out test set is never trained on")
    run([sys.executable, "-m", "lipsync.prepare", "--videos", videos, "--output", output, "--detector", "mediapipe",
         "--workers", "1", "--val-fraction", val_fraction, "--no-progress"])


def pub_clips(media: Path) -> list:
    return sorted(media.glob("pub_video*.mp4"))


def held_out_accuracy(expert_dir: Path, val_data: Path) -> dict:
    """Balanced accuracy on every held-out window, once in sync and once off sync."""
    import torch

    from lipsync.scoring.syncnet_color import load_own_expert
    from lipsync.training.sync_data import SyncPairs
    from lipsync.training.sync_trainer import evaluate_pairs

    pairs = SyncPairs(val_data, "val", seed=1)
    with torch.no_grad():
        return evaluate_pairs(load_own_expert(expert_dir), pairs, len(pairs), "cpu")


def clip_scores(expert, val_data: Path, clips: list) -> dict:
    """Own-expert score of each held-out clip (its prepared face crops) with its own and another clip's speech."""
    from lipsync.media import audio as audio_io
    from lipsync.scoring.own_sync import score_faces
    from lipsync.training.data import open_clip, read_dataset_manifest

    records = {Path(r["source"]).name: r for r in read_dataset_manifest(val_data)["clips"]}
    out = {}
    for i, clip in enumerate(clips):
        other = clips[(i + 1) % len(clips)]
        arrays = open_clip(val_data, records[clip.name])
        faces, valid, fps = np.asarray(arrays.faces), np.asarray(arrays.valid, bool), float(arrays.fps)
        own = score_faces(expert, faces, valid, np.asarray(arrays.audio), fps)
        wav = audio_io.load_audio(other)
        wav = np.resize(wav, max(len(wav), len(arrays.audio)))  # the other speech, looped to the clip's length
        wrong = score_faces(expert, faces, valid, wav, fps)
        out[clip.name] = {"own_speech": own.as_dict(), "other_speech": {**wrong.as_dict(), "speech": other.name},
                          "dists_own": own.dists.round(4).tolist(), "dists_other": wrong.dists.round(4).tolist()}
    return out


def mouth_motion(pairs: list) -> list:
    from lipsync.scoring.mouth_motion import mouth_motion_sync

    rows = []
    for video, audio, kind in pairs:
        result = mouth_motion_sync(video, audio)
        rows.append({"video": Path(video).name, "speech": Path(audio).name, "kind": kind,
                     "peak_correlation": result.peak_correlation, "peak_lag": result.peak_lag})
    return rows


def generate_baseline(model: Path, clips: list, folder: Path, steps: int, seconds: float) -> list:
    """Lip-sync the first ``seconds`` of every held-out clip with ``model``, driven by its own speech and by
    another clip's; returns (clip, kind, speech, output) for each (existing outputs are kept: resumes)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for i, clip in enumerate(clips):
        other = clips[(i + 1) % len(clips)]
        for kind, source in (("own_speech", clip), ("other_speech", other)):
            speech = folder / f"{source.stem}_{seconds:g}s.wav"
            if not speech.is_file():
                run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", source, "-t", seconds, "-vn", "-ac", "1", "-ar",
                     16000, speech])
            out = folder / f"{clip.stem}__{kind}.mp4"
            if not out.is_file():
                run([sys.executable, "-m", "lipsync", "--checkpoint", model, "--video", clip, "--audio", speech,
                     "--output", out, "--detector", "mediapipe", "--steps", steps, "--length-policy", "shortest"])
            jobs.append((clip, kind, source, out))
    return jobs


def baseline(model: Path, clips: list, folder: Path, expert, steps: int, seconds: float) -> dict:
    """Lip-sync the held-out clips with ``model`` (own and other speech) and score the results."""
    from lipsync.scoring.own_sync import score_video

    results, motion_pairs = {}, []
    for clip, kind, speech, out in generate_baseline(model, clips, folder, steps, seconds):
        score = score_video(expert, out)  # against its own track: the speech that drove it
        results.setdefault(clip.name, {})[kind] = {**score.as_dict(), "speech": speech.name}
        motion_pairs.append((out, out, kind))
    return {"model": str(model), "steps": steps, "seconds": seconds, "own_expert": results,
            "mouth_motion": mouth_motion(motion_pairs)}


def curves_png(scores: dict, path: Path) -> None:
    """Mean distance per offset for each held-out clip: own speech (solid) and other speech (grey)."""
    from PIL import Image, ImageDraw

    width, height, left, bottom, top = 760, 380, 60, 40, 30
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    values = [v for s in scores.values() for v in s["dists_own"] + s["dists_other"] if v == v]
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1
    X = lambda o: left + (width - left - 20) * (o + 15) / 30  # noqa: E731
    Y = lambda v: top + (height - top - bottom) * (hi - v) / (hi - lo)  # noqa: E731
    d.rectangle([left, top, width - 20, height - bottom], outline="black")
    for o in range(-15, 16, 5):
        d.line([(X(o), height - bottom), (X(o), height - bottom + 4)], fill="black")
        d.text((X(o) - 6, height - bottom + 8), str(o), fill="black")
    colours = [(20, 60, 160), (200, 80, 20), (30, 140, 60), (120, 40, 140)]
    for k, (name, s) in enumerate(scores.items()):
        c = colours[k % len(colours)]
        d.line([(X(o - 15), Y(v)) for o, v in enumerate(s["dists_own"])], fill=c, width=2)
        d.line([(X(o - 15), Y(v)) for o, v in enumerate(s["dists_other"])], fill=tuple(int(x * 0.4 + 150) for x in c))
        d.text((left + 8, top + 6 + 14 * k), f"{name} (dark: own speech, light: other speech)", fill=c)
    d.text((left, 8), "own expert: mean face-audio distance per offset (frames) on held-out clips", fill="black")
    d.text((width // 2 - 30, height - 18), "offset (frames)", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="training wall time")
    p.add_argument("--output", type=Path, default=Path("/work/runs/expert"), help="expert folder (outside git)")
    p.add_argument("--data", type=Path, default=Path("/work/data/train_mp"))
    p.add_argument("--val-data", type=Path, default=Path("/work/data/val_pub_mp"))
    p.add_argument("--media", type=Path, default=SHARED / "media")
    p.add_argument("--width", type=float, default=0.5, help="expert width (1 = Wav2Lip's expert)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--baseline-model", type=Path, default=SHARED / "models" / "small64_h200")
    p.add_argument("--baseline-steps", type=int, default=25)
    p.add_argument("--baseline-seconds", type=float, default=2.0, help="seconds of each held-out clip lip-synced")
    p.add_argument("--only-baseline-videos", action="store_true", help="only make the baseline's videos, then stop")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--docs", type=Path, default=REPO / "docs")
    args = p.parse_args(argv)

    # 1. data
    prepare(args.media / "train", args.data, 0.0)
    links = args.output.parent / "held_out_videos"
    links.mkdir(parents=True, exist_ok=True)
    for clip in pub_clips(args.media):
        if not (links / clip.name).exists():
            (links / clip.name).symlink_to(clip.resolve())
    prepare(links, args.val_data, 1.0)

    if args.only_baseline_videos:
        generate_baseline(args.baseline_model, pub_clips(args.media), args.output / "baseline", args.baseline_steps,
                          args.baseline_seconds)
        return 0

    # 2. train
    if not (args.output / "expert.json").is_file():
        started = time.time()
        run([sys.executable, "-m", "lipsync.train_syncnet", "--data", args.data, "--val-data", args.val_data,
             "--output", args.output, "--max-minutes", args.minutes, "--width", args.width, "--batch-size",
             args.batch_size, "--lr", args.lr, "--threads", args.threads, "--validate-every", 250,
             "--checkpoint-every", 100, "--val-pairs", 256, "--no-progress"])
        print(f"trained in {(time.time() - started) / 60:.1f} min", flush=True)

    # 3. measures on the held-out clips
    from lipsync.scoring.syncnet_color import load_own_expert, own_expert_info

    expert = load_own_expert(args.output)
    clips = pub_clips(args.media)
    results = {"expert": own_expert_info(args.output), "held_out_accuracy": held_out_accuracy(args.output, args.val_data),
               "clips": clip_scores(expert, args.val_data, clips)}
    pairs = [(c, c, "own_speech") for c in clips] + [(c, clips[(i + 1) % len(clips)], "other_speech")
                                                     for i, c in enumerate(clips)]
    results["mouth_motion"] = mouth_motion(pairs)
    curves_png(results["clips"], args.docs / "sync_expert.png")
    # 4. the baseline model's lip sync
    if not args.skip_baseline:
        results["baseline"] = baseline(args.baseline_model, clips, args.output / "baseline", expert,
                                       args.baseline_steps, args.baseline_seconds)
    (args.docs / "sync_expert.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: results[k] for k in ("held_out_accuracy",)}, indent=1))
    for name, s in results["clips"].items():
        print(f"{name}: own speech offset {s['own_speech']['offset']:+d} conf {s['own_speech']['confidence']:.3f}"
              f" | other speech offset {s['other_speech']['offset']:+d} conf {s['other_speech']['confidence']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
