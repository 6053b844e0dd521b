"""Problems in words: engine errors as sentences in the user's terms, and notes beside the inputs.

The wordings themselves live in ``lipsync.app.texts``; these helpers choose one and shape it for the page.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Optional, Tuple

import gradio as gr

from lipsync import job
from lipsync.app import texts
from lipsync.errors import LipSyncError, NoFaceError

logger = logging.getLogger("diff2lip.app")


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


def parse_face_point(text: Optional[str]) -> Optional[Tuple[float, float]]:
    """'X,Y' pixels (commas or spaces; empty = no choice) -> (x, y), or None (lipsync.job.parse_face_point)."""
    try:
        return job.parse_face_point(text)
    except ValueError:
        raise gr.Error(f"The face point must be 'X,Y', pixels in the reference frame (else frame 0), e.g. "
                       f"'320,180'; got {text!r}", print_exception=False) from None


def plain(exc: Exception) -> str:
    """An engine error as a sentence: its own message (the command line's too), with a capital letter unless it
    starts with a file's name."""
    message = str(exc).strip() or type(exc).__name__
    first = message.split(maxsplit=1)[0]
    if any(mark in first for mark in "./\\_'\""):  # holiday.mp4, /path/to/x, 'name'
        return message
    return message[:1].upper() + message[1:]


def face_problem(exc: NoFaceError, is_photo: bool) -> str:
    """The engine's "no face" error in the words of the face check (a photo, a video, a frame of it)."""
    message = str(exc)
    if "face point" in message:  # the face chosen in the Check image (or the API's face_point)
        return texts.NO_FACE_AT_CLICK
    mouth = "mouth is outside" in message
    frame = re.search(r"reference frame (\d+)", message)
    if frame and not is_photo:
        return (texts.MOUTH_OUT_IN_FRAME if mouth else texts.NO_FACE_IN_FRAME).format(index=frame.group(1))
    if is_photo:
        return texts.MOUTH_OUT_PHOTO if mouth else texts.NO_FACE_PHOTO
    return texts.MOUTH_OUT_VIDEO if mouth else texts.NO_FACE_VIDEO


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
