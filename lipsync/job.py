"""What a job is: the options a user can choose (:class:`JobOptions`), what it produced
(:class:`JobReport`), and its timeline (which source frame each output frame shows: ping-pong, loop).

Plain data: nothing here touches files or the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from lipsync.media.detectors import DETECTORS
from lipsync.media.speaker import FACE_CHOICES
from lipsync.media.writer import DEFAULT_ENCODER_PRESET, check_encoder_preset
from lipsync.scoring import compare

SCHEDULERS = ("ddim", "dpm", "unipc", "euler")
LENGTH_POLICIES = ("pingpong", "loop", "shortest")
PASTE_MODES = ("mouth", "box")
STAGES = ("decode", "detect", "audio", "crop", "diffusion", "paste", "encode", "wav2lip", "score")
OPTIONAL_STAGES = ("wav2lip", "score")  # reported only when a job used them
FACE_SIZE = 128
PAPER_SEED = 7
CPU_BATCH_SIZE = 8  # default frames per model call (JobOptions.batch_size None)
GPU_BATCH_SIZE = 32  # a GPU keeps busy with larger batches (the paper model needs ~6 GiB at 32 in fp16)

Progress = Callable[[str, float, str], None]


@dataclass
class JobOptions:
    """What a user can choose for one job (CLI flags and app controls map onto these)."""

    num_inference_steps: int = 25
    reference_frame: Optional[int] = None  # None: each frame is its own reference (the paper's cross setting)
    seed: int = PAPER_SEED
    batch_size: Optional[int] = None  # None: CPU_BATCH_SIZE on the CPU, GPU_BATCH_SIZE on a GPU
    paste: str = "mouth"  # "mouth": only the generated lower half, feathered; "box": the official full-box paste
    length_policy: str = "pingpong"  # audio longer than video: "pingpong" | "loop"; "shortest" = official
    pads: Tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right
    audio_offset: int = 0  # frames; 0 = the official alignment
    scheduler: str = "ddim"
    preset: Optional[str] = None  # lipsync.model.presets name ("paper", "fast", "draft"): overrides steps + scheduler
    deepcache_interval: Optional[int] = None  # DeepCache: deep features recomputed every N-th step (1 = off);
    #                                           None: the preset's (off without a preset)
    audio_guidance: float = 1.0  # classifier-free guidance on the audio (1 = off, the paper's sampler); for models
    #                               trained with --audio-dropout; costs twice the model calls
    compile: Optional[bool] = None  # torch.compile the UNet (once per process; minutes the first time);
    #                                  None: on a GPU when the clip is long enough to repay it (acceleration)
    overlap: Optional[bool] = None  # decode ahead of and paste/encode behind the model in threads (same output);
    #                                 None: where measured faster (stages.overlap_by_default)
    encoder_preset: str = DEFAULT_ENCODER_PRESET  # x264 speed preset of the outputs (same crf, same quality)
    detector: str = "s3fd"
    face_choice: str = "speaker"  # "speaker": one person in every shot, by who it is and whether it talks;
    #                               "largest": the largest face of each shot (a scene with several speakers)
    face_point: Optional[Tuple[float, float]] = None  # (x, y) pixels in the reference frame (else frame 0): the
    #                                                   face that contains it is followed through the clip
    side_by_side: bool = True
    mouth_zoom: bool = False  # the side-by-side gets a zoomed strip of each panel's mouth
    chunk_frames: int = 32
    max_seconds: Optional[float] = None
    # comparison and scores (lipsync.scoring.compare)
    compare_wav2lip: bool = False  # run Wav2Lip too: the side-by-side becomes source | Wav2Lip | Diff2Lip
    wav2lip_checkpoint: Optional[str] = None  # None: $LIPSYNC_WAV2LIP_CHECKPOINT or the Hub
    wav2lip_video: Optional[str] = None  # an existing Wav2Lip result to show instead of running Wav2Lip
    score: bool = False  # LSE-D / LSE-C of source, (Wav2Lip) and Diff2Lip against the driving audio
    syncnet_checkpoint: Optional[str] = None  # None: $LIPSYNC_SYNCNET_CHECKPOINT or the Hub
    sync_expert: Optional[str] = None  # an own expert (python -m lipsync.train_syncnet) scores instead of SyncNet v2
    score_seconds: float = compare.SCORE_SECONDS  # only the first seconds of the output are scored
    strict: bool = False  # damaged input (frames that do not decode cleanly) is an error, not a warning

    @property
    def with_wav2lip(self) -> bool:
        """Whether the job has a Wav2Lip panel (run here, or the user's ``wav2lip_video``)."""
        return bool(self.compare_wav2lip or self.wav2lip_video)

    def sampling(self) -> Tuple[str, int, int]:
        """(scheduler, steps, DeepCache interval) the job samples with: the preset's, or the options' own."""
        if self.preset:
            from lipsync.model.presets import get_preset

            preset = get_preset(self.preset)
            return preset.scheduler, preset.steps, int(self.deepcache_interval or preset.deepcache_interval)
        return self.scheduler, int(self.num_inference_steps), int(self.deepcache_interval or 1)

    def validate(self) -> None:
        if self.preset:
            from lipsync.model.presets import get_preset

            get_preset(self.preset)
        if not 1 <= int(self.num_inference_steps) <= 1000:
            raise ValueError(f"num_inference_steps must be 1..1000, got {self.num_inference_steps}")
        for name, value, allowed in (("paste", self.paste, PASTE_MODES),
                                     ("length_policy", self.length_policy, LENGTH_POLICIES),
                                     ("scheduler", self.scheduler, SCHEDULERS),
                                     ("detector", self.detector, tuple(DETECTORS)),
                                     ("face_choice", self.face_choice, FACE_CHOICES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.face_point is not None and (len(tuple(self.face_point)) != 2 or min(self.face_point) < 0):
            raise ValueError(f"face_point must be 2 pixel coordinates x, y >= 0, got {self.face_point!r}")
        if len(tuple(self.pads)) != 4:
            raise ValueError(f"pads must be 4 numbers (top, bottom, left, right), got {self.pads!r}")
        if (self.batch_size is not None and int(self.batch_size) < 1) or int(self.chunk_frames) < 1:
            raise ValueError("batch_size and chunk_frames must be at least 1")
        if self.deepcache_interval is not None and int(self.deepcache_interval) < 1:
            raise ValueError(f"deepcache_interval must be at least 1 (1 = off), got {self.deepcache_interval}")
        if not float(self.audio_guidance) >= 1:
            raise ValueError(f"audio_guidance must be at least 1 (1 = off), got {self.audio_guidance}")
        check_encoder_preset(self.encoder_preset)
        if not float(self.score_seconds) > 0:
            raise ValueError(f"score_seconds must be positive, got {self.score_seconds}")


@dataclass
class JobReport:
    """What a job produced, and how long each stage took."""

    output: Optional[Path]
    side_by_side: Optional[Path]
    frames: int
    fps: float
    width: int
    height: int
    faces_found: int
    faces_missing: int
    faces_interpolated: int
    # frames whose face was found but whose mouth is out of the picture (detectors with landmarks): not lip-synced
    faces_refused: int = 0
    shots: int = 1  # hard cuts + 1 (only the source frames the job used)
    shots_without_face: int = 0  # shots where the chosen face never appears: left untouched
    seconds: Dict[str, float] = field(default_factory=dict)  # per stage (overlapping stages: more than the wall time)
    duration: float = 0.0
    wall_seconds: Optional[float] = None  # the job from start to end
    # per source frame: the face box used (x1, y1, x2, y2) and whether it was lip-synced; per output frame:
    # which source frame it shows (ping-pong/loop timelines)
    boxes: Optional[np.ndarray] = field(default=None, repr=False)
    valid: Optional[np.ndarray] = field(default=None, repr=False)
    source_index: Optional[np.ndarray] = field(default=None, repr=False)
    # with options.score: {"source" | "wav2lip" | "diffusion": {"lse_d", "lse_c", "offset", "frames", "seconds"}};
    # with an own expert: {"measure": "own expert", "offset", "confidence", "distance", "distance_at_0", ...}
    scores: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # what the user should know about the input, e.g. "frames 170–201 could not be decoded cleanly (5.7–6.7 s)"
    warnings: List[str] = field(default_factory=list)

    @property
    def source_frames(self) -> int:
        """Number of source frames the job used (the face counts are per source frame)."""
        return len(self.valid) if self.valid is not None else self.frames

    def timeline(self) -> str:
        """How the output frames show the source frames, in words ("" when each is shown once, in order)."""
        n = self.source_frames
        index = self.source_index
        if index is None or np.array_equal(index, np.arange(len(index))):
            return ""
        if n == 1:
            return "1 source frame held for every output frame"
        steps = np.diff(np.asarray(index))
        if (steps == -1).any():
            return f"{n} source frames played forward and backward (ping-pong)"
        if (steps < 0).any():
            return f"{n} source frames looped"
        return f"{n} source frames"

    def summary(self) -> str:
        """One line for the CLI: output, length, size, the source timeline, the per-source-frame face counts and the
        time taken (wall time, and the stage times' sum, which is larger when stages overlap)."""
        total = sum(self.seconds.values())
        if self.wall_seconds is None:
            took = f"{total:.1f} s"
        else:  # the stages' sum is larger when they overlap, smaller by the set-up between them when they do not
            why = "stages overlap" if total > self.wall_seconds else "the rest is set-up between stages"
            took = f"{self.wall_seconds:.1f} s (stage times add up to {total:.1f} s: {why})"
        timeline = self.timeline()
        per_source = "per source frame: " if timeline or self.source_frames != self.frames else ""
        return (f"{self.output}: {self.frames} frames at {self.fps:g} fps ({self.duration:.2f} s, "
                f"{self.width}x{self.height})" + (f", showing {timeline}" if timeline else "")
                + f"; {per_source}faces found in {self.faces_found}, interpolated "
                f"{self.faces_interpolated}, missing {self.faces_missing}"
                + (f", refused {self.faces_refused} (mouth out of the picture)" if self.faces_refused else "")
                + (f"; {self.shots} shots" if self.shots > 1 else "")
                + (f", {self.shots_without_face} without the chosen face (left untouched)"
                   if self.shots_without_face else "")
                + f"; {took}" + "".join(f"; warning: {warning}" for warning in self.warnings))

    def as_markdown(self) -> str:
        """The report as a two-column Markdown table (the app shows it)."""
        rows = [("frames", self.frames), ("fps", f"{self.fps:g}"), ("duration", f"{self.duration:.2f} s"),
                *([("time taken", f"{self.wall_seconds:.1f} s")] if self.wall_seconds is not None else []),
                ("size", f"{self.width}x{self.height}"),
                ("source frames", self.timeline() or self.source_frames),
                ("faces found (per source frame)", self.faces_found),
                ("faces interpolated (per source frame)", self.faces_interpolated),
                ("faces missing (per source frame)", self.faces_missing),
                ("faces refused, mouth out of the picture (per source frame)", self.faces_refused),
                ("shots", self.shots), ("shots without the chosen face (left untouched)", self.shots_without_face)]
        rows += [("warning", warning) for warning in self.warnings]
        rows += [(f"{stage} (s)", f"{seconds:.2f}") for stage, seconds in self.seconds.items()]
        return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)

    def scores_markdown(self) -> str:
        """LSE-D / LSE-C / offset (or the own expert's figures) per stream as a small Markdown table ("" without)."""
        return compare.scores_markdown(self.scores)


def parse_face_point(text: Optional[str]) -> Optional[Tuple[float, float]]:
    """'X,Y' pixels (a comma or spaces; empty: no choice) -> (x, y) for ``JobOptions.face_point``, or None.

    A ValueError names the expected form; the CLI (``--face``) and the app word it for their users."""
    parts = (text or "").replace(",", " ").split()
    if not parts:
        return None
    try:
        point = tuple(float(p) for p in parts)
    except ValueError:
        point = ()
    if len(point) != 2 or min(point) < 0:
        raise ValueError(f"a face point is X,Y in pixels, e.g. 320,180; got {text!r}")
    return point


def source_indices(num_source: int, num_output: int, policy: str) -> np.ndarray:
    """Source frame index of every output frame: forward, then (pingpong) backward and forward again,
    or (loop) from the start again. (num_output,) int64."""
    i = np.arange(num_output)
    if num_source == 1:
        return np.zeros(num_output, dtype=np.int64)
    if policy == "pingpong":
        period = 2 * num_source - 2
        k = i % period
        return np.where(k < num_source, k, period - k).astype(np.int64)
    return (i % num_source).astype(np.int64)


def monotonic_runs(indices: np.ndarray) -> List[Tuple[int, int]]:
    """Split a chunk of source indices into [start, stop) positions whose indices step by +1 or by -1."""
    runs, start = [], 0
    for j in range(1, len(indices) + 1):
        if j == len(indices):
            runs.append((start, j))
            break
        step = int(indices[j]) - int(indices[j - 1])
        if abs(step) != 1 or (j - start >= 2 and step != int(indices[start + 1]) - int(indices[start])):
            runs.append((start, j))
            start = j
    return runs


