"""Speed and fidelity of every fast path against the paper-exact one, on the same clip and weights, in one run.

    python benchmarks/speed.py [--checkpoint PATH] [--frames 5] [--paths fp32 bf16 ...] [--device cpu] [--json OUT]

Each path runs a whole engine job (decode, detect, audio, diffusion, paste, encode) on the first frames of
a real clip with real speech. Printed per path: seconds per output frame of the diffusion stage, the
speed-up over the fp32 paper path (DDIM 25, fp32: the parity-tested reference), PSNR and max |delta| of the
generated half of every face crop against the fp32 path's (uint8, before paste and encode), and the job's
seconds per stage. Default weights: the parity fixture's tiny model (../shared/fixtures); pass
``--checkpoint`` for a trained one. Only ratios within one run mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lipsync.media import audio as audio_io  # noqa: E402
from lipsync.job import JobOptions  # noqa: E402
from lipsync.engine import LipSyncEngine
from lipsync.model.loading import load_pipeline  # noqa: E402

SHARED = REPO.parent / "shared"
FIXTURE_WEIGHTS = SHARED / "fixtures" / "tiny_state_dict.safetensors"


@dataclass
class Path_:
    """One way of running the job."""

    name: str
    dtype: str
    compile: bool = False
    preset: Optional[str] = None
    deepcache: Optional[int] = None


PATHS = {
    "fp32": Path_("fp32", "fp32"),  # the paper-exact reference: DDIM 25, fp32
    "bf16": Path_("bf16", "bf16"),
    "bf16+compile": Path_("bf16+compile", "bf16", compile=True),
    "deepcache": Path_("deepcache", "bf16", deepcache=2),
    "fast": Path_("fast", "bf16", preset="fast"),
    "fast+compile": Path_("fast+compile", "bf16", compile=True, preset="fast"),
    "draft": Path_("draft", "bf16", preset="draft"),
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def recording(pipe):
    """Make ``pipe`` keep the uint8 face crops it returns (to compare paths before paste and encode)."""
    base = type(pipe)

    class Recording(base):
        def __call__(self, *args, **kwargs):
            out = base.__call__(self, *args, **kwargs)
            self.recorded.append(np.asarray(out.frames).copy())
            return out

    pipe.__class__ = Recording
    pipe.recorded = []
    return pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(FIXTURE_WEIGHTS), help="weights (default: the fixture's tiny model)")
    parser.add_argument("--video", default=str(SHARED / "media" / "pub_video1_retalking_face2.mp4"))
    parser.add_argument("--audio", default=str(SHARED / "media" / "tts_en.wav"))
    parser.add_argument("--frames", type=int, default=5, help="output frames per job (5 = 0.2 s at 25 fps)")
    parser.add_argument("--steps", type=int, default=25, help="steps of the paper path (and of bf16/compile/deepcache)")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--detector", default="opencv")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)

    work = Path(tempfile.mkdtemp(prefix="lipsync-speed-"))
    fps = 25.0
    wav = audio_io.load_audio(args.audio)[: int(round(args.frames / fps * audio_io.DEFAULT_AUDIO.sample_rate))]
    import soundfile

    audio = work / "audio.wav"
    soundfile.write(audio, wav, audio_io.DEFAULT_AUDIO.sample_rate)
    print(f"{args.frames} frames of {Path(args.video).name}, weights {args.checkpoint}, device {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    results: List[Dict[str, object]] = []
    reference: Optional[np.ndarray] = None
    paths = ["fp32"] + [p for p in args.paths if p != "fp32"]  # the reference first
    for name in paths:
        spec = PATHS[name]
        pipe = recording(load_pipeline(args.checkpoint, device=args.device, dtype=spec.dtype))
        pipe.set_progress_bar_config(disable=True)
        engine = LipSyncEngine(pipeline=pipe, device=args.device, detector=args.detector)
        options = JobOptions(num_inference_steps=args.steps, preset=spec.preset, deepcache_interval=spec.deepcache,
                             compile=spec.compile, detector=args.detector, batch_size=args.frames,
                             chunk_frames=max(32, args.frames), side_by_side=False)
        compile_seconds = None
        if spec.compile:  # compile (and warm up) on one 1-step call with the job's batch shape
            from lipsync.model.acceleration import compile_pipeline

            compile_pipeline(pipe)
            start = time.perf_counter()
            faces = np.zeros((args.frames, 128, 128, 3), np.uint8)
            pipe(faces=faces, mels=np.zeros((args.frames, 80, 16), np.float32), num_inference_steps=1,
                 batch_size=args.frames, progress_bar=False)
            compile_seconds = time.perf_counter() - start
            pipe.recorded.clear()
        start = time.perf_counter()
        report = engine.run(args.video, audio, work / f"{name}.mp4", options)
        wall = time.perf_counter() - start
        faces = np.concatenate(pipe.recorded)  # (N, 128, 128, 3) uint8
        if reference is None:
            reference = faces
        low, ref_low = faces[:, 64:], reference[:, 64:]
        scheduler, steps, interval = options.sampling()
        row = {
            "path": name, "dtype": spec.dtype, "scheduler": scheduler, "steps": steps, "deepcache": interval,
            "compile": spec.compile, "frames": report.frames,
            "s_per_frame": report.seconds["diffusion"] / report.frames,
            "psnr_db": psnr(low, ref_low), "max_abs": int(np.abs(low.astype(int) - ref_low.astype(int)).max()),
            "stages": report.seconds, "wall_s": wall, "compile_s": compile_seconds,
        }
        results.append(row)
        base = results[0]["s_per_frame"]
        print(f"{name:13s} {row['dtype']:5s} {scheduler:5s} {steps:3d} steps dc {interval}: "
              f"{row['s_per_frame']:8.3f} s/frame  x{base / row['s_per_frame']:5.2f}  "
              f"PSNR {row['psnr_db']:6.2f} dB  max|d| {row['max_abs']:3d}  "
              f"stages {json.dumps({k: round(v, 2) for k, v in report.seconds.items()})}"
              + (f"  compile {compile_seconds:.0f} s" if compile_seconds else ""), flush=True)

    base = results[0]["s_per_frame"]
    print("\n| path | precision | sampler | steps | DeepCache | s/frame | speed-up vs fp32 | PSNR (dB) | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['path']} | {r['dtype']} | {r['scheduler']} | {r['steps']} | {r['deepcache']} | "
              f"{r['s_per_frame']:.3f} | {base / r['s_per_frame']:.2f}x | "
              f"{'identical' if r['psnr_db'] == float('inf') else format(r['psnr_db'], '.1f')} | {r['max_abs']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
