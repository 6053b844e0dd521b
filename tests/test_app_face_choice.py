"""Choosing the face in the app (issue 18): a click on a face in the Check image selects it (its box turns
green) and the job lip-syncs that face; a click beside every face says so and keeps the choice.

The two-face photo is assets/example_face.png beside a smaller copy of itself, so that the face used without a
choice (the largest) is the left one, and a click on the right one changes what the job does.
"""

import types

import cv2
import gradio as gr
import numpy as np
import pytest
from conftest import REPO

from lipsync.app import texts
from lipsync.app.face_choice import display_size, for_display, source_point
from lipsync.app.handlers import Handlers
from lipsync.app.messages import face_problem, parse_face_point
from lipsync.engine import LipSyncEngine
from lipsync.errors import NoFaceError
from lipsync.media.speaker import frame_choice

OFF = "0,0,0,0"
LEFT_FACE, RIGHT_FACE = (128, 128), (384, 128)  # the faces' centres in the two-face photo (512 x 256)


def two_face_photo(path):
    """example_face.png (256 px, its face about 100 px wide) beside the same face at 200 px on a 256 px tile:
    a 512 x 256 photo, the larger face on the left."""
    face = cv2.imread(str(REPO / "assets" / "example_face.png"))
    small = cv2.resize(face, (200, 200), interpolation=cv2.INTER_AREA)
    right = cv2.copyMakeBorder(small, 28, 28, 28, 28, cv2.BORDER_REPLICATE)
    cv2.imwrite(str(path), np.concatenate([face, right], axis=1))
    return path


def green(image, x1, x2) -> int:
    """Pure green pixels (the box of the face used) between columns x1 and x2."""
    part = np.asarray(image)[:, x1:x2].astype(int)
    return int(((part[..., 1] > 200) & (part[..., 0] < 60) & (part[..., 2] < 60)).sum())


def click(x, y):
    return types.SimpleNamespace(index=[x, y])  # what gr.SelectData carries for a click on an image


@pytest.fixture
def photo(tmp_path):
    return str(two_face_photo(tmp_path / "two_faces.png"))


@pytest.fixture
def h(tmp_path):
    """The page's handlers over an engine that loads no model (the Check image needs none)."""
    return Handlers(LipSyncEngine(checkpoint=tmp_path / "no-weights", device="cpu", detector="opencv"),
                    max_seconds=30)


def test_a_click_on_the_shown_image_is_a_point_of_the_frame():
    # a large frame is sent smaller; a click there is scaled back to the frame's pixels (the pixel's centre)
    assert display_size(1920, 1080) == (960, 540) and display_size(524, 524) == (524, 524)
    assert for_display(np.zeros((1080, 1920, 3), np.uint8)).shape == (540, 960, 3)
    assert for_display(np.zeros((256, 512, 3), np.uint8)).shape == (256, 512, 3)
    assert source_point([480, 270], (1920, 1080)) == (961.0, 541.0)
    assert source_point([959, 539], (1920, 1080)) == (1919.0, 1079.0)  # the last pixel stays in the frame
    assert source_point([100, 50], (524, 524)) == (100.5, 50.5)  # shown as it is: the same pixel
    assert source_point(None, (524, 524)) is None  # a click beside the picture


def test_clicking_the_second_face_selects_it_and_a_miss_keeps_the_choice(h, photo):
    # on upload: the larger (left) face is used, its box green, no choice yet
    out = h.on_face(None, photo, True, 0, "opencv", OFF)
    image, point, note = out[1], out[5], out[6]
    assert green(image, 0, 256) > 100 and green(image, 256, 512) == 0
    assert point is None and not note["visible"]
    # a click on the right face: its box turns green, the left one does not, and the page says which
    image, face_note, point, note = h.on_face_click(None, photo, True, 0, "opencv", OFF, None, click(*RIGHT_FACE))
    assert green(image, 256, 512) > 100 and green(image, 0, 256) == 0
    assert note["visible"] and note["value"] == "Face 2 selected; click another face to change."
    assert not face_note["visible"]
    assert 256 < point[0] < 512 and 0 < point[1] < 256
    # a click on no face: said in the face note; the choice (and the image) stay
    for missed in (click(5, 250), types.SimpleNamespace(index=None)):  # the background; beside the picture
        image, face_note, kept, note = h.on_face_click(None, photo, True, 0, "opencv", OFF, point, missed)
        assert face_note["visible"] and face_note["value"] == f"⚠️ {texts.NO_FACE_AT_CLICK}"
        assert kept == point and image == gr.update() and note == gr.update()
    # the job gets the point
    assert h.make_options(face_point=point).face_point == point
    # other padding keeps the choice; another frame (or a new photo) starts without one
    image, _, kept, note = h.on_reference(None, photo, True, 0, "opencv", "0,10,0,0", point)
    assert kept == point and note["value"].startswith("Face 2 selected")
    assert green(image, 256, 512) > 100 and green(image, 0, 256) == 0
    image, _, cleared, note = h.on_reference(None, photo, True, 0, "opencv", OFF)
    assert cleared is None and not note["visible"] and green(image, 0, 256) > 100
    assert h.on_face(None, photo, True, 0, "opencv", OFF)[5] is None
    # the left face can be chosen back
    _, _, point, note = h.on_face_click(None, photo, True, 0, "opencv", OFF, point, click(*LEFT_FACE))
    assert point[0] < 256 and note["value"].startswith("Face 1 selected")


def test_the_check_image_says_how_to_choose_in_the_apps_words():
    boxes = np.array([[345, 88, 423, 162], [79, 75, 182, 173]], float)
    note = frame_choice(boxes)[2]
    assert note == "face 1 of 2 is used (largest); click a face to choose it"  # not the command line's --face


def test_face_point_words():
    assert parse_face_point("") is None and parse_face_point(None) is None
    assert parse_face_point("320,180") == (320.0, 180.0) and parse_face_point("320 180.5") == (320.0, 180.5)
    for bad in ("1", "a,b", "-1,2", "1,2,3"):
        with pytest.raises(gr.Error, match="X,Y"):
            parse_face_point(bad)
    # a job whose point is on no face says it in the words of the click
    gone = NoFaceError("the face point 2,2 is on no face in frame 0 (the faces there: face 1 at x 79-182, "
                       "y 75-173); give a point inside the face to lip-sync (the Check image numbers the faces)")
    assert face_problem(gone, is_photo=True) == face_problem(gone, is_photo=False) == texts.NO_FACE_AT_CLICK
