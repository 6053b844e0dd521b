"""How long a job will take: measured seconds per frame and sampling step, and what the clip covers.

``SpeedMeter`` starts from a short calibration of the loaded model (``LipSyncEngine.seconds_per_frame_step``)
and then follows the jobs it sees. ``plan_summary`` says in words how the video covers the speech.
``gpu_seconds`` / ``job_gpu_seconds`` are the generous durations asked of a ZeroGPU Space.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

from lipsync.job import JobOptions, JobReport

GPU_SECONDS_PER_FRAME_STEP = 0.01  # generous for one 128 px Diff2Lip UNet step per frame on a ZeroGPU slice
GPU_BASE_SECONDS = 30  # detection, mel, encoding and the first model load
GPU_SECONDS_PER_WAV2LIP_FRAME = 0.01  # Wav2Lip's 96 px generator, one pass per frame (generous)
GPU_SECONDS_PER_SCORED_FRAME = 0.02  # SyncNet per frame and scored stream, offset search included (generous)
GPU_EXTRA_MODEL_SECONDS = 10  # loading the Wav2Lip / SyncNet weights
FPS = 25  # the model's frame rate; a still photo becomes a 25 fps clip


def gpu_seconds(steps: int, frames: int, *, wav2lip_frames: int = 0, scored_frames: int = 0) -> int:
    """GPU time to ask a ZeroGPU Space for: a fixed part plus steps x frames of Diff2Lip, plus the frames
    Wav2Lip generates and the frames x streams SyncNet scores (each extra model also costs a load)."""
    seconds = GPU_BASE_SECONDS + GPU_SECONDS_PER_FRAME_STEP * max(1, steps) * max(1, frames)
    for count, per_frame in ((wav2lip_frames, GPU_SECONDS_PER_WAV2LIP_FRAME),
                             (scored_frames, GPU_SECONDS_PER_SCORED_FRAME)):
        if count > 0:
            seconds += GPU_EXTRA_MODEL_SECONDS + per_frame * count
    return int(seconds)


def job_gpu_seconds(options: JobOptions, frames: int) -> int:
    """``gpu_seconds`` of a whole job of ``frames`` output frames with ``options`` (comparison and scores included)."""
    wav2lip_frames = frames if options.compare_wav2lip and not options.wav2lip_video else 0
    scored_frames = 0
    if options.score:
        streams = 3 if options.with_wav2lip else 2  # source, (Wav2Lip,) Diff2Lip
        scored_frames = streams * min(frames, int(options.score_seconds * FPS) + 1)
    return gpu_seconds(options.sampling()[1], frames, wav2lip_frames=wav2lip_frames, scored_frames=scored_frames)


def model_evaluations(options: JobOptions) -> float:
    """Full-UNet evaluations per frame the job's sampling costs (a preset's DeepCache steps count less)."""
    if options.preset:
        from lipsync.model.presets import get_preset

        return get_preset(options.preset).full_evaluations
    return float(options.num_inference_steps)


@dataclass
class ClipPlan:
    """What a job over these inputs will produce: ``frames`` output frames and how the length is covered."""

    frames: int
    seconds: float  # length of the result
    how: str  # in words, e.g. "the video plays forward, then backward, to cover the speech"


def plan_summary(video_seconds: Optional[float], video_frames: int, speech_seconds: float, policy: str,
                 fps: float = FPS) -> ClipPlan:
    """How a clip of ``video_frames`` frames (``video_seconds`` long; None for a still photo) covers
    ``speech_seconds`` of speech under ``policy`` ("pingpong" | "loop" | "shortest")."""
    speech_frames = max(1, int(round(speech_seconds * fps)))
    if video_seconds is None:
        return ClipPlan(speech_frames, speech_frames / fps, "the photo is held still for the whole speech")
    if policy == "shortest" and video_frames < speech_frames:
        return ClipPlan(video_frames, video_frames / fps,
                        "the result stops when the video ends (the rest of the speech is left out)")
    if video_frames >= speech_frames:
        how = "the result is as long as the speech"
        if video_frames > speech_frames:
            how += " (the rest of the video is left out)"
        return ClipPlan(speech_frames, speech_frames / fps, how)
    if policy == "loop":
        return ClipPlan(speech_frames, speech_frames / fps, "the video starts over from the beginning to cover the speech")
    return ClipPlan(speech_frames, speech_frames / fps, "the video plays forward, then backward, to cover the speech")


def format_duration(seconds: float) -> str:
    """'about 40 s', 'about 3 min', 'about 1 h 20 min'."""
    if seconds < 60:
        return f"about {max(5, int(round(seconds / 5.0)) * 5)} s"
    minutes = int(round(seconds / 60.0))
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


class SpeedMeter:
    """Seconds per frame and sampling step on this machine, and per frame for everything else.

    ``calibrate(engine)`` times a few steps of the loaded model once; ``record(report, options)`` then
    follows real jobs (their diffusion time over frames x steps), which replaces the calibration.
    """

    DEFAULT_OTHER_PER_FRAME = 0.05  # decoding, detection, pasting and encoding per frame, until measured

    def __init__(self):
        self.step_seconds: Optional[float] = None  # per frame and full model evaluation
        self.other_seconds = self.DEFAULT_OTHER_PER_FRAME  # per output frame
        self.source = ""  # "calibrated" or "measured"
        self._lock = threading.Lock()

    @property
    def known(self) -> bool:
        return self.step_seconds is not None

    def calibrate(self, engine) -> float:
        """Time the loaded model once (loads it if needed); later calls return the known figure."""
        with self._lock:
            if self.step_seconds is None:
                self.step_seconds = float(engine.seconds_per_frame_step())
                self.source = "calibrated"
            return self.step_seconds

    def record(self, report: JobReport, options: JobOptions) -> None:
        """Learn from a finished job: its diffusion seconds over (faces generated x model evaluations)."""
        generated = report.frames
        if report.valid is not None and report.source_index is not None:
            generated = int(report.valid[report.source_index].sum())
        diffusion = report.seconds.get("diffusion", 0.0)
        evaluations = model_evaluations(options)
        with self._lock:
            if generated > 0 and diffusion > 0:
                self.step_seconds = diffusion / (generated * evaluations)
                self.source = "measured"
            other = sum(v for k, v in report.seconds.items() if k not in ("diffusion", "wav2lip", "score"))
            if report.frames > 0:
                self.other_seconds = other / report.frames

    def estimate(self, frames: int, options: JobOptions) -> Optional[float]:
        """Seconds a job of ``frames`` output frames will take (Diff2Lip only), or None before calibration."""
        if self.step_seconds is None:
            return None
        return frames * (model_evaluations(options) * self.step_seconds + self.other_seconds)
