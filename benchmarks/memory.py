"""Peak memory of a whole job for a short and a long clip: the engine works in chunks, so RAM must not grow
with the clip's length.

    python benchmarks/memory.py [--face CLIP] [--short 10] [--long 180] [--height 512] [--checkpoint DIR]

Builds two synthetic clips by looping a face clip (default: ../shared/media's first clip, else
assets/example_face.mp4) to the given lengths, runs one job per clip in a fresh process (1 sampling step,
the small random test model unless --checkpoint is given, the download-free OpenCV detector), and prints
peak RSS, output size and the ratio. Numbers, not pass/fail.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
from lipsync.job import JobOptions
from lipsync.engine import LipSyncEngine
video, audio, output, checkpoint = sys.argv[1:5]
if checkpoint:
    engine = LipSyncEngine(checkpoint=checkpoint, detector="opencv")
else:
    from conftest import small_pipeline
    engine = LipSyncEngine(pipeline=small_pipeline(), detector="opencv")
start = time.time()
report = engine.run(video, audio, output, JobOptions(num_inference_steps=1, detector="opencv", batch_size=16,
                    side_by_side=False, length_policy="shortest"))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"frames": report.frames, "peak_rss": peak, "seconds": time.time() - start}}))
"""


def make_clip(face: Path, seconds: float, height: int, out: Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(face), "-t", str(seconds),
                    "-vf", f"scale=-2:{height}", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "20",
                    "-c:a", "aac", str(out)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_face = REPO.parent / "shared" / "media" / "pub_video2_retalking_face5.mp4"
    if not default_face.exists():
        default_face = REPO / "assets" / "example_face.mp4"
    parser.add_argument("--face", type=Path, default=default_face)
    parser.add_argument("--short", type=float, default=10.0)
    parser.add_argument("--long", type=float, default=180.0)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--checkpoint", default="")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, seconds in (("short", args.short), ("long", args.long)):
            clip = tmp / f"{name}.mp4"
            make_clip(args.face, seconds, args.height, clip)
            out = tmp / f"{name}_out.mp4"
            code = CHILD.format(repo=str(REPO), tests=str(REPO / "tests"))
            started = time.time()
            proc = subprocess.run([sys.executable, "-c", code, str(clip), str(clip), str(out), args.checkpoint],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(proc.stderr)
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result["output_bytes"] = out.stat().st_size
            results[name] = result
            print(f"{name:>5}: {seconds:6.0f} s clip at {args.height}p, {result['frames']} frames: peak RSS "
                  f"{result['peak_rss'] / 2**20:7.1f} MiB, output {result['output_bytes'] / 2**20:6.1f} MiB, "
                  f"{time.time() - started:6.1f} s")
    short, long = results["short"], results["long"]
    allowed = 1.10 * short["peak_rss"] + long["output_bytes"]
    print(f"long/short peak RSS ratio {long['peak_rss'] / short['peak_rss']:.3f}; "
          f"bound 10 % + output size = {allowed / 2**20:.1f} MiB -> {'within' if long['peak_rss'] <= allowed else 'OVER'}")


if __name__ == "__main__":
    main()
