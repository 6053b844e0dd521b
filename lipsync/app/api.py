"""The typed API: ``/lipsync`` and ``/preview_first_frame`` (also the MCP tools with ``--mcp-server``).

Integers are integers, optional inputs are optional, one ``reference_frame`` (an integer, or empty for
"each frame is its own reference"), one ``face_point`` ("X,Y" pixels, or empty); ``/lipsync`` returns the result video, the side-by-side video and
the report as JSON. Problems raise ``gr.Error`` with a plain message; without the Diff2Lip weights, at once,
with the command line's message.
"""

from __future__ import annotations

from typing import Optional

import gradio as gr

from lipsync.app.handlers import Handlers
from lipsync.app.jobs import JobCancelled
from lipsync.app.messages import parse_face_point, user_errors


class Api:
    """The endpoints' functions over the app's ``Handlers`` (their signatures name the API's parameters)."""

    def __init__(self, handlers: Handlers):
        self.h = handlers

    def refuse_without_weights(self) -> None:
        """Raise ``gr.Error`` with the command line's message at once when the Diff2Lip weights cannot be had."""
        problem = self.h.weights_problem()
        if problem:
            raise gr.Error(problem, print_exception=False)

    def lipsync(self, audio: str, video: Optional[str] = None, photo: Optional[str] = None,
                preset: Optional[str] = None, steps: int = 25, reference_frame: Optional[int] = None,
                seed: int = 7, scheduler: str = "ddim", batch_size: int = 8, paste: str = "mouth",
                length_policy: str = "pingpong", pads: str = "0,0,0,0", audio_offset: int = 0,
                detector: str = "s3fd", compare_wav2lip: bool = False, wav2lip_video: Optional[str] = None,
                score: bool = False, mouth_zoom: bool = False, face_point: str = "", face_choice: str = "speaker",
                request: gr.Request = None, progress=gr.Progress()):
        """Lip-sync a face video (or a still photo) to speech with Diff2Lip.

        Args:
            audio: the speech (wav/mp3/m4a or a video with sound); sets the length of the result.
            video: face video (mp4/mov/mkv/webm); give this or photo.
            photo: still face photo (png/jpg), used when no video is given.
            preset: "paper" (DDIM 25 steps), "fast" or "draft"; empty: steps and scheduler apply.
            steps: sampling steps (1-1000) when no preset is given; 25 is the paper's.
            reference_frame: frame index shown to the model as the reference face; empty: each frame is its own.
            seed: seed of the one initial noise shared by all frames (7 is the paper's).
            scheduler: ddim, dpm, unipc or euler, when no preset is given.
            batch_size: frames per model call.
            paste: "mouth" (only the generated lower half, feathered) or "box" (the whole face box).
            length_policy: when the speech is longer than the video: pingpong, loop or shortest.
            pads: face box padding in pixels, "top,bottom,left,right".
            audio_offset: frames; positive makes the lips follow the audio later.
            detector: face detector, s3fd or opencv.
            compare_wav2lip: also run Wav2Lip: the side-by-side becomes source | Wav2Lip | Diff2Lip.
            wav2lip_video: your own Wav2Lip result to show as the middle panel instead.
            score: LSE-D / LSE-C lip-sync scores (SyncNet) in the report.
            mouth_zoom: add a zoomed strip of each mouth to the side-by-side.
            face_point: "X,Y", pixels in the reference frame (else frame 0): lip-sync the face there, followed
                through the clip; empty: face_choice decides.
            face_choice: "speaker" (one person throughout, the one who talks) or "largest" (the largest face of
                every shot, for a scene with several speakers).

        Returns:
            result: the lip-synced video (MP4 with the speech).
            side_by_side: source | (Wav2Lip |) Diff2Lip with captions (MP4).
            report: frames, fps, duration, length, faces, seconds, settings and scores as JSON.
        """
        self.refuse_without_weights()
        face = video or photo
        if not face:
            raise gr.Error("Give a face video or a face photo.", print_exception=False)
        if not audio:
            raise gr.Error("Give some speech (audio).", print_exception=False)
        problem = self.h.speech_problem(audio)
        if problem:
            raise gr.Error(problem, print_exception=False)
        options = self.h.make_options(
            preset=preset, steps=steps, reference_frame=reference_frame, seed=seed, scheduler=scheduler,
            batch_size=batch_size, paste=paste, length_policy=length_policy, pads=pads, audio_offset=audio_offset,
            detector=detector, compare_wav2lip=compare_wav2lip, wav2lip_video=wav2lip_video, score=score,
            mouth_zoom=mouth_zoom, face_point=parse_face_point(face_point), face_choice=face_choice)
        session = getattr(request, "session_hash", None) or ""
        with user_errors("lip-sync"):
            try:
                report, data = self.h.lipsync(face, audio, options, progress, session)
            except JobCancelled as exc:
                raise gr.Error("The job was stopped.", print_exception=False) from exc
        return str(report.output), str(report.side_by_side) if report.side_by_side else None, data

    def preview(self, audio: str, video: Optional[str] = None, photo: Optional[str] = None,
                preset: Optional[str] = None, steps: int = 25, reference_frame: Optional[int] = None,
                seed: int = 7, scheduler: str = "ddim", batch_size: int = 8, paste: str = "mouth",
                length_policy: str = "pingpong", pads: str = "0,0,0,0", audio_offset: int = 0,
                detector: str = "s3fd", face_point: str = "", face_choice: str = "speaker"):
        """The first frame lip-synced (one frame through the model): a quick check of crop, mask and reference.

        Args:
            audio: the speech.
            video: face video; give this or photo.
            photo: still face photo.
            preset: "paper", "fast" or "draft"; empty: steps and scheduler apply.
            steps: sampling steps when no preset is given.
            reference_frame: reference face frame; empty: each frame is its own.
            seed: seed of the initial noise.
            scheduler: ddim, dpm, unipc or euler.
            batch_size: frames per model call.
            paste: mouth or box.
            length_policy: pingpong, loop or shortest.
            pads: face box padding "top,bottom,left,right".
            audio_offset: frames.
            detector: s3fd or opencv.
            face_point: "X,Y", pixels in the reference frame (else frame 0): the face to lip-sync; empty: none.
            face_choice: "speaker" or "largest", when no face_point is given.

        Returns:
            image: the first frame of the result (PNG).
        """
        self.refuse_without_weights()
        face = video or photo
        if not face or not audio:
            raise gr.Error("Give a face (video or photo) and some speech (audio).", print_exception=False)
        options = self.h.make_options(
            preset=preset, steps=steps, reference_frame=reference_frame, seed=seed, scheduler=scheduler,
            batch_size=batch_size, paste=paste, length_policy=length_policy, pads=pads, audio_offset=audio_offset,
            detector=detector, face_point=parse_face_point(face_point), face_choice=face_choice)
        with user_errors("the first-frame preview"):
            return self.h.preview_job(face, audio, options)
