"""Judge the step presets on a model that has learned: each candidate against the same model's ``paper`` output.

    python benchmarks/presets.py --checkpoint ../shared/models/small64_h200 [--frames 12] [--json PATH] [--png PATH]

Not part of CI. For the README's photo example (held still, as the app holds a photo) and for frames of a
held-out clip, the face crops go through the pipeline with each candidate (scheduler, steps, DeepCache interval)
and the same seed. Printed per candidate: full-UNet evaluations per frame, seconds per frame, the lower-half PSNR
against the ``paper`` output (DDIM 25), and the mouth's high-frequency energy relative to ``paper``'s (the
Laplacian's mean absolute value over the lower half: colour noise shows as a ratio well above 1). ``--png`` writes
a grid of the lower halves (rows: crops; columns: paper, then each candidate) to look at.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIPSYNC_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))

# (name, steps, DeepCache interval); "paper" first: the reference of every other row
CANDIDATES = [("paper", 25, 1), ("fast", 10, 1), ("draft", 6, 2), ("ddim8", 8, 1), ("ddim6", 6, 1),
              ("ddim10-dc2", 10, 2), ("ddim12-dc2", 12, 2)]


def face_crops(video: Path, audio: Path, frames: int, detector: str):
    """(N, 128, 128, 3) uint8 crops of the first ``frames`` frames of ``video`` (a photo repeats) and their mels."""
    import cv2

    from lipsync.media.audio import load_audio, mel_windows, melspectrogram
    from lipsync.media.crop import crop_faces
    from lipsync.media.detectors import get_detector

    if video.suffix.lower() in (".png", ".jpg", ".jpeg"):
        image = cv2.cvtColor(cv2.imread(str(video)), cv2.COLOR_BGR2RGB)
        images = np.stack([image] * frames)
        fps = 25
    else:
        cap = cv2.VideoCapture(str(video))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25
        images = []
        while len(images) < frames:
            ok, frame = cap.read()
            if not ok:
                break
            images.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        images = np.stack(images)
    dets = get_detector(detector, fallback=False).detect(images)
    boxes = []
    for d in dets:
        if len(d) == 0:
            raise SystemExit(f"no face in a frame of {video}")
        best = d[np.argmax((d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1]))]
        boxes.append(best[:4])
    crops = crop_faces(images, np.asarray(boxes, dtype=np.float64), 128)
    mels = mel_windows(melspectrogram(load_audio(audio)), fps, num_frames=len(crops))
    return crops, np.asarray(mels, dtype=np.float32)


def lower(x: np.ndarray) -> np.ndarray:
    return x[:, x.shape[1] // 2:]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def high_frequency(x: np.ndarray) -> float:
    import cv2

    return float(np.mean([np.abs(cv2.Laplacian(f.astype(np.float32), cv2.CV_32F)).mean() for f in lower(x)]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/presets.py", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(SHARED / "models" / "small64_h200"))
    p.add_argument("--frames", type=int, default=12, help="crops per input")
    p.add_argument("--detector", default="mediapipe")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--json", default=None)
    p.add_argument("--png", default=None)
    args = p.parse_args(argv)

    import torch

    from lipsync.model.loading import load_pipeline

    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    pipe = load_pipeline(args.checkpoint, device="cpu", dtype=dtype)
    inputs = {
        "photo": face_crops(REPO / "assets" / "example_face.png", REPO / "assets" / "example_speech.wav",
                            args.frames, args.detector),
        "held-out clip": face_crops(SHARED / "media" / "pub_video1_retalking_face2.mp4",
                                    SHARED / "media" / "pub_video1_retalking_face2.mp4", args.frames, args.detector),
    }
    results, grid_rows = [], []
    for label, (crops, mels) in inputs.items():
        outputs = {}
        for name, steps, interval in CANDIDATES:
            start = time.perf_counter()
            out = pipe(faces=crops, mels=torch.from_numpy(mels), num_inference_steps=steps,
                       generator=torch.Generator().manual_seed(7), output_type="uint8", progress_bar=False,
                       deepcache_interval=interval, batch_size=len(crops)).frames
            seconds = (time.perf_counter() - start) / len(crops)
            outputs[name] = np.asarray(out)
            ref = outputs["paper"]
            row = {"input": label, "candidate": name, "steps": steps, "deepcache_interval": interval,
                   "seconds_per_frame": round(seconds, 3),
                   "psnr_vs_paper": round(psnr(lower(outputs[name]), lower(ref)), 2),
                   "psnr_vs_source": round(psnr(lower(outputs[name]), lower(crops)), 2),
                   "high_frequency_vs_paper": round(high_frequency(outputs[name]) / high_frequency(ref), 3)}
            results.append(row)
            print(f"{label:14s} {name:11s} DDIM {steps:2d} DC {interval}  {seconds:6.2f} s/frame  "
                  f"{row['psnr_vs_paper']:6.2f} dB vs paper  {row['psnr_vs_source']:6.2f} dB vs source  "
                  f"HF x{row['high_frequency_vs_paper']:.2f}", flush=True)
        for i in (0, len(crops) // 2):
            grid_rows.append(np.concatenate([lower(crops[i:i + 1])[0]] + [lower(outputs[n][i:i + 1])[0]
                                                                          for n, _, _ in CANDIDATES], axis=1))
    if args.png:
        import cv2

        grid = np.concatenate(grid_rows, axis=0)
        cv2.imwrite(args.png, cv2.cvtColor(cv2.resize(grid, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST),
                                           cv2.COLOR_RGB2BGR))
        print(f"grid (columns: source, {', '.join(n for n, _, _ in CANDIDATES)}): {args.png}")
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "dtype": args.dtype,
                                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
