"""Choosing the face in step 3: a click on a face in the Check image selects it for the job.

The Check image is the reference frame (frame 0 when each frame is its own reference), made smaller for the page
when it is large. Gradio reports a click as (x, y) pixels of the image it was sent; ``source_point`` maps them back
to the frame, where ``JobOptions.face_point`` lives. The faces are the engine's face check's own: the detector's
boxes whose mouth is in the picture, numbered 1.. from left to right.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import gradio as gr
import numpy as np

from lipsync.app import texts
from lipsync.app.messages import note, parse_pads, plain
from lipsync.errors import LipSyncError
from lipsync.job import JobOptions

CHECK_MAX_SIDE = 960  # the Check image is sent at most this many pixels wide or high (the page shows it smaller)


def display_size(width: int, height: int, max_side: int = CHECK_MAX_SIDE) -> Tuple[int, int]:
    """(width, height) of the Check image on the page for a ``width`` x ``height`` frame."""
    scale = min(1.0, max_side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def for_display(image: Optional[np.ndarray], max_side: int = CHECK_MAX_SIDE) -> Optional[np.ndarray]:
    """The Check image (H, W, 3) uint8 at ``display_size`` (unchanged when small enough; None stays None)."""
    if image is None:
        return None
    height, width = image.shape[:2]
    size = display_size(width, height, max_side)
    return image if size == (width, height) else cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def source_point(clicked: Optional[Sequence[float]], frame_size: Tuple[int, int],
                 max_side: int = CHECK_MAX_SIDE) -> Optional[Tuple[float, float]]:
    """A click on the Check image, (x, y) pixels of the image shown (``gr.SelectData.index``), as (x, y) pixels of
    the ``frame_size`` (width, height) frame: the centre of the clicked pixel, scaled. None for a click beside
    the picture (Gradio then gives no index)."""
    if clicked is None or len(clicked) != 2 or any(v is None for v in clicked):
        return None
    width, height = frame_size
    shown_width, shown_height = display_size(width, height, max_side)
    x = min(max((float(clicked[0]) + 0.5) * width / shown_width, 0.0), width - 1.0)
    y = min(max((float(clicked[1]) + 0.5) * height / shown_height, 0.0), height - 1.0)
    return x, y


def frame_faces(engine, path, index: int, detector: str) -> Tuple[np.ndarray, Tuple[int, int]]:
    """The faces the face check numbers in frame ``index``: ((k, 4) boxes x1, y1, x2, y2 from left to right,
    (width, height) of the frame). Loads no model but the detector."""
    from lipsync.media.speaker import frame_choice

    frame, _, usable = engine.frame_faces(path, index, detector)
    boxes = frame_choice(usable)[0] if len(usable) else np.empty((0, 4))
    return boxes, (frame.shape[1], frame.shape[0])


def choice_note(face: Optional[int]) -> dict:
    """The note under the Check image: which face was selected (``face`` 1..), hidden without a choice."""
    return gr.update(value=texts.FACE_SELECTED.format(face=face) if face else "", visible=bool(face))


class FaceChoiceHandlers:
    """The Check image's clicks; mixed into ``lipsync.app.handlers.Handlers`` (uses its ``engine``,
    ``face_frames`` and ``_remember``). The choice is a ``gr.State``: (x, y) pixels of the frame, or None."""

    def check_index(self, path, own_reference, reference_frame) -> int:
        """The frame the Check image shows: the reference frame (clamped to the clip), else frame 0."""
        last = max(self.face_frames(path) - 1, 0)
        return 0 if own_reference else min(max(int(reference_frame or 0), 0), last)

    def faces_in(self, path, index: int, detector: str) -> Tuple[np.ndarray, Tuple[int, int]]:
        """``frame_faces`` of that frame, found once per (file, frame, detector)."""
        return self._remember(("faces", str(path), int(index), detector),
                              lambda: frame_faces(self.engine, path, index, detector))

    def chosen_number(self, path, index: int, detector: str, point) -> Optional[int]:
        """The number (1.., left to right) of the face at ``point`` in the Check image, None when it is on none."""
        from lipsync.media.speaker import face_at_point

        if point is None:
            return None
        row = face_at_point(self.faces_in(path, index, detector)[0], point)
        return None if row is None else row + 1

    def on_face_click(self, video, photo, own_reference, reference_frame, detector, pads, face_point,
                      evt: gr.SelectData = None):
        """A click on the Check image: (Check image, face note, face point, choice note). A click on a face
        selects it (its box turns green); a click beside every face says so in the face note and keeps the
        previous choice."""
        skip = gr.update()
        path = video or photo
        if not path:
            return skip, skip, face_point, skip
        try:
            index = self.check_index(path, own_reference, reference_frame)
            point = source_point(getattr(evt, "index", None), self.faces_in(path, index, detector)[1])
            face = self.chosen_number(path, index, detector, point)
            if face is None:
                return skip, note(texts.NO_FACE_AT_CLICK), face_point, skip
            image, _ = self.engine.face_check(path, index, JobOptions(detector=detector, pads=parse_pads(pads),
                                                                      face_point=point))
        except gr.Error as exc:
            return skip, note(exc.message), face_point, skip
        except LipSyncError as exc:
            return skip, note(plain(exc)), face_point, skip
        return for_display(image), note(""), point, choice_note(face)
