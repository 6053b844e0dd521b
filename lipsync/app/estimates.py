"""How long a job will take: measured seconds per frame and sampling step, and what the clip covers.

``SpeedMeter`` starts from a short calibration of the loaded model (``LipSyncEngine.seconds_per_frame_step``)
and then follows the jobs it sees. ``plan_summary`` says in words how the video covers the speech.
``gpu_seconds`` / ``job_gpu_seconds`` are the generous durations asked of a ZeroGPU Space. ``TimeLeft`` says
how long a running job still needs, from the work it has left.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

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


def scored_frames(options: JobOptions, frames: int) -> int:
    """Frames x streams the lip-sync score measures in a job of ``frames`` output frames (0 without a score)."""
    if not options.score:
        return 0
    streams = 3 if options.with_wav2lip else 2  # source, (Wav2Lip,) Diff2Lip
    return streams * min(frames, int(options.score_seconds * FPS) + 1)


def job_gpu_seconds(options: JobOptions, frames: int) -> int:
    """``gpu_seconds`` of a whole job of ``frames`` output frames with ``options`` (comparison and scores included)."""
    wav2lip_frames = frames if options.compare_wav2lip and not options.wav2lip_video else 0
    return gpu_seconds(options.sampling()[1], frames, wav2lip_frames=wav2lip_frames,
                       scored_frames=scored_frames(options, frames))


def model_evaluations(options: JobOptions) -> float:
    """Full-UNet evaluations per frame the job's sampling costs (DeepCache steps, a preset's or chosen, count less)."""
    from lipsync.model.presets import CACHED_STEP_COST

    _, steps, interval = options.sampling()
    cached = steps - -(-steps // max(1, interval))  # every interval-th step is a full one
    return steps - cached * (1.0 - CACHED_STEP_COST)


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


def format_time_left(seconds: float) -> str:
    """'about 45 s', 'about 2 min 30 s', 'about 14 min', 'about 1 h 05 min': rounded up, never below the figure."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"about {max(5, 5 * math.ceil(seconds / 5))} s"
    if seconds < 600:
        tens = math.ceil(seconds / 10)
        minutes, rest = divmod(tens * 10, 60)
        return f"about {minutes} min" + (f" {rest} s" if rest else "")
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


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
    DEFAULT_WRITING_PER_FRAME = 0.03  # decoding, pasting and encoding (beside the model) per frame, until measured

    def __init__(self):
        self.step_seconds: Optional[float] = None  # per frame and full model evaluation
        self.other_seconds = self.DEFAULT_OTHER_PER_FRAME  # per output frame
        self.writing_seconds = self.DEFAULT_WRITING_PER_FRAME  # per output frame (a re-run reuses the detection)
        self.score_seconds = GPU_SECONDS_PER_SCORED_FRAME  # per scored frame and stream, until measured
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
                writing = sum(report.seconds.get(k, 0.0) for k in ("decode", "paste", "encode"))
                self.writing_seconds = max(writing / report.frames, 0.0)
            scored = scored_frames(options, report.frames)
            if scored and report.seconds.get("score", 0.0) > 0:
                self.score_seconds = report.seconds["score"] / scored

    def estimate(self, frames: int, options: JobOptions) -> Optional[float]:
        """Seconds a job of ``frames`` output frames will take (Diff2Lip only), or None before calibration."""
        if self.step_seconds is None:
            return None
        return frames * (model_evaluations(options) * self.step_seconds + self.other_seconds)

    def time_left(self, frames: int, options: JobOptions, clock: Callable[[], float] = time.monotonic) -> "TimeLeft":
        """A ``TimeLeft`` for a job of ``frames`` output frames that starts now, seeded with this meter's figures."""
        model = None if self.step_seconds is None else frames * model_evaluations(options) * self.step_seconds
        chunk = max(1, int(options.chunk_frames))
        last_chunk = frames - (max(frames - 1, 0) // chunk) * chunk  # the frames of the job's last chunk
        # the last chunk's model steps run beside the writing of the chunk before: both are left at the end
        last_two = min(frames, last_chunk + chunk)
        return TimeLeft(model, before=frames * self.other_seconds, other=frames * self.writing_seconds,
                        last_share=last_two / max(frames, 1),
                        after=scored_frames(options, frames) * self.score_seconds, clock=clock)


class TimeLeft:
    """Seconds a running job still needs, from the work it has left.

    The engine reports the model's work (frames x steps) as the diffusion fraction done, and each chunk of
    frames pasted and written as a "paste" report. The other stages (decoding, pasting, encoding, Wav2Lip) run
    beside the model, chunk by chunk, and slow it down.

    * Before the first diffusion step: the estimate made before the job (``model`` seconds, plus what is left
      of ``before``, the seconds of all the other stages, detection included, plus ``after``).
    * Until two chunks have been written: (1 - fraction) x the seconds this job has taken per fraction since
      its first step, plus the share of the frames left of ``other`` (decoding, pasting and writing the whole
      job; at least the pace this job had before its first step), plus ``after``.
    * Then: (1 - fraction) x the seconds per fraction between the first and the latest chunk written (whole
      cycles of model and other stages), plus the writing of the last two chunks (``last_share`` of ``other``:
      the last one's model steps run beside the writing of the one before), plus ``after``.
    * After the last diffusion step: what is left of that writing and ``after``.
    * Never less than the frames not yet written at the pace the chunks have been written (a slow writer,
      with the model waiting for it).

    ``after``: seconds of what follows the model (the lip-sync score). Call it with each progress report:
    ``time_left(stage, fraction)`` -> seconds, or None while nothing is known.
    """

    def __init__(self, model: Optional[float], before: float = 0.0, other: float = 0.0, after: float = 0.0,
                 last_share: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.model, self.before, self.other, self.after, self.last_share = model, before, other, after, last_share
        self.clock = clock
        self.started = clock()
        self._first: Optional[tuple] = None  # (time, fraction) of the first diffusion step
        self._last: Optional[tuple] = None  # (time, fraction) of the latest one
        self._written: list = []  # (time, diffusion fraction) at each chunk written
        self._writes: list = []  # (time, fraction of the frames written) at each chunk written
        self._model_done: Optional[float] = None  # when the last diffusion step ended

    def _other(self) -> float:
        """Seconds of the other stages over the whole job: the estimate, or this job's pace before the model."""
        before = self._first[0] - self.started if self._first is not None else 0.0
        return max(self.other, before)

    def __call__(self, stage: str, fraction: float) -> Optional[float]:
        now = self.clock()
        if stage == "diffusion" and fraction > 0:
            if self._first is None:
                self._first = (now, fraction)
            self._last = (now, fraction)
            if fraction >= 1.0 and self._model_done is None:
                self._model_done = now
        elif stage == "paste" and self._last is not None:
            self._written.append((now, self._last[1]))
            self._writes.append((now, fraction))
        elif stage in ("score", "encode") and self._first is not None and self._model_done is None:
            self._model_done = now
        if stage == "encode" and fraction >= 1.0:
            return 0.0
        if self._first is None:  # before the model: the estimate
            if self.model is None:
                return None
            return self.model + max(self.before - (now - self.started), 0.0) + self.after
        writing = self._writing_left(now)  # when the writer, not the model, sets the pace
        tail = self._other() * self.last_share + self.after  # the last chunks' writing, the score
        if self._model_done is not None:
            return max(tail - (now - self._model_done), writing)
        (t0, f0), (t1, f1) = self._first, self._last
        if len(self._written) >= 2 and self._written[-1][1] > self._written[0][1]:
            (ta, fa), (tb, fb) = self._written[0], self._written[-1]
            return max(max((tb - ta) / (fb - fa) * (1.0 - f1) - (now - t1), 0.0) + tail, writing)
        if f1 > f0 and t1 > t0:
            model_left = (t1 - t0) / (f1 - f0) * (1.0 - f1)
        elif self.model is not None:
            model_left = self.model * (1.0 - f1)
        else:
            return None
        other_left = self._other() * max(1.0 - f1, self.last_share)
        return max(model_left - (now - t1), 0.0) + other_left + self.after

    def _writing_left(self, now: float) -> float:
        """Seconds until every frame is written at the pace the chunks have been written so far (0 until two
        chunks have been), plus ``after``."""
        if len(self._writes) < 2 or self._writes[-1][1] <= self._writes[0][1]:
            return 0.0
        (ta, wa), (tb, wb) = self._writes[0], self._writes[-1]
        return max((tb - ta) / (wb - wa) * (1.0 - wb) - (now - tb), 0.0) + self.after
