"""What each control of the page does: thin calls into ``LipSyncEngine`` that answer in plain words.

``Handlers`` holds the one engine, the job folders, the Stop switch and the speed meter. UI handlers
return component updates: a problem goes, once and in the user's words (``texts``), into the note beside the
input it concerns or into the status line above the results, never into a toast as well. The typed API
(``lipsync.app.api``) raises ``gr.Error`` instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Tuple

import gradio as gr
import numpy as np

from lipsync.app import texts
from lipsync.app.estimates import FPS, SpeedMeter, format_duration, gpu_seconds, job_gpu_seconds, plan_summary
from lipsync.app.face_choice import FaceChoiceHandlers, choice_note, for_display
from lipsync.app.jobs import JobCancelled, JobFolders, StopSwitch, progress_reporter
from lipsync.app.messages import face_problem, note, parse_pads, plain, user_errors
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


def on_gpu(fn, duration):
    """``spaces.GPU(duration=duration)(fn)`` on Hugging Face Spaces; ``fn`` unchanged elsewhere."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


class Handlers(FaceChoiceHandlers):
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
        self._faceless: set = set()  # photos whose face check found no face
        self._weights: Optional[Tuple[float, str]] = None  # (when, problem) of the last weights check
        self._weights_lock = threading.Lock()
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

    WEIGHTS_RECHECK_S = 60.0  # the Hub's answer is kept this long (lipsync.hub does the same)

    def weights_problem(self, refresh: bool = False) -> str:
        """The command line's message when the Diff2Lip weights cannot be had now, else "".

        Checks what ``python -m lipsync`` checks before a job (a local Hub cache, or a Hub that answers, for the
        paper's default weights; a given checkpoint is checked when it loads), at most once a minute; answers
        within about 3 s and loads nothing.
        """
        if self.engine.pipeline_loaded:
            return ""
        with self._weights_lock:
            known = self._weights
            if not refresh and known is not None and time.monotonic() - known[0] < self.WEIGHTS_RECHECK_S:
                return known[1]
            problem = ""
            if self.engine.checkpoint is None:  # the default weights (a given path is read when the model loads)
                from lipsync.model.loading import check_weights

                try:
                    check_weights(None)
                except WeightsUnavailableError as exc:
                    problem = plain(exc)
            self._weights = (time.monotonic(), problem)
            return problem

    def weights_note(self, problem: Optional[str] = None) -> dict:
        """The header's note about missing Diff2Lip weights (hidden when they can be had)."""
        problem = self.weights_problem() if problem is None else problem
        return gr.update(value=texts.WEIGHTS_MISSING.format(message=problem) if problem else "", visible=bool(problem))

    def on_load(self):
        """On page load: the weights note, Generate and Preview (off without weights), the comparison controls."""
        problem = self.weights_problem(refresh=True)
        return (self.weights_note(problem), gr.update(interactive=not problem), gr.update(interactive=not problem),
                *self.comparison_controls())

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
            return texts.SPEECH_TOO_SHORT.format(seconds=seconds, minimum=MIN_SPEECH_SECONDS)
        if self.max_seconds and seconds > self.max_seconds:
            return texts.SPEECH_TOO_LONG.format(seconds=seconds, maximum=self.max_seconds)
        return ""

    # -- options ---------------------------------------------------------------------------------------------
    def make_options(self, *, preset=None, steps=25, reference_frame=None, seed=7, scheduler="ddim", batch_size=8,
                     paste="mouth", length_policy="pingpong", pads="0,0,0,0", audio_offset=0, detector="s3fd",
                     compare_wav2lip=False, wav2lip_video=None, score=False, mouth_zoom=False,
                     compile_model=False, audio_guidance=1.0, face_point=None, face_choice="speaker") -> JobOptions:
        """JobOptions from control values (``preset`` None or "custom": ``steps`` and ``scheduler`` apply;
        ``face_point`` (x, y) pixels of the reference frame, else frame 0, or None)."""
        options = JobOptions(
            preset=None if preset in (None, "", CUSTOM) else preset, num_inference_steps=int(steps or 25),
            reference_frame=None if reference_frame is None or reference_frame == "" else int(reference_frame),
            seed=int(seed or 0), batch_size=int(batch_size or 8), paste=paste, length_policy=length_policy,
            pads=parse_pads(pads), audio_offset=int(audio_offset or 0), scheduler=scheduler, detector=detector,
            side_by_side=True, max_seconds=self.max_seconds, compare_wav2lip=bool(compare_wav2lip),
            wav2lip_checkpoint=self.wav2lip_checkpoint, wav2lip_video=wav2lip_video or None, score=bool(score),
            syncnet_checkpoint=self.syncnet_checkpoint, sync_expert=self.sync_expert, mouth_zoom=bool(mouth_zoom),
            compile=bool(compile_model), audio_guidance=float(audio_guidance or 1.0),
            face_point=None if face_point is None else tuple(face_point), face_choice=face_choice or "speaker")
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
        the number of frames, the face chosen (none: a new face starts without a choice) and its note."""
        path = video or photo
        tab = gr.update(selected="photo" if photo and not video else "video") if path else gr.update()
        if not path:
            return gr.update(maximum=1, value=0), None, note(""), tab, 1, None, choice_note(None)
        try:
            count = self.face_frames(path)
            last = max(count - 1, 0)
            chosen = int(reference_frame or 0)
            clamped = min(max(chosen, 0), last)  # the user's frame, unless this clip is shorter
            index = 0 if own_reference else clamped
            image, found = self.engine.face_check(path, index, JobOptions(detector=detector, pads=parse_pads(pads)))
        except gr.Error as exc:
            return gr.update(), None, note(exc.message), tab, gr.update(), None, choice_note(None)
        except LipSyncError as exc:
            return gr.update(maximum=1, value=0), None, note(plain(exc)), tab, 1, None, choice_note(None)
        message = ""
        is_photo = bool(photo and not video)
        (self._faceless.add if is_photo and not found else self._faceless.discard)(str(path))
        if not found:
            message = texts.NO_FACE_PHOTO if is_photo else texts.NO_FACE_IN_FRAME.format(index=index)
        slider = gr.update(maximum=max(last, 1), **({"value": clamped} if clamped != chosen else {}))
        return slider, for_display(image), note(message), tab, count, None, choice_note(None)

    @staticmethod
    def clamp_frame(value, frames):
        """A typed reference frame (raw, unchecked) clamped to 0 .. frames - 1, so box and slider agree."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = 0.0
        index = min(max(int(round(number)), 0), max(int(frames or 1) - 1, 0))
        return gr.update() if number == index else index  # in range: leave a dragged slider alone

    def on_reference(self, video, photo, own_reference, reference_frame, detector, pads, face_point=None):
        """The face check of the chosen reference frame (frame 0 when each frame is its own reference), after a
        released slider, another detector or new padding: (Check image, face note, face chosen, its note). The
        slider itself is left as the user set it. A chosen face (``face_point``: another detector or padding)
        stays chosen while a face is there; another frame is checked without one."""
        path = video or photo
        if not path:
            return None, note(""), None, choice_note(None)
        try:
            index = self.check_index(path, own_reference, reference_frame)
            options = JobOptions(detector=detector, pads=parse_pads(pads))
            face = self.chosen_number(path, index, detector, face_point)
            if face is None:
                face_point = None
            image, found = self.engine.face_check(path, index, replace(options, face_point=face_point))
        except gr.Error as exc:
            return gr.update(), note(exc.message), face_point, gr.update()
        except LipSyncError as exc:
            return gr.update(), note(plain(exc)), face_point, gr.update()
        is_photo = bool(photo and not video)
        (self._faceless.add if is_photo and not found else self._faceless.discard)(str(path))
        message = ""
        if not found:
            message = texts.NO_FACE_PHOTO if is_photo else texts.NO_FACE_IN_FRAME.format(index=index)
        return for_display(image), note(message), face_point, choice_note(face)

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
        if is_photo and str(path) in self._faceless:
            return "Use a photo with a face (see the note above) to see the estimate."
        plan = plan_summary(video_seconds, frames, speech, length_policy)
        what = "photo" if is_photo else f"{video_seconds:.1f} s video"
        options = self.make_options(preset=preset, steps=steps, length_policy=length_policy)
        scheduler, n_steps, _ = options.sampling()
        unavailable = False
        if calibrate and not self.meter.known and self.weights_problem():
            unavailable = True  # the header says why
        elif calibrate and not self.meter.known:
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
    def job_frames(self, face, audio, options: JobOptions) -> int:
        """Output frames of a job over these inputs (0 when a file cannot be read: the job will say why)."""
        from lipsync.media.reader import is_image

        try:
            is_photo = is_image(Path(face))
            plan = plan_summary(None if is_photo else self.media_seconds(face),
                                1 if is_photo else self.face_frames(face), self.media_seconds(audio),
                                options.length_policy)
        except LipSyncError:
            return 0
        return plan.frames

    def lipsync(self, face, audio, options: JobOptions, progress, session: str):
        """Run one job in a fresh folder; on any failure or Stop the folder (and every partial file) goes."""
        flag = self.stops.start(session)
        time_left = self.meter.time_left(self.job_frames(face, audio, options), options)
        try:
            folder = self.jobs.new()
            output = folder / f"{Path(face).stem[:40]}_diff2lip.mp4"
            try:
                report = self.run_job(face, audio, output, options, progress_reporter(progress, flag, time_left))
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

    # -- Generate, Stop and Preview on the page -----------------------------------------------------------------
    # A job's life on the page: on_start (Generate off, Stop on, the previous results cleared) -> on_run ->
    # on_finish (Generate on again, Stop off). Stop: on_stopping (both off, "Stopping…"; the page cancels the
    # job's event) -> on_stop (raises the job's stop flag and waits for it to end).

    def on_start(self):
        """Generate pressed: (status, side by side, result, download, report, scores, report JSON, first frame,
        Generate, Stop): the previous job's results go, Generate is off and Stop on while the job runs."""
        problem = self.weights_problem()
        status = texts.WEIGHTS_MISSING.format(message=problem) if problem else texts.STARTING
        return (status, None, None, gr.update(value=None, interactive=False), "", "", None, None,
                gr.update(interactive=False), gr.update(value="Stop", interactive=not problem))

    def on_finish(self, status):
        """After a job (done, failed or stopped): (status, Generate, Stop). A job stopped before it could
        answer (taken out of the queue, or cancelled while it ran) left the status saying it is starting."""
        return (texts.STOPPED if status == texts.STARTING else gr.update(),
                gr.update(interactive=not self.weights_problem()), gr.update(value="Stop", interactive=False))

    @staticmethod
    def on_stopping():
        """Stop pressed: (Generate, Stop) both off until the job has ended, Stop saying "Stopping…"."""
        return gr.update(interactive=False), gr.update(value=texts.STOPPING, interactive=False)

    def on_stop(self, status, request: gr.Request):
        """Stop this session's job: the status once it has ended (or after 8 s). A job still waiting for its
        turn is taken out of the queue by the page (its status still says it is starting)."""
        if self.stops.stop(request.session_hash or "") or status == texts.STARTING:
            return texts.STOPPED
        return gr.update()  # it had just ended: its results stand

    @staticmethod
    def clear_message(status):
        """An input changed: a warning or a Stop message in the status line no longer applies."""
        if isinstance(status, str) and (status.startswith("⚠️") or status.startswith("Stopped")):
            return texts.READY
        return gr.update()

    def input_problems(self, video, photo, audio):
        """(face note, speech note, status) before a job or a preview: what is missing or wrong, said once."""
        face_note, speech_note = note(""), note(self.speech_problem(audio))
        if not (video or photo):
            face_note = note(texts.NEED_FACE)
        elif photo and not video and str(photo) in self._faceless:
            face_note = note(texts.NO_FACE_PHOTO)
        if not audio:
            speech_note = note(texts.NEED_SPEECH)
        bad = face_note["visible"] or speech_note["visible"]
        return face_note, speech_note, texts.CHECK_NOTES if bad else ""

    def job_problem(self, exc: LipSyncError, face, audio):
        """(face note, speech note, status) for an error a job or a preview raised, in the user's words."""
        from lipsync.media.reader import is_image

        face_note, speech_note = note(""), note("")
        if isinstance(exc, NoFaceError):
            face_note = note(face_problem(exc, is_image(Path(face))))
        elif isinstance(exc, (AudioTooShortError, NoAudioError)) or (
                isinstance(exc, InvalidMediaError) and Path(audio).name in str(exc)):
            speech_note = note(plain(exc))
        elif isinstance(exc, InvalidMediaError):
            face_note = note(plain(exc))
        else:  # about the server (weights, the comparison's models): said in the status line only
            return face_note, speech_note, "⚠️ " + plain(exc)
        return face_note, speech_note, texts.CHECK_NOTES

    def on_run(self, video, photo, audio, own_reference, reference_frame, preset, steps, scheduler, seed,
               batch_size, paste, length_policy, pads, audio_offset, detector, compare_wav2lip, wav2lip_video,
               score, mouth_zoom, compile_model, audio_guidance=1.0, face_point=None, request: gr.Request = None,
               progress=gr.Progress()):
        """Generate from the page. Returns (status, side by side, result, download, report table, scores,
        report JSON, result tab, face note, speech note, first frame). ``face_point``: the face clicked in the
        Check image, or None. Never raises: every problem is said in the status line or in the note beside its
        input."""
        skip = gr.update()
        face_note, speech_note, status = self.input_problems(video, photo, audio)
        nothing = (skip,) * 7
        if status:
            return (status, *nothing, face_note, speech_note, skip)
        problem = self.weights_problem()
        if problem:
            return (texts.WEIGHTS_MISSING.format(message=problem), *nothing, face_note, speech_note, skip)
        face = video or photo
        try:
            options = self.make_options(
                preset=preset, steps=steps, reference_frame=None if own_reference else reference_frame, seed=seed,
                scheduler=scheduler, batch_size=batch_size, paste=paste, length_policy=length_policy, pads=pads,
                audio_offset=audio_offset, detector=detector, compare_wav2lip=compare_wav2lip,
                wav2lip_video=wav2lip_video if compare_wav2lip else None, score=score, mouth_zoom=mouth_zoom,
                compile_model=compile_model, audio_guidance=audio_guidance, face_point=face_point)
            report, data = self.lipsync(face, audio, options, progress, request.session_hash or "")
        except gr.Error as exc:  # a setting that cannot work (padding, the comparison's weights)
            return ("⚠️ " + exc.message, *nothing, face_note, speech_note, skip)
        except JobCancelled:
            return (texts.STOPPED, *nothing, face_note, speech_note, skip)
        except LipSyncError as exc:
            logger.warning("lip-sync: %s", exc)
            face_note, speech_note, status = self.job_problem(exc, face, audio)
            return (status, *nothing, face_note, speech_note, skip)
        except Exception as exc:
            logger.exception("lip-sync failed")
            return (texts.UNEXPECTED.format(what="Generate", error=type(exc).__name__), *nothing, face_note,
                    speech_note, skip)
        status = (f"Done in {data['seconds']['total']:.0f} s: {data['frames']} frames "
                  f"({data['duration_s']:.1f} s). Compare the mouths below, or download the result.")
        sbs = str(report.side_by_side) if report.side_by_side else None
        return (status, sbs, str(report.output), gr.update(value=str(report.output), interactive=True),
                report_markdown(data), report.scores_markdown(), data, gr.update(selected="side-by-side"),
                face_note, speech_note, self.first_frame(report.output))

    @staticmethod
    def first_frame(video) -> Optional[np.ndarray]:
        """Frame 0 of a finished result (H, W, 3) uint8, for the First frame tab; None if it cannot be read."""
        from lipsync.media.reader import read_frames

        try:
            return read_frames(video, [0])[0]
        except (LipSyncError, OSError, IndexError):
            return None

    def example_job(self, video, photo, audio):
        """An example's cached result: (side by side, result, report table) with the default settings."""
        options = self.make_options(preset="paper", detector=self.engine.default_detector)
        with user_errors("the example"):
            report, data = self.lipsync(video or photo, audio, options, lambda *a, **k: None, "examples")
        return str(report.side_by_side), str(report.output), report_markdown(data)

    def on_preview_first(self, video, photo, audio, own_reference, reference_frame, preset, steps, scheduler, seed,
                         batch_size, paste, length_policy, pads, audio_offset, detector, face_point=None):
        """Frame 0 lip-synced: (status, first frame, result tab, face note, speech note). Problems are said as
        Generate says them."""
        skip = gr.update()
        face_note, speech_note, status = self.input_problems(video, photo, audio)
        if status:
            return status, skip, skip, face_note, speech_note
        problem = self.weights_problem()
        if problem:
            return texts.WEIGHTS_MISSING.format(message=problem), skip, skip, face_note, speech_note
        face = video or photo
        try:
            options = self.make_options(
                preset=preset, steps=steps, reference_frame=None if own_reference else reference_frame, seed=seed,
                scheduler=scheduler, batch_size=batch_size, paste=paste, length_policy=length_policy, pads=pads,
                audio_offset=audio_offset, detector=detector, face_point=face_point)
            image = self.preview_job(face, audio, options)
        except gr.Error as exc:
            return "⚠️ " + exc.message, skip, skip, face_note, speech_note
        except LipSyncError as exc:
            logger.warning("first-frame preview: %s", exc)
            face_note, speech_note, status = self.job_problem(exc, face, audio)
            return status, skip, skip, face_note, speech_note
        except Exception as exc:
            logger.exception("first-frame preview failed")
            return (texts.UNEXPECTED.format(what="The preview", error=type(exc).__name__), skip, skip, face_note,
                    speech_note)
        return texts.PREVIEW_DONE, image, gr.update(selected="first-frame"), face_note, speech_note


PRESET_CHOICES = [(f"{p.name}: {p.description}", p.name) for p in PRESETS.values()] + \
    [("custom: choose the steps and the scheduler", CUSTOM)]
