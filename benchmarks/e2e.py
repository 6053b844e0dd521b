"""End-to-end speed of whole jobs, stage by stage, on any device: where the time and the CPU go.

    python benchmarks/e2e.py [--model PATH|tiny] [--device auto] [--steps 2] [--preset NAME] [--frames 16]
                             [--sizes 512 1080] [--encoder-preset P] [--detector s3fd] [--side-by-side]
                             [--no-ab] [--json OUT]

For a 512 px clip (``pub_video3``, 512x512) and a 1080p one (``pub_video1`` upscaled to 1080x1080 and padded
to 1920x1080 with ffmpeg), each limited to ``--frames`` output frames of real speech, it runs whole engine
jobs and prints per stage (decode, detect, audio, crop, diffusion, paste, encode): seconds, frames/s and CPU
core-seconds per frame; then the end-to-end frames/s, how busy the model's device was, and the wall time of
the overlapped engine over the ``--sequential`` one, both run here one after the other (the A/B ratio).

How CPU time is counted: the process's CPU time (every thread: torch's, OpenCV's) while each stage ran, from
the job run with stages one at a time; plus each ffmpeg child's CPU time (read from /proc while it runs),
given to decode or encode by its command line. What no stage claims (ffprobe, muxing) is "other".

Without ffmpeg and ffprobe on the PATH (a bare GPU machine) whole jobs cannot run; the benchmark then decodes
with OpenCV (its wheel bundles FFmpeg's libraries) and times the in-memory stages only: detect, crop,
diffusion, paste. Timings on a shared machine are noisy: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lipsync.engine as engine_module  # noqa: E402
from lipsync.job import FACE_SIZE, JobOptions  # noqa: E402
from lipsync.media import audio as audio_io  # noqa: E402
from lipsync.media.stages import StageTimer  # noqa: E402

SHARED = REPO.parent / "shared"
DEFAULT_MODEL = SHARED / "models" / "small64_h200"
STAGE_ORDER = ("decode", "detect", "audio", "crop", "diffusion", "paste", "encode")
CLIPS = {512: "pub_video3_sadtalker_katiehill.mp4", 1080: "pub_video1_retalking_face2.mp4"}
SPEECH = "tts_en.wav"
FPS = 25


# ---- CPU time of the ffmpeg children ----------------------------------------------------------------


def _role(args: List[str]) -> str:
    """Which stage an ffmpeg child serves, from its command line."""
    if "libx264" in args:
        return "encode"
    if "rawvideo" in args and "pipe:1" in args:
        return "decode"
    if "pipe:1" in args:
        return "audio"
    return "other"


def _children(pid: int) -> List[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


class ChildCPU:
    """Samples the CPU time (user + system) of this process's children every ``interval`` s, by role.

    Each child is sampled once more as it exits (``Popen.wait``/``poll`` are hooked while sampling); ``other``
    absorbs what no sample saw (``getrusage(RUSAGE_CHILDREN)`` less the samples). On CUDA it also samples the GPU's utilisation (NVML).
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.latest: Dict[int, tuple] = {}  # pid -> (role, cpu seconds)
        self.gpu_samples: List[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-child-cpu", daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def _sample(self, pids=None) -> None:
        for pid in _children(os.getpid()) if pids is None else pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                cpu = (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime
                role = self.latest[pid][0] if pid in self.latest else _role(
                    Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0"))
            except (OSError, ValueError, IndexError):
                continue
            self.latest[pid] = (role, cpu)
        if torch.cuda.is_available():
            try:
                self.gpu_samples.append(float(torch.cuda.utilization()))
            except Exception:  # noqa: BLE001 - NVML absent: the stage share stands in
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _hook(self):
        """Read a child's final CPU time as it exits, before ``wait``/``poll`` reap it (x264 does much of its
        work after the last frame arrives, between two samples)."""
        sampler, wait, poll = self, subprocess.Popen.wait, subprocess.Popen.poll

        def last_sample(proc, block: bool) -> None:
            if proc.returncode is None:
                try:
                    flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
                    if os.waitid(os.P_PID, proc.pid, flags) is not None:
                        sampler._sample([proc.pid])
                except ChildProcessError:
                    pass

        def hooked_wait(proc, timeout=None):
            last_sample(proc, timeout is None)
            return wait(proc, timeout)

        def hooked_poll(proc):
            last_sample(proc, False)
            return poll(proc)

        subprocess.Popen.wait, subprocess.Popen.poll = hooked_wait, hooked_poll
        return wait, poll

    def __enter__(self) -> "ChildCPU":
        self._start = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._originals = self._hook()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        subprocess.Popen.wait, subprocess.Popen.poll = self._originals
        self._stop.set()
        self._thread.join()
        end = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = (end.ru_utime + end.ru_stime) - (self._start.ru_utime + self._start.ru_stime)
        self.by_role = {"decode": 0.0, "encode": 0.0, "audio": 0.0, "other": 0.0}
        for role, cpu in self.latest.values():
            self.by_role[role] += cpu
        self.by_role["other"] += max(0.0, total - sum(self.by_role.values()))
        self.total = total


class RecordingTimer(StageTimer):
    """The engine's StageTimer, remembered so the benchmark can read each stage's CPU time."""

    last: Optional["RecordingTimer"] = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordingTimer.last = self


# ---- inputs -----------------------------------------------------------------------------------------


def have_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def make_clip(size: int, frames: int, work: Path) -> Path:
    """The clip for ``size`` (512 or 1080), at most ``frames`` + 5 frames (the job reads no more)."""
    source = SHARED / "media" / CLIPS[size]
    if size == 512:
        return source
    out = work / f"clip_{size}p.mp4"
    chain = "scale=1080:1080:flags=bicubic,pad=1920:1080:420:0"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), "-frames:v", str(frames + 5),
                    "-vf", chain, "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
                    "-an", str(out)], check=True)
    return out


def make_audio(frames: int, work: Path) -> Path:
    import soundfile

    rate = audio_io.DEFAULT_AUDIO.sample_rate
    wav = audio_io.load_audio(SHARED / "media" / SPEECH)[: int(round(frames / FPS * rate))]
    path = work / f"speech_{frames}.wav"
    soundfile.write(path, wav, rate)
    return path


def build_pipeline(model: str, device: str, dtype: str):
    """The model: a saved pipeline folder, or "tiny" (a random small UNet like the tests', 128 px)."""
    from lipsync.model.loading import load_pipeline

    if model != "tiny":
        return load_pipeline(model, device=device, dtype=dtype)
    from lipsync import Diff2LipUNetModel
    from lipsync.model.pipeline import Diff2LipPipeline, default_scheduler

    torch.manual_seed(0)
    unet = Diff2LipUNetModel(model_channels=32, channel_mult=(1, 1, 2, 2), num_res_blocks=1,
                             attention_resolutions=(16,), num_head_channels=32)
    pipe = Diff2LipPipeline(unet=unet.eval(), scheduler=default_scheduler())
    return pipe.to(device)


# ---- one job ----------------------------------------------------------------------------------------


def run_job(engine, video: Path, audio: Path, output: Path, options: JobOptions) -> dict:
    """One whole job; its wall time, per-stage seconds and CPU seconds (in process + ffmpeg children)."""
    engine._detections.clear()  # every job detects again, as a new clip would
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    with ChildCPU() as children:
        report = engine.run(video, audio, output, options)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    timer = RecordingTimer.last
    cpu = {stage: timer.cpu_seconds.get(stage, 0.0) for stage in STAGE_ORDER}
    for role in ("decode", "encode", "audio"):
        cpu[role] += children.by_role[role]
    own = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    cpu["other"] = children.by_role["other"] + max(0.0, own - sum(timer.cpu_seconds.values()))
    gpu = float(np.mean(children.gpu_samples)) / 100 if children.gpu_samples else None
    return {"frames": report.frames, "wall_s": report.wall_seconds,
            "seconds": {stage: timer.seconds.get(stage, 0.0) for stage in STAGE_ORDER},
            "cpu_s": cpu, "cpu_total_s": own + children.total, "gpu_busy": gpu,
            "model_share": timer.seconds.get("diffusion", 0.0) / report.wall_seconds,
            "output_bytes": output.stat().st_size}


def print_stages(name: str, row: dict) -> None:
    n = row["frames"]
    print(f"\n{name}: {n} frames, wall {row['wall_s']:.1f} s = {n / row['wall_s']:.2f} fps end to end; "
          f"CPU {row['cpu_total_s'] / n:.3f} core-s/frame in all")
    print("| stage | seconds | frames/s | core-s/frame |")
    print("|---|---|---|---|")
    for stage in STAGE_ORDER:
        seconds = row["seconds"][stage]
        rate = f"{n / seconds:.1f}" if seconds > 0 else "-"
        print(f"| {stage} | {seconds:.2f} | {rate} | {row['cpu_s'][stage] / n:.4f} |")
    print(f"| other (probe, mux) | | | {row['cpu_s']['other'] / n:.4f} |")
    outside = sum(v for k, v in row["cpu_s"].items() if k != "diffusion") / n
    print(f"everything but diffusion: {outside:.3f} core-s/frame")


# ---- the encoder alone: x264 presets at the job's crf ---------------------------------------------


def encoder_presets(video: Path, frames: int, presets: List[str], work: Path) -> List[dict]:
    """Encode the first ``frames`` frames of ``video`` with each x264 preset (crf as the jobs): wall and CPU
    seconds per frame (ffmpeg included), file size, and PSNR of the decoded result against its input."""
    from lipsync.media.reader import iter_frames
    from lipsync.media.writer import DEFAULT_CRF, VideoWriter

    clip = np.concatenate(list(iter_frames(video, count=frames)))
    rows = []
    for preset in presets:
        out = work / f"enc_{preset}.mp4"
        self0, child0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        with VideoWriter(out, FPS, (clip.shape[2], clip.shape[1]), preset=preset) as writer:
            writer.write(clip)
        wall = time.perf_counter() - start
        self1, child1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = sum(getattr(b, f) - getattr(a, f) for a, b in ((self0, self1), (child0, child1))
                  for f in ("ru_utime", "ru_stime"))
        decoded = np.concatenate(list(iter_frames(out))).astype(np.float64)
        mse = float(np.mean((decoded - clip.astype(np.float64)) ** 2))
        rows.append({"preset": preset, "crf": DEFAULT_CRF, "frames": len(clip), "s_per_frame": wall / len(clip),
                     "core_s_per_frame": cpu / len(clip), "bytes": out.stat().st_size,
                     "psnr_db": 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))})
        out.unlink()
    return rows


# ---- without ffmpeg: the in-memory stages on OpenCV-decoded frames ----------------------------------


def in_memory_stages(engine, size: int, frames: int, options: JobOptions) -> dict:
    """detect, crop, diffusion, paste of ``frames`` frames decoded (and resized to ``size``) with OpenCV."""
    import cv2

    from lipsync.media.crop import crop_faces, paste_faces
    from lipsync.media.tracking import FaceConfig, boxes_from_detections

    capture = cv2.VideoCapture(str(SHARED / "media" / CLIPS[size]))
    decoded = []
    while len(decoded) < frames:
        ok, frame = capture.read()
        if not ok:
            break
        frame = frame[:, :, ::-1]
        if size == 1080:
            frame = cv2.copyMakeBorder(cv2.resize(frame, (1080, 1080), interpolation=cv2.INTER_CUBIC),
                                       0, 0, 420, 420, cv2.BORDER_CONSTANT)
        decoded.append(np.ascontiguousarray(frame))
    capture.release()
    clip = np.stack(decoded)
    timer, n = StageTimer(STAGE_ORDER), len(clip)
    with timer("detect"):
        detections = engine.detector(options.detector).detect(clip)
    boxes, valid, _, _ = boxes_from_detections(detections, clip.shape[1:], FaceConfig(), source="clip")
    with timer("crop"):
        crops = crop_faces(clip[valid], boxes[valid], FACE_SIZE)
    mels = np.zeros((len(crops), audio_io.DEFAULT_AUDIO.num_mels, 16), np.float32)
    _, steps, _ = options.sampling()
    with timer("diffusion"):
        out = engine.pipeline(faces=crops, mels=mels, num_inference_steps=steps, output_type="uint8",
                              batch_size=engine.batch_size(options), progress_bar=False).frames
    generated = np.zeros((n, FACE_SIZE, FACE_SIZE, 3), np.uint8)
    generated[valid] = out
    with timer("paste"):
        paste_faces(clip, boxes, generated, valid, mode=options.paste)
    return {"frames": n, "seconds": dict(timer.seconds), "cpu_s": dict(timer.cpu_seconds)}


# ---- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL) if DEFAULT_MODEL.is_dir() else "tiny",
                        help="a pipeline folder, or 'tiny' for a random small model (default: small64_h200)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (the GPU when there is one)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps (the paper: 25)")
    parser.add_argument("--preset", default=None, help="a sampling preset instead of --steps (paper, fast, draft)")
    parser.add_argument("--frames", type=int, default=16, help="output frames per job (0.64 s at 25 fps)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1080], choices=sorted(CLIPS))
    parser.add_argument("--encoder-preset", default=None, help="x264 preset of the outputs (default: the job's)")
    parser.add_argument("--detector", default="s3fd")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--side-by-side", action="store_true", help="also write the side-by-side video")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (the job's default: auto)")
    parser.add_argument("--no-ab", action="store_true", help="skip the overlapped vs --sequential comparison")
    parser.add_argument("--encoders", nargs="+", default=None, metavar="PRESET",
                        help="instead of jobs: encode each clip with these x264 presets (e.g. medium veryfast)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    work = Path(tempfile.mkdtemp(prefix="lipsync-e2e-"))
    results: Dict[str, object] = {"device": device, "cores": os.cpu_count(), "frames": args.frames, "clips": {}}
    if args.encoders:
        for size in args.sizes:
            rows = encoder_presets(make_clip(size, args.frames, work), args.frames, args.encoders, work)
            print(f"\n{size}p, x264 crf {rows[0]['crf']}, {rows[0]['frames']} frames")
            print("| preset | s/frame | core-s/frame | KiB/frame | PSNR (dB) |")
            print("|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['preset']} | {r['s_per_frame']:.4f} | {r['core_s_per_frame']:.4f} | "
                      f"{r['bytes'] / 1024 / r['frames']:.1f} | {r['psnr_db']:.2f} |")
            results["clips"][f"{size}p"] = {"encoders": rows}
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        return
    pipe = build_pipeline(args.model, device, args.dtype)
    pipe.set_progress_bar_config(disable=True)
    engine = engine_module.LipSyncEngine(pipeline=pipe, device=device, detector=args.detector)
    common = dict(num_inference_steps=args.steps, preset=args.preset, detector=args.detector,
                  batch_size=args.batch_size, side_by_side=args.side_by_side)
    if args.encoder_preset:
        common["encoder_preset"] = args.encoder_preset
    if args.compile:
        common["compile"] = True
    cores = os.cpu_count()
    print(f"model {args.model} on {device} ({next(pipe.unet.parameters()).dtype}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, {cores} cores, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    results.update(model=args.model, steps=JobOptions(**common).sampling()[1])
    # warm-up outside the timings: the model's kernels and the detector's weights
    engine.detector(args.detector).detect(np.zeros((1, 256, 256, 3), np.uint8))
    pipe(faces=np.zeros((1, FACE_SIZE, FACE_SIZE, 3), np.uint8), mels=np.zeros((1, 80, 16), np.float32),
         num_inference_steps=1, progress_bar=False, output_type="uint8")

    if not have_ffmpeg():
        print("ffmpeg/ffprobe not found: whole jobs need them (decode, audio, encode); timing the in-memory "
              "stages on frames decoded with OpenCV instead")
        for size in args.sizes:
            row = in_memory_stages(engine, size, args.frames, JobOptions(**common))
            n = row["frames"]
            print(f"\n{size}p, in memory, {n} frames")
            for stage in ("detect", "crop", "diffusion", "paste"):
                s = row["seconds"][stage]
                print(f"| {stage} | {s:.2f} s | {n / max(s, 1e-9):.1f} fps | {row['cpu_s'][stage] / n:.4f} core-s/frame |")
            results["clips"][f"{size}p"] = row
    else:
        engine_module.StageTimer = RecordingTimer
        audio = make_audio(args.frames, work)
        warm = make_audio(8, work)  # an 8-frame job first: librosa's, ffmpeg's and the kernels' first calls
        engine.run(make_clip(args.sizes[0], 8, work), warm, work / "warm.mp4", JobOptions(overlap=False, **common))
        for k, size in enumerate(args.sizes):
            video = make_clip(size, args.frames, work)
            clip: Dict[str, object] = {}
            # sequential: exact per-stage CPU; overlapped: the same output, another wall time. The order
            # alternates between clips, so neither mode always runs on a warmer (or busier) machine.
            modes = [("sequential", False)] + ([] if args.no_ab else [("overlapped", True)])
            modes = modes[::-1] if k % 2 else modes
            for name, overlap in modes:
                row = run_job(engine, video, audio, work / f"{size}_{name}.mp4", JobOptions(overlap=overlap, **common))
                clip[name] = row
                print_stages(f"{size}p, {name}", row)
            if "overlapped" in clip:
                ratio = clip["overlapped"]["wall_s"] / clip["sequential"]["wall_s"]
                clip["overlapped_over_sequential"] = ratio
                print(f"A/B: overlapped / sequential wall time = {ratio:.2f} "
                      f"({'overlapped' if ratio < 1 else 'sequential'} is faster here)")
            best = min((r for r in clip.values() if isinstance(r, dict)), key=lambda r: r["wall_s"])
            busy = best["gpu_busy"] if best["gpu_busy"] is not None else best["model_share"]
            print(f"model's device busy: {busy:.0%} of the wall time "
                  f"({'GPU utilisation' if best['gpu_busy'] is not None else 'share of time in the model stage'})")
            results["clips"][f"{size}p"] = clip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
