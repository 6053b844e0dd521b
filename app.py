"""Diff2Lip Studio: the Gradio UI. All the work happens in ``lipsync.engine.LipSyncEngine``.

    python app.py [--checkpoint P] [--device D] [--host H] [--port N] [--share]
                  [--max-seconds S] [--max-upload-mb M] [--detector s3fd|mediapipe|opencv]
                  [--wav2lip-checkpoint P] [--syncnet-checkpoint P]

Importing this module builds nothing and loads no model: ``main()`` creates the one engine of the
process and ``build_demo(engine)`` the UI; the model loads on the first job and is reused.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

from lipsync.engine import LENGTH_POLICIES, PASTE_MODES, SCHEDULERS, JobOptions, LipSyncEngine
from lipsync.errors import LipSyncError
from lipsync.faces import DETECTORS
from lipsync.video import probe_duration

logger = logging.getLogger("diff2lip.app")

ASSETS = Path(__file__).resolve().parent / "assets"
if not ASSETS.is_dir():  # installed with pip: the examples ship inside the package as lipsync/assets
    ASSETS = Path(__file__).resolve().parent / "lipsync" / "assets"
DEFAULT_MAX_SECONDS = 60.0
DEFAULT_MAX_UPLOAD_MB = 50.0
GPU_SECONDS_PER_FRAME_STEP = 0.01  # generous for one 128 px Diff2Lip UNet step per frame on a ZeroGPU slice
GPU_BASE_SECONDS = 30  # detection, mel, encoding and the first model load
GPU_SECONDS_PER_WAV2LIP_FRAME = 0.01  # Wav2Lip's 96 px generator, one pass per frame (generous)
GPU_SECONDS_PER_SCORED_FRAME = 0.02  # SyncNet per frame and scored stream, offset search included (generous)
GPU_EXTRA_MODEL_SECONDS = 10  # loading the Wav2Lip / SyncNet weights

DESCRIPTION = """\
# Diff2Lip Studio
Lip-sync a face video (or a still photo) to any speech with
[Diff2Lip](https://arxiv.org/abs/2308.09716), an audio-conditioned diffusion model that inpaints the
lower half of the face. Upload a face and some speech, check the green face box in the preview, then
press **Lip-sync**. Long clips take a while on a CPU: try a few seconds and ~10 steps first. Tick
**Compare with Wav2Lip** for a source | Wav2Lip | Diff2Lip video and **Lip-sync score** for LSE-D / LSE-C.
"""


class JobFolders:
    """One temp folder per job; older folders are removed when a new job starts (keep the last ``keep``).

    Gradio copies returned files into its own cache (cleaned by ``delete_cache``), so a job's folder is
    only needed until its outputs have been sent.
    """

    def __init__(self, keep: int = 3):
        self.keep = max(1, keep)
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="diff2lip-jobs-"))
            atexit.register(shutil.rmtree, self._root, True)
        return self._root

    def new(self) -> Path:
        """A fresh folder for one job, after deleting all but the newest ``keep - 1`` old ones."""
        old = sorted(p for p in self.root.iterdir() if p.is_dir())
        for folder in old[: max(0, len(old) - self.keep + 1)]:
            shutil.rmtree(folder, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f"job-{time.time_ns()}-", dir=self.root))


def parse_pads(text: str | None) -> tuple[int, int, int, int]:
    """'top,bottom,left,right' pixels (commas or spaces; empty = 0,0,0,0) -> 4 ints."""
    parts = (text or "").replace(",", " ").split()
    if not parts:
        return (0, 0, 0, 0)
    try:
        pads = tuple(int(float(p)) for p in parts)
    except ValueError:
        pads = ()
    if len(pads) != 4:
        raise gr.Error(f"face padding must be 4 numbers 'top,bottom,left,right' in pixels, e.g. '0,10,0,0'; "
                       f"got {text!r}", print_exception=False)
    return pads


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
        scored_frames = streams * min(frames, int(options.score_seconds * 25) + 1)
    return gpu_seconds(options.num_inference_steps, frames, wav2lip_frames=wav2lip_frames,
                       scored_frames=scored_frames)


def _on_gpu(fn, duration):
    """``spaces.GPU(duration=duration)(fn)`` on Hugging Face Spaces; ``fn`` unchanged elsewhere."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


@contextlib.contextmanager
def _user_errors(what: str):
    """Show engine errors as a toast; log anything unexpected. The app keeps serving either way."""
    try:
        yield
    except gr.Error:
        raise
    except LipSyncError as exc:
        logger.warning("%s: %s", what, exc)
        raise gr.Error(str(exc), print_exception=False) from exc
    except Exception as exc:
        logger.exception("%s failed", what)
        raise gr.Error(f"{what} failed unexpectedly ({type(exc).__name__}: {exc}). "
                       "The details are in the server log.") from exc


def _progress_reporter(progress: gr.Progress):
    """Map the engine's ``progress(stage, fraction, message)`` onto one Gradio progress bar."""
    spans = {"audio": (0.0, 0.05), "decode": (0.05, 0.15), "detect": (0.05, 0.15), "diffusion": (0.15, 0.9),
             "paste": (0.15, 0.9), "wav2lip": (0.15, 0.9), "score": (0.9, 0.95), "encode": (0.95, 1.0)}

    def report(stage: str, fraction: float, message: str) -> None:
        lo, hi = spans.get(stage, (0.0, 1.0))
        progress(lo + (hi - lo) * min(max(fraction, 0.0), 1.0), desc=f"{stage}: {message}")

    return report


def build_demo(engine: LipSyncEngine, *, max_seconds: float | None = DEFAULT_MAX_SECONDS,
               default_detector: str = "s3fd", queue_size: int = 16, keep_jobs: int = 3,
               wav2lip_checkpoint: str | None = None, syncnet_checkpoint: str | None = None) -> gr.Blocks:
    """The UI around ``engine`` (used lazily: building the UI loads no model).

    ``wav2lip_checkpoint`` / ``syncnet_checkpoint``: weights for the comparison and the scores (None: the
    loaders' defaults, $LIPSYNC_WAV2LIP_CHECKPOINT / $LIPSYNC_SYNCNET_CHECKPOINT or the Hub), loaded on first use.
    """
    jobs = JobFolders(keep_jobs)

    def face_of(video, photo) -> str:
        if video:
            return video
        if photo:
            return photo
        raise gr.Error("Upload a face video or a face photo first.", print_exception=False)

    def make_options(steps, reference_frame, own_reference, seed, scheduler, batch_size, paste,
                     length_policy, pads, audio_offset, detector, compare_wav2lip=False, wav2lip_video=None,
                     score=False) -> JobOptions:
        options = JobOptions(
            num_inference_steps=int(steps), reference_frame=None if own_reference else int(reference_frame),
            seed=int(seed or 0), batch_size=int(batch_size), paste=paste, length_policy=length_policy,
            pads=parse_pads(pads), audio_offset=int(audio_offset or 0), scheduler=scheduler, detector=detector,
            side_by_side=True, max_seconds=max_seconds, compare_wav2lip=bool(compare_wav2lip),
            wav2lip_checkpoint=wav2lip_checkpoint, wav2lip_video=wav2lip_video or None, score=bool(score),
            syncnet_checkpoint=syncnet_checkpoint)
        try:
            options.validate()
        except ValueError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc
        return options

    def run_job(face, audio, output, options, progress):
        return engine.run(face, audio, output, options, progress=progress)

    def run_job_seconds(face, audio, output, options, progress):
        try:
            seconds = probe_duration(audio)
        except LipSyncError:  # the job itself will say what is wrong with the file
            seconds = 0.0
        if max_seconds:
            seconds = min(seconds, max_seconds)
        return job_gpu_seconds(options, int(seconds * 25) + 1)

    def preview_job(face, audio, options):
        return engine.preview_first_frame(face, audio, options)

    def preview_job_seconds(face, audio, options):
        return gpu_seconds(options.num_inference_steps, 1)

    run_job = _on_gpu(run_job, run_job_seconds)
    preview_job = _on_gpu(preview_job, preview_job_seconds)

    # -- handlers ----------------------------------------------------------------------------------------
    def on_face(video, photo, reference_frame):
        path = video or photo
        if not path:
            return gr.Slider(maximum=1, value=0, interactive=False)
        with _user_errors("reading the upload"):
            count = engine.frame_count(path)
        last = max(count - 1, 0)
        return gr.Slider(maximum=max(last, 1), value=min(int(reference_frame or 0), last), interactive=last > 0)

    def on_preview(video, photo, reference_frame, detector, pads):
        path = video or photo
        if not path:
            return None
        options = JobOptions(detector=detector, pads=parse_pads(pads))
        with _user_errors("the face preview"):
            return engine.preview_frame(path, int(reference_frame or 0), options)

    def on_preview_first(video, photo, audio, steps, reference_frame, own_reference, seed, scheduler,
                         batch_size, paste, length_policy, pads, audio_offset, detector):
        face = face_of(video, photo)
        if not audio:
            raise gr.Error("Upload or record some speech first.", print_exception=False)
        options = make_options(steps, reference_frame, own_reference, seed, scheduler, batch_size, paste,
                               length_policy, pads, audio_offset, detector)
        with _user_errors("the first-frame preview"):
            return preview_job(face, audio, options)

    def on_run(video, photo, audio, steps, reference_frame, own_reference, seed, scheduler, batch_size,
               paste, length_policy, pads, audio_offset, detector, compare_wav2lip=False, wav2lip_video=None,
               score=False, progress=gr.Progress()):  # defaults: API callers may leave the comparison out
        face = face_of(video, photo)
        if not audio:
            raise gr.Error("Upload or record some speech first.", print_exception=False)
        options = make_options(steps, reference_frame, own_reference, seed, scheduler, batch_size, paste,
                               length_policy, pads, audio_offset, detector, compare_wav2lip, wav2lip_video, score)
        folder = jobs.new()
        output = folder / f"{Path(face).stem[:40]}_diff2lip.mp4"
        try:
            with _user_errors("lip-sync"):
                report = run_job(face, audio, output, options, _progress_reporter(progress))
        except gr.Error:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        sbs = str(report.side_by_side) if report.side_by_side else None
        return sbs, str(report.output), str(report.output), report.as_markdown(), report.scores_markdown()

    # -- layout ------------------------------------------------------------------------------------------
    with gr.Blocks(title="Diff2Lip Studio", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(DESCRIPTION)
        with gr.Row():
            with gr.Column():
                with gr.Tab("Face video"):
                    video = gr.Video(label="Face video", sources=["upload"], elem_id="face-video")
                with gr.Tab("Face photo"):
                    photo = gr.Image(label="Face photo (held still; used when no video is given)",
                                     type="filepath", sources=["upload", "clipboard"], elem_id="face-photo")
                audio = gr.Audio(label="Speech", type="filepath", sources=["upload", "microphone"],
                                 elem_id="speech")
                steps = gr.Slider(1, 100, value=25, step=1, label="Sampling steps", elem_id="steps",
                                  info="more steps: slower, often cleaner mouths")
                own_reference = gr.Checkbox(value=True, label="Each frame is its own reference",
                                            info="the paper's setting; untick to use one reference frame")
                with gr.Row():
                    reference_frame = gr.Slider(0, 1, value=0, step=1, label="Reference frame",
                                                info="the face shown to the model (and the previewed frame)",
                                                interactive=False, elem_id="reference-frame", scale=3)
                    seed = gr.Number(value=7, precision=0, label="Seed", info="7 is the paper's", scale=1)
                with gr.Accordion("Advanced", open=False):
                    scheduler = gr.Dropdown(list(SCHEDULERS), value="ddim", label="Scheduler",
                                            info="ddim is the paper's sampler")
                    batch_size = gr.Slider(1, 64, value=8, step=1, label="Batch size (frames per model call)")
                    paste = gr.Radio(list(PASTE_MODES), value="mouth", label="Paste mode",
                                     info="mouth: only the generated lower half, feathered; box: the whole box")
                    length_policy = gr.Radio(list(LENGTH_POLICIES), value="pingpong", label="When the audio is "
                                             "longer than the video", info="shortest: stop at the shorter one")
                    pads = gr.Textbox(value="0,0,0,0", label="Face padding (pixels: top,bottom,left,right)",
                                      info="e.g. 0,10,0,0 to include the chin; press Enter to preview")
                    audio_offset = gr.Slider(-10, 10, value=0, step=1, label="Audio offset (frames)",
                                             info="positive: the lips follow the audio later")
                    detector = gr.Dropdown(list(DETECTORS), value=default_detector, label="Face detector",
                                           info="s3fd: accurate (downloads weights once); opencv: no download")
                with gr.Group():
                    with gr.Row():
                        compare_wav2lip = gr.Checkbox(
                            value=False, label="Compare with Wav2Lip", elem_id="compare-wav2lip",
                            info="side by side: source | Wav2Lip | Diff2Lip (Wav2Lip's weights: non-commercial use)")
                        score = gr.Checkbox(value=False, label="Lip-sync score (LSE-D / LSE-C)", elem_id="score",
                                            info="SyncNet against the speech, for each video shown")
                    wav2lip_video = gr.Video(label="Your Wav2Lip result (optional)", sources=["upload"], height=160,
                                             elem_id="wav2lip-video")
                with gr.Row():
                    preview_button = gr.Button("Preview first frame")
                    run_button = gr.Button("Lip-sync", variant="primary", elem_id="run")
            with gr.Column():
                face_check = gr.Image(label="Face check (green box: detected face; shaded: generated region)",
                                      interactive=False, elem_id="face-check")
                first_frame = gr.Image(label="First frame, lip-synced", interactive=False, elem_id="first-frame")
                side_by_side = gr.Video(label="Side by side (source | Diff2Lip, or source | Wav2Lip | Diff2Lip)",
                                        interactive=False, elem_id="side-by-side")
                result = gr.Video(label="Diff2Lip result", interactive=False, elem_id="result")
                download = gr.File(label="Download the result (MP4)", elem_id="download")
                scores = gr.Markdown(elem_id="scores")
                report = gr.Markdown(elem_id="report")

        gr.Examples(
            examples=[[str(ASSETS / "example_face.mp4"), None, str(ASSETS / "example_speech.wav")],
                      [None, str(ASSETS / "example_face.png"), str(ASSETS / "example_speech.wav")]],
            inputs=[video, photo, audio], example_labels=["moving face + speech", "still photo + speech"],
            cache_examples=False)

        controls = [steps, reference_frame, own_reference, seed, scheduler, batch_size, paste, length_policy,
                    pads, audio_offset, detector]
        preview_inputs = [video, photo, reference_frame, detector, pads]
        for face_input in (video, photo):
            face_input.change(on_face, [video, photo, reference_frame], reference_frame,
                              api_visibility="private", concurrency_id="preview").success(
                on_preview, preview_inputs, face_check, api_visibility="private", concurrency_id="preview")
        reference_frame.release(on_preview, preview_inputs, face_check, api_visibility="private",
                                concurrency_id="preview")
        detector.change(on_preview, preview_inputs, face_check, api_visibility="private", concurrency_id="preview")
        pads.submit(on_preview, preview_inputs, face_check, api_visibility="private", concurrency_id="preview")
        preview_button.click(on_preview_first, [video, photo, audio, *controls], first_frame,
                             api_name="preview_first_frame", concurrency_id="model")
        run_button.click(on_run, [video, photo, audio, *controls, compare_wav2lip, wav2lip_video, score],
                         [side_by_side, result, download, report, scores], api_name="lipsync", concurrency_id="model")
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    return demo


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a number") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Diff2Lip Studio web app")
    parser.add_argument("--checkpoint", default=None,
                        help="pipeline folder, original .pt, or Hub repo (default: $LIPSYNC_CHECKPOINT or the paper's)")
    parser.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: GPU if available)")
    parser.add_argument("--host", default=None, help="address to serve on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--max-seconds", type=float, default=_env_float("LIPSYNC_MAX_SECONDS", DEFAULT_MAX_SECONDS),
                        help="longest speech accepted, seconds; 0 = no limit (env LIPSYNC_MAX_SECONDS, default 60)")
    parser.add_argument("--max-upload-mb", type=float,
                        default=_env_float("LIPSYNC_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB),
                        help="largest upload, MB; 0 = no limit (env LIPSYNC_MAX_UPLOAD_MB, default 50)")
    parser.add_argument("--detector", choices=sorted(DETECTORS), default=os.environ.get("LIPSYNC_DETECTOR", "s3fd"),
                        help="default face detector in the UI (default s3fd)")
    parser.add_argument("--queue-size", type=int, default=16, help="most jobs waiting in the queue")
    parser.add_argument("--wav2lip-checkpoint", default=None,
                        help="Wav2Lip weights for 'Compare with Wav2Lip' (default: $LIPSYNC_WAV2LIP_CHECKPOINT or "
                             "wav2lip_gan.pth from the Hub, downloaded on first use; non-commercial licence)")
    parser.add_argument("--syncnet-checkpoint", default=None,
                        help="SyncNet v2 weights for the lip-sync score (default: $LIPSYNC_SYNCNET_CHECKPOINT or "
                             "the Hub, downloaded on first use)")
    parser.add_argument("--preload", action="store_true", default=bool(os.environ.get("SPACES_ZERO_GPU")),
                        help="load the model at start-up instead of on the first job (on by default on ZeroGPU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = LipSyncEngine(checkpoint=args.checkpoint, device=args.device, detector=args.detector)
    demo = build_demo(engine, max_seconds=args.max_seconds or None, default_detector=args.detector,
                      queue_size=args.queue_size, wav2lip_checkpoint=args.wav2lip_checkpoint,
                      syncnet_checkpoint=args.syncnet_checkpoint)  # imports `spaces` (if any) before torch touches CUDA
    if args.preload:
        engine.pipeline  # noqa: B018 - ZeroGPU wants the weights in the main process before the first job
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                max_file_size=int(args.max_upload_mb * 1024 * 1024) if args.max_upload_mb > 0 else None)


if __name__ == "__main__":
    main()
