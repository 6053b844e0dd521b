"""What each control of the page does: thin calls into ``LipSyncEngine`` that answer in plain words.

``Handlers`` holds the one engine, the job folders, the Stop switch and the speed meter. UI handlers
return component updates (messages go beside the input they concern); the typed API (``lipsync.app.api``)
raises ``gr.Error`` instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Optional, Tuple

import gradio as gr

from lipsync.app import texts
from lipsync.app.estimates import FPS, SpeedMeter, format_duration, gpu_seconds, job_gpu_seconds, plan_summary
from lipsync.app.jobs import JobCancelled, JobFolders, StopSwitch, progress_reporter
from lipsync.app.report import report_data, report_markdown
from lipsync.engine import LipSyncEngine
from lipsync.errors import (
    AudioTooShortError,
    InvalidMediaError,
    LipSyncError,
    NoAudioError,
    NoFaceError,
    WeightsUnavailableError,
)
from lipsync.job import JobOptions
from lipsync.model.presets import PRESETS

logger = logging.getLogger("diff2lip.app")

CUSTOM = "custom"  # the preset choice that shows the steps and scheduler controls
MIN_SPEECH_SECONDS = 0.2


def parse_pads(text: Optional[str]) -> Tuple[int, int, int, int]:
    """'top,bottom,left,right' pixels (commas or spaces; empty = 0,0,0,0) -> 4 ints."""
    parts = (text or "").replace(",", " ").split()
    if not parts:
        return (0, 0, 0, 0)
    try:
        pads = tuple(int(float(p)) for p in parts)
    except ValueError:
        pads = ()
    if len(pads) != 4:
        raise gr.Error(f"Face padding must be 4 numbers 'top,bottom,left,right' in pixels, e.g. '0,10,0,0'; "
                       f"got {text!r}", print_exception=False)
    return pads


def on_gpu(fn, duration):
    """``spaces.GPU(duration=duration)(fn)`` on Hugging Face Spaces; ``fn`` unchanged elsewhere."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


def plain(exc: Exception) -> str:
    """An engine error in words for the browser: messages about weights files, flags or environment
    variables (meant for whoever runs the server) become a plain note."""
    message = str(exc)
    if isinstance(exc, WeightsUnavailableError) or "--" in message or "LIPSYNC_" in message:
        return ("A model this job needs could not be loaded on this server. Try again later, or switch "
                "off the comparison and the score.")
    return message


@contextlib.contextmanager
def user_errors(what: str):
    """Engine errors become ``gr.Error`` with a plain message; anything unexpected is logged too."""
    try:
        yield
    except gr.Error:
        raise
    except LipSyncError as exc:
        logger.warning("%s: %s", what, exc)
        raise gr.Error(plain(exc), print_exception=False) from exc
    except Exception as exc:
        logger.exception("%s failed", what)
        raise gr.Error(f"{what[:1].upper() + what[1:]} failed unexpectedly ({type(exc).__name__}). "
                       "Please try again; the details are in the server log.") from exc


def note(message: str) -> dict:
    """A visible warning note beside an input (hidden when ``message`` is empty)."""
    return gr.update(value=f"⚠️ {message}" if message else "", visible=bool(message))


class Handlers:
    """The app's behaviour around one ``engine``. See ``lipsync.app.layout.build_demo`` for the wiring."""

    def __init__(self, engine: LipSyncEngine, *, max_seconds: Optional[float], keep_jobs: int = 3,
                 jobs_dir: Optional[Path] = None, wav2lip_checkpoint: Optional[str] = None,
                 syncnet_checkpoint: Optional[str] = None, sync_expert: Optional[str] = None):
        self.engine = engine
        self.max_seconds = max_seconds
        self.jobs = JobFolders(keep_jobs, jobs_dir)
        self.stops = StopSwitch()
        self.meter = SpeedMeter()
        self.wav2lip_checkpoint = wav2lip_checkpoint
        self.syncnet_checkpoint = syncnet_checkpoint
        self.sync_expert = sync_expert  # an own lip-sync expert scores instead of SyncNet v2 ("own expert")
        self._media: dict = {}
        self.run_job = on_gpu(self._run_job, self._run_job_seconds)
        self.preview_job = on_gpu(self._preview_job, lambda face, audio, options: gpu_seconds(options.sampling()[1], 1))
        self.calibrate = on_gpu(self._calibrate, lambda: gpu_seconds(2, 4))

    # -- model calls (on a ZeroGPU slice on Spaces) ----------------------------------------------------------
    def _run_job(self, face, audio, output, options, progress):
        return self.engine.run(face, audio, output, options, progress=progress)

    def _run_job_seconds(self, face, audio, output, options, progress):
        try:
            seconds = self.media_seconds(audio)
        except LipSyncError:  # the job itself will say what is wrong with the file
            seconds = 0.0
        if self.max_seconds:
            seconds = min(seconds, self.max_seconds)
        return job_gpu_seconds(options, int(seconds * FPS) + 1)

    def _preview_job(self, face, audio, options):
        return self.engine.preview_first_frame(face, audio, options)

    def _calibrate(self):
        return self.meter.calibrate(self.engine)

    # -- facts about inputs ----------------------------------------------------------------------------------
    def _remember(self, key, compute):
        if key not in self._media:
            if len(self._media) > 256:  # uploads come and go: keep the memo small
                self._media.clear()
            self._media[key] = compute()
        return self._media[key]

    def media_seconds(self, path) -> float:
        """Duration of an uploaded file in seconds (probed once per path)."""
        from lipsync.media.probe import probe_duration

        return self._remember(("seconds", str(path)), lambda: probe_duration(path))

    def face_frames(self, path) -> int:
        """Frames of a face upload (1 for a photo; counted once per path)."""
        return self._remember(("frames", str(path)), lambda: self.engine.frame_count(path))

    def availability(self) -> dict:
        """{"wav2lip": (ok, reason), "syncnet": (ok, reason)}: can their weights be had now (answers in ~3 s)."""
        from lipsync.hub import weights_available
        from lipsync.scoring.syncnet import SYNCNET_CHECKPOINT_ENV, SYNCNET_HUB_FILENAME, SYNCNET_HUB_REPO
        from lipsync.scoring.wav2lip import WAV2LIP_CHECKPOINT_ENV, WAV2LIP_HUB_FILENAMES, WAV2LIP_HUB_REPO

        if self.sync_expert is not None:
            from lipsync.scoring.syncnet_color import OWN_EXPERT_WEIGHTS

            found = Path(self.sync_expert, OWN_EXPERT_WEIGHTS).is_file() or str(self.sync_expert).endswith(
                ".safetensors") and Path(self.sync_expert).is_file()
            syncnet = (found, "" if found else f"the lip-sync expert {self.sync_expert} was not found")
        else:
            syncnet = weights_available(SYNCNET_HUB_REPO, SYNCNET_HUB_FILENAME,
                                        self.syncnet_checkpoint or os.environ.get(SYNCNET_CHECKPOINT_ENV))
        return {
            "wav2lip": weights_available(WAV2LIP_HUB_REPO, WAV2LIP_HUB_FILENAMES["wav2lip_gan"],
                                         self.wav2lip_checkpoint or os.environ.get(WAV2LIP_CHECKPOINT_ENV)),
            "syncnet": syncnet,
        }

    def comparison_controls(self):
        """Updates for (compare checkbox, Wav2Lip note, score checkbox, SyncNet note) after a quick check."""
        available = self.availability()
        wav2lip, syncnet = available["wav2lip"][0], available["syncnet"][0]
        return (gr.update(visible=wav2lip, value=False) if not wav2lip else gr.update(visible=True),
                gr.update(visible=not wav2lip), gr.update(visible=syncnet, value=False) if not syncnet
                else gr.update(visible=True), gr.update(visible=not syncnet))

    def speech_problem(self, audio) -> str:
        """What is wrong with the speech file, in words ("" when it is fine)."""
        if not audio:
            return ""
        try:
            seconds = self.media_seconds(audio)
        except LipSyncError as exc:
            return plain(exc)
        if seconds < MIN_SPEECH_SECONDS:
            return (f"This speech is {seconds:.2f} s long; at least {MIN_SPEECH_SECONDS:g} s is needed. "
                    "Upload or record a longer one.")
        if self.max_seconds and seconds > self.max_seconds:
            return (f"This speech is {seconds:.1f} s long; this server takes at most {self.max_seconds:g} s. "
                    "Trim it and upload it again.")
        return ""

    # -- options ---------------------------------------------------------------------------------------------
    def make_options(self, *, preset=None, steps=25, reference_frame=None, seed=7, scheduler="ddim", batch_size=8,
                     paste="mouth", length_policy="pingpong", pads="0,0,0,0", audio_offset=0, detector="s3fd",
                     compare_wav2lip=False, wav2lip_video=None, score=False, mouth_zoom=False,
                     compile_model=False, audio_guidance=1.0) -> JobOptions:
        """JobOptions from control values (``preset`` None or "custom": ``steps`` and ``scheduler`` apply)."""
        options = JobOptions(
            preset=None if preset in (None, "", CUSTOM) else preset, num_inference_steps=int(steps or 25),
            reference_frame=None if reference_frame is None or reference_frame == "" else int(reference_frame),
            seed=int(seed or 0), batch_size=int(batch_size or 8), paste=paste, length_policy=length_policy,
            pads=parse_pads(pads), audio_offset=int(audio_offset or 0), scheduler=scheduler, detector=detector,
            side_by_side=True, max_seconds=self.max_seconds, compare_wav2lip=bool(compare_wav2lip),
            wav2lip_checkpoint=self.wav2lip_checkpoint, wav2lip_video=wav2lip_video or None, score=bool(score),
            syncnet_checkpoint=self.syncnet_checkpoint, sync_expert=self.sync_expert, mouth_zoom=bool(mouth_zoom),
            compile=bool(compile_model), audio_guidance=float(audio_guidance or 1.0))
        try:
            options.validate()
        except ValueError as exc:
            raise gr.Error(str(exc)[:1].upper() + str(exc)[1:], print_exception=False) from exc
        available = None
        if options.compare_wav2lip and not options.wav2lip_video:
            available = available or self.availability()
            if not available["wav2lip"][0]:
                raise gr.Error(texts.WAV2LIP_UNAVAILABLE + " Untick Compare with Wav2Lip, or upload your own "
                               "Wav2Lip result.", print_exception=False)
        if options.score:
            available = available or self.availability()
            if not available["syncnet"][0]:
                raise gr.Error(texts.SYNCNET_UNAVAILABLE + " Untick the score.", print_exception=False)
        return options

    # -- the face, the speech and the info line --------------------------------------------------------------
    def on_face(self, video, photo, own_reference, reference_frame, detector, pads):
        """After an upload: reference slider, face check, the note beside the face, the tab that shows it,
        the number of frames."""
        path = video or photo
        tab = gr.update(selected="photo" if photo and not video else "video") if path else gr.update()
        if not path:
            return gr.update(maximum=1, value=0), None, note(""), tab, 1
        try:
            count = self.face_frames(path)
            last = max(count - 1, 0)
            index = min(int(reference_frame or 0), last) if not own_reference else 0
            image, found = self.engine.face_check(path, index, JobOptions(detector=detector, pads=parse_pads(pads)))
        except gr.Error as exc:
            return gr.update(), None, note(exc.message), tab, gr.update()
        except LipSyncError as exc:
            return gr.update(maximum=1, value=0), None, note(plain(exc)), tab, 1
        message = ""
        if not found:
            message = ("No face was found in this photo. Use a photo where one face is clearly visible and "
                       "facing the camera." if count == 1 else
                       f"No face was found in frame {index} of this video. Choose another reference frame, or "
                       "a video where the face is clearly visible.")
        return gr.update(maximum=max(last, 1), value=index), image, note(message), tab, count

    @staticmethod
    def clamp_frame(value, frames):
        """A typed reference frame (raw, unchecked) clamped to 0 .. frames - 1, so box and slider agree."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = 0.0
        index = min(max(int(round(number)), 0), max(int(frames or 1) - 1, 0))
        return gr.update() if number == index else index  # in range: leave a dragged slider alone

    def on_reference(self, video, photo, reference_frame, detector, pads):
        """A moved or typed reference frame: clamp it to the clip and show that frame's face check."""
        path = video or photo
        if not path:
            return gr.update(), None, note("")
        try:
            last = max(self.face_frames(path) - 1, 0)
            index = min(max(int(reference_frame or 0), 0), last)
            image, found = self.engine.face_check(path, index, JobOptions(detector=detector, pads=parse_pads(pads)))
        except gr.Error as exc:
            return gr.update(), gr.update(), note(exc.message)
        except LipSyncError as exc:
            return gr.update(), gr.update(), note(plain(exc))
        message = "" if found else f"No face was found in frame {index}; choose another reference frame."
        return gr.update(value=index), image, note(message)

    def on_speech(self, audio):
        """The note beside the speech input after an upload or recording."""
        return note(self.speech_problem(audio))

    def info_text(self, video, photo, audio, preset, steps, length_policy, compare_wav2lip, score,
                  calibrate: bool = False) -> str:
        """'5.0 s video, 9.6 s speech → ...; about N min at 25 steps on this machine.'"""
        path = video or photo
        if not path or not audio:
            return "Add a face and some speech to see how long the result will be and how long it will take."
        try:
            speech = self.media_seconds(audio)
            is_photo = not video
            frames = 1 if is_photo else self.face_frames(path)
            video_seconds = None if is_photo else self.media_seconds(path)
        except LipSyncError:
            return "Fix the file marked above to see the estimate."
        if self.speech_problem(audio):
            return "Fix the speech marked above to see the estimate."
        plan = plan_summary(video_seconds, frames, speech, length_policy)
        what = "photo" if is_photo else f"{video_seconds:.1f} s video"
        options = self.make_options(preset=preset, steps=steps, length_policy=length_policy)
        scheduler, n_steps, _ = options.sampling()
        unavailable = False
        if calibrate and not self.meter.known:
            try:
                self.calibrate()
            except LipSyncError as exc:  # e.g. the weights cannot be downloaded: the job will say so
                logger.warning("timing the model: %s", exc)
                unavailable = True
        seconds = self.meter.estimate(plan.frames, options)
        sampling = f"{n_steps} step{'s' if n_steps != 1 else ''}" + (f" ({options.preset})" if options.preset else "")
        if seconds is None and unavailable:
            when = f"{sampling}; no time estimate, since the model could not be loaded yet"
        elif seconds is None:
            when = f"timing the model on this machine for {sampling}…"
        else:
            when = f"**{format_duration(seconds)}** at {sampling} on this machine"
            if compare_wav2lip or score:
                when += ", plus a little for " + " and ".join(
                    n for n, on in (("Wav2Lip", compare_wav2lip), ("the score", score)) if on)
        return f"**{what}, {speech:.1f} s speech** → {plan.how} ({plan.frames} frames, {plan.seconds:.1f} s); {when}."

    def on_info(self, *args):
        """The info line at once (an estimate only if the speed is known)."""
        return self.info_text(*args)

    def on_info_timed(self, *args):
        """The info line with an estimate, timing the model first if nothing is known yet."""
        return self.info_text(*args, calibrate=True)

    # -- jobs ------------------------------------------------------------------------------------------------
    def lipsync(self, face, audio, options: JobOptions, progress, session: str):
        """Run one job in a fresh folder; on any failure or Stop the folder (and every partial file) goes."""
        flag = self.stops.start(session)
        folder = self.jobs.new()
        output = folder / f"{Path(face).stem[:40]}_diff2lip.mp4"
        try:
            report = self.run_job(face, audio, output, options, progress_reporter(progress, flag))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            self.stops.finish(session, flag)
        self.meter.record(report, options)
        from lipsync.media.reader import is_image

        is_photo = is_image(Path(face))
        plan = plan_summary(None if is_photo else self.media_seconds(face), 1 if is_photo else self.face_frames(face),
                            self.media_seconds(audio), options.length_policy)
        return report, report_data(report, options, plan)

    def on_run(self, video, photo, audio, own_reference, reference_frame, preset, steps, scheduler, seed,
               batch_size, paste, length_policy, pads, audio_offset, detector, compare_wav2lip, wav2lip_video,
               score, mouth_zoom, compile_model, audio_guidance=1.0, request: gr.Request = None,
               progress=gr.Progress()):
        """Generate from the page. Returns (status, side by side, result, download, report table, scores,
        report JSON, result tab, face note, speech note)."""
        skip = gr.update()
        face_note, speech_note = note(""), note(self.speech_problem(audio))
        if not (video or photo):
            face_note = note("Upload a face video or a face photo first.")
        if not audio:
            speech_note = note("Upload or record some speech first.")
        if not (video or photo) or not audio or speech_note["visible"]:
            return ("⚠️ Something is missing or wrong above.", skip, skip, skip, skip, skip, skip, skip,
                    face_note, speech_note)
        options = self.make_options(
            preset=preset, steps=steps, reference_frame=None if own_reference else reference_frame, seed=seed,
            scheduler=scheduler, batch_size=batch_size, paste=paste, length_policy=length_policy, pads=pads,
            audio_offset=audio_offset, detector=detector, compare_wav2lip=compare_wav2lip,
            wav2lip_video=wav2lip_video if compare_wav2lip else None, score=score, mouth_zoom=mouth_zoom,
            compile_model=compile_model, audio_guidance=audio_guidance)
        face = video or photo
        try:
            report, data = self.lipsync(face, audio, options, progress, request.session_hash or "")
        except JobCancelled:
            return ("Stopped. Nothing was kept; change what you like and press Generate again.",
                    skip, skip, skip, skip, skip, skip, skip, face_note, speech_note)
        except (NoFaceError, AudioTooShortError, InvalidMediaError) as exc:
            about_speech = isinstance(exc, (AudioTooShortError, NoAudioError)) or (
                isinstance(exc, InvalidMediaError) and Path(audio).name in str(exc))
            if about_speech:
                speech_note = note(plain(exc))
            else:
                face_note = note(plain(exc))
            return ("⚠️ " + plain(exc), skip, skip, skip, skip, skip, skip, skip, face_note, speech_note)
        except LipSyncError as exc:
            logger.warning("lip-sync: %s", exc)
            raise gr.Error(plain(exc), print_exception=False) from exc
        status = (f"Done in {data['seconds']['total']:.0f} s: {data['frames']} frames "
                  f"({data['duration_s']:.1f} s). Compare the mouths below, or download the result.")
        sbs = str(report.side_by_side) if report.side_by_side else None
        return (status, sbs, str(report.output), gr.update(value=str(report.output), interactive=True),
                report_markdown(data), report.scores_markdown(), data, gr.update(selected="side-by-side"),
                face_note, speech_note)

    def example_job(self, video, photo, audio):
        """An example's cached result: (side by side, result, report table) with the default settings."""
        options = self.make_options(preset="paper", detector=self.engine.default_detector)
        with user_errors("the example"):
            report, data = self.lipsync(video or photo, audio, options, lambda *a, **k: None, "examples")
        return str(report.side_by_side), str(report.output), report_markdown(data)

    def on_stop(self, request: gr.Request):
        """Stop this session's job; returns the status line once it has ended (or after 8 s)."""
        if self.stops.stop(request.session_hash or ""):
            return "Stopped. Nothing was kept; change what you like and press Generate again."
        return "Nothing is running."

    def on_preview_first(self, video, photo, audio, own_reference, reference_frame, preset, steps, scheduler, seed,
                         batch_size, paste, length_policy, pads, audio_offset, detector):
        """Frame 0 lip-synced, shown in the First frame tab."""
        face = video or photo
        if not face:
            raise gr.Error("Upload a face video or a face photo first.", print_exception=False)
        if not audio:
            raise gr.Error("Upload or record some speech first.", print_exception=False)
        options = self.make_options(
            preset=preset, steps=steps, reference_frame=None if own_reference else reference_frame, seed=seed,
            scheduler=scheduler, batch_size=batch_size, paste=paste, length_policy=length_policy, pads=pads,
            audio_offset=audio_offset, detector=detector)
        with user_errors("the first-frame preview"):
            return self.preview_job(face, audio, options), gr.update(selected="first-frame")


PRESET_CHOICES = [(f"{p.name}: {p.description}", p.name) for p in PRESETS.values()] + \
    [("custom: choose the steps and the scheduler", CUSTOM)]
