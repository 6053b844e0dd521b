"""The engine: the one place that touches files AND the pipeline.

``LipSyncEngine`` holds a (lazily loaded) ``Diff2LipPipeline`` and face detectors, and runs jobs:

    video file -> frames (N, H, W, 3) uint8 -> boxes (N, 4) x1,y1,x2,y2 -> faces (N, 128, 128, 3) uint8
    audio file -> 16 kHz mono -> mel (80, T) -> mels (M, 80, 16)
    (faces, references, mels) -> pipeline -> generated faces -> paste-back -> MP4 (H.264 + AAC)

Memory stays bounded by working in chunks: pass 1 decodes and detects chunk by chunk and keeps only the
detections; pass 2 decodes again (seeking for the backward half of ping-pong), generates, pastes and
encodes chunk by chunk.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from lipsync.errors import AudioTooShortError, InvalidMediaError, LipSyncError, NoFaceError
from lipsync.job import (
    CPU_BATCH_SIZE,
    FACE_SIZE,
    GPU_BATCH_SIZE,
    OPTIONAL_STAGES,
    STAGES,
    JobOptions,
    JobReport,
    Progress,
    monotonic_runs,
    source_indices,
)
from lipsync.media import audio as audio_io
from lipsync.media import stages
from lipsync.media.crop import crop_faces, paste_faces
from lipsync.media.detectors import get_detector
from lipsync.media.probe import probe_video
from lipsync.media.reader import damage_warnings
from lipsync.media.sidebyside import comparison_layout, side_by_side
from lipsync.media.source import FrameSource, detect_frames, face_track
from lipsync.media.speaker import draw_faces, frame_choice
from lipsync.media.stages import StageTimer
from lipsync.media.tracking import mouth_in_frame, pad_boxes
from lipsync.media.writer import VideoWriter, check_output_path
from lipsync.scoring import compare

logger = logging.getLogger(__name__)


@dataclass
class _Plan:
    source: FrameSource
    wav: np.ndarray
    mel: np.ndarray  # (80, T) spectrogram of wav
    mels: np.ndarray  # (M, 80, 16) float32
    src: np.ndarray  # (M,) source index per output frame
    boxes: np.ndarray  # (N_used, 4) int64
    valid: np.ndarray  # (N_used,) bool
    found: np.ndarray  # (N_used,) bool
    reference: Optional[np.ndarray]  # (128, 128, 3) uint8 or None
    refused: Optional[np.ndarray] = None  # (N_used,) bool: face found, mouth out of the picture
    warnings: Optional[List[str]] = None  # e.g. frames that could not be decoded cleanly
    shots: int = 1  # hard cuts + 1
    shots_without_face: int = 0  # shots where the chosen face never appears (left untouched)


@dataclass
class _Chunk:
    """One chunk of the output timeline on its way through decode -> diffusion -> paste."""

    start: int  # output frames [start, stop)
    stop: int
    frames: np.ndarray  # (n, H, W, 3) uint8 source frames
    valid: np.ndarray  # (n,) bool: frames with a face
    boxes: np.ndarray  # (n, 4) int64
    crops: Optional[np.ndarray]  # (n_valid, 128, 128, 3) uint8, None without faces
    references: Optional[np.ndarray]  # same shape as crops
    generated: Optional[np.ndarray] = None  # (n, 128, 128, 3) uint8 after diffusion
    on_device: Optional[object] = None  # the frames as a tensor on the model's GPU (crop and paste run there)


class LipSyncEngine:
    """Holds a pipeline and face detectors; ``run`` turns (video, audio) into a lip-synced MP4.

    Nothing heavy happens in ``__init__``: the pipeline loads on first use (``load_pipeline(checkpoint,
    device)``) and is reused by every later job; detectors are built once per name.
    """

    def __init__(self, pipeline=None, checkpoint=None, device: Optional[str] = None, detector: str = "s3fd",
                 dtype=None, wav2lip=None, syncnet=None, compile: bool = False):
        self._pipeline = pipeline
        self.compile = compile  # torch.compile the UNet for every job (JobOptions.compile asks per job)
        # comparison models, keyed by checkpoint (None: the default one); injected ones serve None
        self._wav2lip: Dict[Optional[str], object] = {} if wav2lip is None else {None: wav2lip}
        self._syncnet: Dict[Optional[str], object] = {} if syncnet is None else {None: syncnet}
        self.checkpoint = checkpoint
        self.device = device
        self.dtype = dtype
        self.default_detector = detector
        self._detectors: Dict[str, object] = {}
        self._lock = threading.RLock()
        self._base_scheduler_config = None
        # detections of recent clips: re-running a clip with other audio or settings skips detection
        self._detections: "OrderedDict[tuple, Tuple[List[np.ndarray], bool]]" = OrderedDict()

    # -- lazily built components ------------------------------------------------------------------------
    @property
    def pipeline(self):
        with self._lock:
            if self._pipeline is None:
                from lipsync.model.loading import load_pipeline

                self._pipeline = load_pipeline(self.checkpoint, self.device, self.dtype)
                self._pipeline.set_progress_bar_config(disable=True)
            return self._pipeline

    @property
    def pipeline_loaded(self) -> bool:
        return self._pipeline is not None

    def wav2lip_model(self, checkpoint: Optional[str] = None):
        """The Wav2Lip generator (``load_wav2lip(checkpoint, device=...)``), loaded once per checkpoint."""
        key = None if checkpoint is None else str(checkpoint)
        with self._lock:
            if key not in self._wav2lip:
                from lipsync.scoring.wav2lip import load_wav2lip

                self._wav2lip = {key: load_wav2lip(key, device=self.device)}  # keep one in memory
            return self._wav2lip[key]

    def trained_with_audio_dropout(self) -> bool:
        """Whether the model was trained with audio dropout (its config says so), i.e. audio guidance applies.
        Reads the saved config when the model is not loaded yet (loads nothing)."""
        if self.pipeline_loaded:
            return float(getattr(self.pipeline.unet.config, "audio_dropout", 0.0) or 0.0) > 0
        from lipsync.model.loading import saved_unet_config

        return float(saved_unet_config(self.checkpoint).get("audio_dropout", 0.0) or 0.0) > 0

    def sync_scorer(self, checkpoint: Optional[str] = None, expert: Optional[str] = None):
        """A ``SyncScorer`` over SyncNet v2 (``load_syncnet(checkpoint, device=...)``), loaded once per checkpoint;
        with ``expert`` (a folder of ``python -m lipsync.train_syncnet``), an own-expert scorer instead."""
        if expert is not None:
            with self._lock:
                if str(expert) not in self._syncnet:
                    from lipsync.scoring.own_sync import load_scorer

                    self._syncnet = {str(expert): load_scorer(expert)}
                return self._syncnet[str(expert)]
        key = None if checkpoint is None else str(checkpoint)
        with self._lock:
            if key not in self._syncnet:
                from lipsync.scoring.syncnet import load_syncnet

                self._syncnet = {key: load_syncnet(key, device=self.device)}
            from lipsync.scoring.syncnet import SyncScorer

            return SyncScorer(self._syncnet[key])

    def detector(self, name: Optional[str] = None):
        name = name or self.default_detector
        with self._lock:
            if name not in self._detectors:
                device = self.device or ("cuda" if _cuda_available() else "cpu")
                self._detectors[name] = get_detector(name, device=device)
            return self._detectors[name]

    def _use_scheduler(self, name: str) -> None:
        from diffusers import (
            DDIMScheduler,
            DPMSolverMultistepScheduler,
            EulerDiscreteScheduler,
            UniPCMultistepScheduler,
        )

        classes = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler, "unipc": UniPCMultistepScheduler,
                   "euler": EulerDiscreteScheduler}
        pipe = self.pipeline
        if self._base_scheduler_config is None:
            self._base_scheduler_config = pipe.scheduler.config
        if type(pipe.scheduler) is not classes[name]:
            pipe.scheduler = classes[name].from_config(self._base_scheduler_config)

    # -- small helpers for the app ----------------------------------------------------------------------
    def frame_count(self, video) -> int:
        """Number of frames of a clip (1 for a still photo)."""
        return FrameSource(Path(video)).num_frames

    def preview_frame(self, video, frame_index: int = 0, options: Optional[JobOptions] = None) -> np.ndarray:
        """Frame ``frame_index`` with the detected face box (green) and the generated region (shaded).

        Needs no model. Returns (H, W, 3) uint8 RGB; a frame without a face carries a red note instead.
        """
        return self.face_check(video, frame_index, options)[0]

    def frame_faces(self, video, frame_index: int, detector: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(frame, its detections, those whose whole mouth is in the picture) of frame ``frame_index`` (clamped)."""
        source = FrameSource(Path(video))
        try:
            index = int(np.clip(frame_index, 0, source.num_frames - 1))
            frame = source.read(index, index + 1)[0]
        finally:
            source.close()
        found = self.detector(detector).detect(frame[None])[0]
        return frame, found, (found[mouth_in_frame(found, frame.shape)] if len(found) else found)

    def face_check(self, video, frame_index: int = 0, options: Optional[JobOptions] = None) -> Tuple[np.ndarray, bool]:
        """(``preview_frame`` image, whether a face was found in that frame)."""
        options = options or JobOptions()
        frame, found, usable = self.frame_faces(video, frame_index, options.detector)
        canvas = frame.copy()
        if len(found) == 0:
            cv2.putText(canvas, "no face found", (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 0, 0), 3)
            return canvas, False
        if len(usable) == 0:
            cv2.putText(canvas, "mouth out of the picture", (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 0, 0), 3)
            return canvas, False
        boxes, chosen, note = frame_choice(usable, options.face_point)  # numbered left to right
        if chosen is None:  # the face point is on no face
            return draw_faces(canvas, boxes, None, note), False
        x1, y1, x2, y2 = pad_boxes(boxes[chosen:chosen + 1], options.pads, frame.shape)[0].astype(int)
        mid = y1 + (y2 - y1) // 2
        shade = canvas[mid:y2, x1:x2].astype(np.float32)
        canvas[mid:y2, x1:x2] = (0.55 * shade + 0.45 * np.array([255, 0, 160])).astype(np.uint8)
        if len(boxes) > 1 or note:
            canvas = draw_faces(canvas, boxes, chosen, note)
        thickness = max(2, frame.shape[0] // 300)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 255, 0), thickness)
        return canvas, True

    def seconds_per_frame_step(self, frames: int = 4, steps: int = 2) -> float:
        """Measure the loaded model: seconds of one sampling step for one frame (``frames`` random faces,
        ``steps`` steps, one batch). Loads the model if needed; waits for a running job."""
        import torch

        rng = np.random.default_rng(0)
        faces = rng.integers(0, 256, (frames, FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
        mels = rng.standard_normal((frames, audio_io.DEFAULT_AUDIO.num_mels, 16)).astype(np.float32)
        noise = torch.randn((1, 3, FACE_SIZE, FACE_SIZE), generator=torch.Generator().manual_seed(0))
        with self._lock:
            pipe = self.pipeline
            pipe(faces=faces[:1], reference_faces=faces[:1], mels=mels[:1], num_inference_steps=1, latents=noise,
                 batch_size=1, output_type="uint8", progress_bar=False)  # warm-up
            start = time.perf_counter()
            pipe(faces=faces, reference_faces=faces, mels=mels, num_inference_steps=steps, latents=noise,
                 batch_size=frames, output_type="uint8", progress_bar=False)
            return (time.perf_counter() - start) / (frames * steps)

    def preview_first_frame(self, video, audio, options: Optional[JobOptions] = None) -> np.ndarray:
        """Frame 0 lip-synced (the model runs on one frame): check crop, mask and reference quickly."""
        options = options or JobOptions()
        plan = self._plan(Path(video), Path(audio), options, StageTimer(STAGES), None, max_frames=1)
        try:
            for _, result in self._generate(plan, options, StageTimer(STAGES), None):
                return result[0]
        finally:
            plan.source.close()
        raise LipSyncError("nothing to preview")

    # -- jobs -------------------------------------------------------------------------------------------
    def run(self, video, audio, output, options: Optional[JobOptions] = None, progress: Optional[Progress] = None,
            side_by_side_path=None) -> JobReport:
        """Lip-sync ``video`` (a clip or a still photo) to ``audio`` and write ``output`` (MP4).

        With ``options.side_by_side`` a labelled source | Diff2Lip video goes to ``side_by_side_path``
        (default: ``<output stem>_side_by_side.mp4``); with ``options.compare_wav2lip`` (or a given
        ``options.wav2lip_video``) it is source | Wav2Lip | Diff2Lip. With ``options.score`` the report's
        ``scores`` hold LSE-D / LSE-C of each stream against the driving audio (first ``score_seconds``).
        ``progress(stage, fraction, message)`` reports each stage. Raises ``LipSyncError`` subclasses with
        user-facing messages; no partial output is left.
        """
        options = options or JobOptions()
        options.validate()
        output = check_output_path(output)
        sbs = None
        if options.side_by_side:
            sbs = check_output_path(side_by_side_path or output.with_name(output.stem + "_side_by_side.mp4"))
        timer = StageTimer(STAGES)
        notify = progress or (lambda stage, fraction, message: None)
        with self._lock:
            plan = self._plan(Path(video), Path(audio), options, timer, notify)
            try:
                return self._render(plan, options, output, sbs, Path(audio), timer, notify)
            finally:
                plan.source.close()

    def _plan(self, video: Path, audio: Path, options: JobOptions, timer: StageTimer, notify, max_frames=None) -> _Plan:
        notify = notify or (lambda stage, fraction, message: None)
        source = FrameSource(video)
        fps = source.fps

        # 1. Audio -> mel -> number of output frames
        notify("audio", 0.0, "reading audio")
        with timer("audio"):
            wav = audio_io.load_audio(audio)
            seconds = audio_io.audio_duration(wav)
            if seconds < audio_io.DEFAULT_AUDIO.min_duration_s:
                raise AudioTooShortError(f"the audio is {seconds:.2f} s long; at least 0.2 s of speech is needed")
            if options.max_seconds is not None and seconds > options.max_seconds:
                raise InvalidMediaError(f"the audio is {seconds:.1f} s long; this server accepts at most "
                                        f"{options.max_seconds:g} s; trim the audio or run the CLI locally")
            mel = audio_io.melspectrogram(wav)
            policy = options.length_policy
            if policy == "shortest" and not source.is_image:
                num_output = min(source.num_frames, audio_io.num_windows(mel.shape[1], fps, options.audio_offset))
            else:
                num_output = audio_io.frames_for_audio(seconds, fps)
            if max_frames:
                num_output = min(num_output, max_frames)
            if num_output < 1:
                raise AudioTooShortError(f"the audio is {seconds:.2f} s long; at least 0.2 s of speech is needed")
            mels = audio_io.mel_windows(mel, fps, num_frames=num_output, audio_offset=options.audio_offset)
            src = source_indices(source.num_frames, num_output, "loop" if policy == "shortest" else policy)
        notify("audio", 1.0, f"{seconds:.2f} s of audio -> {num_output} frames")
        self.pipeline  # fail fast (weights unreachable) before the long detection pass
        if not max_frames:
            self._check_comparison(options, num_output, fps)

        # 2. Pass 1: decode and detect chunk by chunk; keep only detections
        used = int(src.max()) + 1
        if options.reference_frame is not None:  # the reference frame needs its face box too
            used = max(used, min(int(options.reference_frame) + 1, source.num_frames))
        with timer("decode"):  # damaged frames: a warning, or with options.strict an error before any work
            warnings = [] if source.is_image else damage_warnings(source.path, source.info, used, options.strict)
        detections = self._detect(source, used, options, timer, notify)
        if len(detections) < used:  # fewer frames decoded than probed: map the timeline onto what exists
            src = np.minimum(src, len(detections) - 1)
            used = len(detections)
        point_frame = int(options.reference_frame or 0)  # --face X,Y is a point in the reference (else first) frame
        faces = face_track(detections, source, options.pads, options.face_choice, options.face_point,
                           min(point_frame, len(detections) - 1))
        boxes, valid, found, refused = faces.boxes, faces.valid, faces.found, faces.refused

        # 3. The reference face: one chosen frame for all, or None (each frame is its own)
        reference = None
        if options.reference_frame is not None:
            k = int(options.reference_frame)
            if not 0 <= k < used:
                raise LipSyncError(f"reference frame {k} does not exist; the clip has {used} frames (0..{used - 1})")
            if not valid[k]:
                why = "the mouth is outside the picture in" if refused[k] else "no face was found in"
                raise NoFaceError(f"{why} reference frame {k}; choose another reference frame")
            frame = source.read(k, k + 1)
            reference = crop_faces(frame, boxes[k:k + 1], FACE_SIZE)[0]
        return _Plan(source, wav, mel, mels, src, boxes, valid, found, reference, refused, warnings,
                     shots=len(faces.shots), shots_without_face=len(faces.shots_without_face))

    def _check_comparison(self, options: JobOptions, num_output: int, fps) -> None:
        """Load the Wav2Lip / SyncNet weights and probe a given Wav2Lip result before the long passes."""
        shown = options.side_by_side or options.score  # otherwise the Wav2Lip result would be shown nowhere
        if shown and options.wav2lip_video:
            probe_video(options.wav2lip_video)
        elif shown and options.compare_wav2lip:
            self.wav2lip_model(options.wav2lip_checkpoint)
        if options.score:
            compare.check_scorable(num_output, fps, options.score_seconds)
            self.sync_scorer(options.syncnet_checkpoint, options.sync_expert)

    def _comparison(self, plan: _Plan, options: JobOptions):
        """The Wav2Lip panel's source (``.frames(start, frames)`` along the output timeline), or None."""
        size = (plan.source.width, plan.source.height)
        if options.wav2lip_video:
            return compare.Wav2LipVideoReader(options.wav2lip_video, size, plan.source.fps)
        if options.compare_wav2lip:
            mels = compare.wav2lip_mels(plan.mel, plan.source.fps, len(plan.src), options.audio_offset)
            return compare.Wav2LipRunner(self.wav2lip_model(options.wav2lip_checkpoint), plan.boxes[plan.src],
                                         plan.valid[plan.src], mels, (size[1], size[0], 3))
        return None

    def _detect(self, source: FrameSource, used: int, options: JobOptions, timer: StageTimer, notify) -> List[np.ndarray]:
        """Per-frame detections of frames [0, used), decoded chunk by chunk (only detections are kept)."""
        stat = source.path.stat()
        key = (str(source.path.resolve()), stat.st_size, stat.st_mtime_ns, options.detector)
        cached, whole_clip = self._detections.get(key, (None, False))
        if cached is not None and (len(cached) >= used or whole_clip):
            self._detections.move_to_end(key)
            notify("detect", 1.0, "faces: reused from the previous run")
            return cached[:used]
        detections = detect_frames(source, self.detector(options.detector), used, options.chunk_frames, timer, notify)
        self._detections[key] = (detections, len(detections) < used)  # fewer: the clip has no more frames
        while len(self._detections) > 4:
            self._detections.popitem(last=False)
        return detections

    def batch_size(self, options: JobOptions) -> int:
        """Frames per model call: the job's choice, else a larger default on a GPU than on the CPU."""
        if options.batch_size is not None:
            return int(options.batch_size)
        device = getattr(self._pipeline, "device", None)  # a loaded pipeline's, else the engine's choice
        device = str(device) if device is not None else (self.device or ("cuda" if _cuda_available() else "cpu"))
        return GPU_BATCH_SIZE if device.startswith("cuda") else CPU_BATCH_SIZE

    def _prepared_chunks(self, plan: _Plan, options: JobOptions, timer: StageTimer) -> Iterator["_Chunk"]:
        """Stage 1 (ahead of the model): decode each chunk of the output timeline and crop its faces."""
        from lipsync.media.torch_ops import crop_on_device, media_device  # torch is loaded with the model

        total_out = len(plan.src)
        device = media_device(getattr(self._pipeline, "device", None))  # None: OpenCV on the CPU
        for a in range(0, total_out, options.chunk_frames):
            b = min(a + options.chunk_frames, total_out)
            idx = plan.src[a:b]
            with timer("decode"):
                parts = []
                for start, stop in monotonic_runs(idx):
                    lo, hi = int(idx[start:stop].min()), int(idx[start:stop].max()) + 1
                    run = plan.source.read(lo, hi)
                    parts.append(run if idx[start] == lo else run[::-1])
                frames = np.concatenate(parts)
            valid = plan.valid[idx]
            boxes = plan.boxes[idx]
            crops = references = on_device = None
            if valid.any():
                with timer("crop"):
                    if device is not None:  # the model's GPU: frames uploaded once, cropped and pasted there
                        crops, on_device = crop_on_device(frames, boxes, valid, FACE_SIZE, device)
                    else:
                        crops = crop_faces(frames if valid.all() else frames[valid], boxes[valid], FACE_SIZE)
                references = crops if plan.reference is None else np.repeat(plan.reference[None], len(crops), 0)
            yield _Chunk(a, b, frames, valid, boxes, crops, references, on_device=on_device)

    def _diffusion_stage(self, plan: _Plan, options: JobOptions, timer: StageTimer, notify) -> Callable[["_Chunk"], "_Chunk"]:
        """Stage 2 (the model): a function that fills a chunk's generated faces."""
        import torch

        pipe = self.pipeline
        scheduler, steps_per_frame, deepcache_interval = options.sampling()
        self._use_scheduler(scheduler)
        from lipsync.model import acceleration

        wanted = options.compile  # None: the engine's choice, else on a GPU for clips long enough to repay it
        if wanted is None:
            frames = int(plan.valid[plan.src].sum())
            wanted = self.compile or acceleration.compile_pays_off(getattr(pipe, "device", "cpu"), frames, steps_per_frame)
        if wanted and not acceleration.is_compiled(pipe):
            acceleration.compile_pipeline(pipe, notify=lambda message: (logger.warning(message),
                                                                        notify("diffusion", 0.0, message)))
        # ONE initial noise for every frame of the clip, as the paper does (seed 7 = the paper's)
        noise = torch.randn((1, 3, FACE_SIZE, FACE_SIZE), generator=torch.Generator().manual_seed(int(options.seed)))
        total_out = len(plan.src)
        batch_size = self.batch_size(options)

        def diffuse(chunk: _Chunk) -> _Chunk:
            chunk.generated = np.zeros((len(chunk.frames), FACE_SIZE, FACE_SIZE, 3), np.uint8)
            if chunk.crops is None:
                return chunk
            n_valid = len(chunk.crops)

            def step_done(done, total, _base=chunk.start, _n=n_valid):
                frames_done = _base + _n * done / max(total, 1)
                notify("diffusion", frames_done / total_out,
                       f"diffusion step {min(steps_per_frame, 1 + (done - 1) % steps_per_frame)}/{steps_per_frame}, "
                       f"frame {min(total_out, int(frames_done) + 1)}/{total_out}")

            with timer("diffusion"):
                out = pipe(faces=chunk.crops, reference_faces=chunk.references,
                           mels=plan.mels[chunk.start:chunk.stop][chunk.valid],
                           num_inference_steps=steps_per_frame, latents=noise, batch_size=batch_size,
                           output_type="uint8", progress_bar=False, callback=step_done,
                           deepcache_interval=deepcache_interval, audio_guidance_scale=options.audio_guidance)
            chunk.generated[chunk.valid] = out.frames
            return chunk

        return diffuse

    def _paste(self, chunk: "_Chunk", options: JobOptions, timer: StageTimer) -> np.ndarray:
        """Stage 3 (behind the model): paste the generated faces back into the chunk's frames."""
        with timer("paste"):
            if chunk.on_device is not None:
                from lipsync.media.torch_ops import paste_on_device

                return paste_on_device(chunk.on_device, chunk.boxes, chunk.generated, chunk.valid, options.paste)
            return paste_faces(chunk.frames, chunk.boxes, chunk.generated, chunk.valid, mode=options.paste)

    def _generate(self, plan: _Plan, options: JobOptions, timer: StageTimer, notify) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """Yield (source frames, lip-synced frames) chunks of the output timeline, one stage after another."""
        notify = notify or (lambda stage, fraction, message: None)
        diffuse = self._diffusion_stage(plan, options, timer, notify)
        total_out = len(plan.src)
        for chunk in self._prepared_chunks(plan, options, timer):
            result = self._paste(diffuse(chunk), options, timer)
            notify("paste", chunk.stop / total_out, f"frame {chunk.stop}/{total_out}")
            yield chunk.frames, result

    def _render(self, plan: _Plan, options: JobOptions, output: Path, sbs: Optional[Path], audio: Path,
                timer: StageTimer, notify) -> JobReport:
        fps, size = plan.source.fps, (plan.source.width, plan.source.height)
        total = len(plan.src)
        scores: Dict[str, Dict[str, float]] = {}
        with contextlib.ExitStack() as stack:
            colors = plan.source.info.colors if plan.source.info is not None else None  # carried to the outputs
            writer = stack.enter_context(VideoWriter(output, fps, size, audio_path=audio, colors=colors,
                                                     preset=options.encoder_preset))
            comparison = self._comparison(plan, options) if (sbs is not None or options.score) else None
            if comparison is not None and hasattr(comparison, "close"):
                stack.callback(comparison.close)
            collector = None
            if options.score:
                scorer = self.sync_scorer(options.syncnet_checkpoint, options.sync_expert)
                collector = compare.SyncCropCollector(plan.boxes[plan.src], fps, options.score_seconds,
                                                      crop=getattr(scorer, "crop", None))
            labels = ("source", "Wav2Lip", "Diff2Lip") if comparison is not None else ("source", "Diff2Lip")
            sbs_writer = None
            if sbs is not None:
                sbs_size = comparison_layout(size, len(labels), mouth_zoom=options.mouth_zoom).size
                sbs_writer = stack.enter_context(VideoWriter(sbs, fps, sbs_size, audio_path=audio,
                                                                      colors=colors, preset=options.encoder_preset))
            position = [0]  # output frames written so far

            def write(frames: np.ndarray, result: np.ndarray) -> None:
                start = position[0]
                wav2lip = None
                if comparison is not None:
                    with timer("wav2lip"):
                        wav2lip = comparison.frames(start, frames)
                    notify("wav2lip", (start + len(frames)) / total, f"Wav2Lip frame {start + len(frames)}/{total}")
                if collector is not None and start < collector.num_frames:
                    with timer("score"):
                        collector.add(start, {"source": frames, "wav2lip": wav2lip, "diffusion": result})
                with timer("encode"):
                    writer.write(result)
                    if sbs_writer is not None:
                        streams = [frames, result] if wav2lip is None else [frames, wav2lip, result]
                        mouths = plan.boxes[plan.src[start:start + len(frames)]] if options.mouth_zoom else None
                        panels = side_by_side(streams, labels=labels, mouth_boxes=mouths)
                        sbs_writer.write(_fit_width(panels, sbs_size[0]))
                position[0] = start + len(frames)

            def paste_and_write(chunk: _Chunk) -> None:
                result = self._paste(chunk, options, timer)
                notify("paste", chunk.stop / total, f"frame {chunk.stop}/{total}")
                write(chunk.frames, result)

            # decode + crop ahead of the model, paste + encode behind it (threads, bounded queues)
            overlap = options.overlap
            if overlap is None:  # where measured faster: a GPU model, or a CPU with cores to spare
                overlap = stages.overlap_by_default(stages.available_cores(),
                                                    str(getattr(self.pipeline, "device", "cpu")).startswith("cuda"))
            run = stages.run_overlapped if overlap else stages.run_sequential
            run(self._prepared_chunks(plan, options, timer), self._diffusion_stage(plan, options, timer, notify),
                paste_and_write)
            if collector is not None:
                scorer_name = getattr(scorer, "label", "SyncNet")
                notify("score", 0.0, f"{scorer_name}: scoring lip sync")
                with timer("score"):
                    scores = collector.score(scorer, plan.wav)
                notify("score", 1.0, f"{scorer_name}: done")
            notify("encode", 0.0, "writing MP4")
            with timer("encode"):
                try:
                    writer.finish()
                    if sbs_writer is not None:
                        sbs_writer.finish()
                except BaseException:
                    for path in (output, sbs):
                        if path is not None:
                            path.unlink(missing_ok=True)
                    raise
        notify("encode", 1.0, "done")
        used = len(plan.valid)
        found = int(plan.found[:used].sum())
        refused = plan.refused if plan.refused is not None else np.zeros(used, dtype=bool)
        report = JobReport(
            output=output, side_by_side=sbs, frames=len(plan.src), fps=float(fps), width=size[0], height=size[1],
            faces_found=found, faces_missing=int((~plan.valid & ~refused).sum()),
            faces_interpolated=int((plan.valid & ~plan.found).sum()), faces_refused=int(refused.sum()),
            seconds={k: round(v, 3) for k, v in timer.seconds.items() if k not in OPTIONAL_STAGES or v > 0},
            duration=len(plan.src) / float(fps), boxes=plan.boxes, valid=plan.valid, source_index=plan.src,
            scores=scores, wall_seconds=round(time.perf_counter() - timer.started, 3),
            warnings=list(plan.warnings or []),
            shots=plan.shots, shots_without_face=plan.shots_without_face,
        )
        logger.info(report.summary())
        return report


def _fit_width(frames: np.ndarray, width: int) -> np.ndarray:
    """Pad or crop panels to exactly ``width`` columns (side_by_side keeps aspect, which may differ by 1 px)."""
    if frames.shape[2] == width:
        return frames
    if frames.shape[2] > width:
        return frames[:, :, :width]
    pad = np.repeat(frames[:, :, -1:], width - frames.shape[2], axis=2)
    return np.concatenate([frames, pad], axis=2)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False
