"""False faces: a logo that BlazeFace takes for a face gets no mouth (the job ends with "no face"), while the
real faces of the shared clips all pass the FaceMesh check, which runs once per track, not on every frame."""

import cv2
import numpy as np
import pytest
from conftest import small_pipeline

from lipsync.engine import LipSyncEngine
from lipsync.errors import NoFaceError
from lipsync.job import JobOptions
from lipsync.media.reader import iter_frames
from lipsync.media.writer import VideoWriter

pytest.importorskip("mediapipe")

from lipsync.media.detectors import MediaPipeDetector, get_detector  # noqa: E402
from lipsync.media.face_check import FaceMeshCheck  # noqa: E402

REAL_CLIPS = ["pub_video1_retalking_face2.mp4", "pub_video2_retalking_face5.mp4", "pub_video3_sadtalker_katiehill.mp4",
              "train/train_13_spectre_M003_level_1_disgusted_015.mp4", "train/train_21_lipnet_bbaf2n.mpg",
              "train/train_32_real3dportrait_May_5s.mp4"]


def logo_frames(count: int = 20) -> np.ndarray:
    """(count, 360, 480, 3) uint8 RGB: white "CC" letters on a blue disc over a grey-blue wall, drifting slowly."""
    frames = []
    for k in range(count):
        frame = np.full((360, 480, 3), (90, 120, 160), np.uint8)
        centre = (230 + k, 180)
        cv2.circle(frame, centre, 60, (30, 90, 200), -1, cv2.LINE_AA)
        (width, height), _ = cv2.getTextSize("CC", cv2.FONT_HERSHEY_SIMPLEX, 1.5, 4)
        cv2.putText(frame, "CC", (centre[0] - width // 2, centre[1] + height // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.5,
                    (255, 255, 255), 4, cv2.LINE_AA)
        frames.append(frame)
    return np.stack(frames)


@pytest.fixture(scope="module")
def detector():
    return get_detector("mediapipe")


def test_blazeface_alone_takes_the_logo_for_a_face():
    # without this, the next test could not fail
    unchecked = MediaPipeDetector(verify=False).detect(logo_frames())
    assert sum(len(d) > 0 for d in unchecked) >= 15


def test_a_logo_gets_no_mouth_and_the_job_says_no_face(detector, media_dir, tmp_path):
    frames = logo_frames()
    assert all(len(d) == 0 for d in detector.detect(frames))
    video = tmp_path / "logo.mp4"
    with VideoWriter(video, 25, (480, 360)) as writer:
        writer.write(frames)
    out = tmp_path / "out.mp4"
    engine = LipSyncEngine(pipeline=small_pipeline(), detector="mediapipe")
    with pytest.raises(NoFaceError, match="no face was found in any frame of logo.mp4"):
        engine.run(video, media_dir / "tts_en.wav", out,
                   JobOptions(num_inference_steps=1, detector="mediapipe", length_policy="shortest"))
    assert not out.exists()


@pytest.mark.parametrize("name", REAL_CLIPS)
def test_real_faces_pass_the_check_in_every_frame(name, media_dir):
    frames = next(iter_frames(media_dir / name, chunk_size=25, count=25))
    unchecked = MediaPipeDetector(verify=False).detect(frames)
    check = FaceMeshCheck()
    assert all(len(d) for d in unchecked)
    assert all(check.plausible(frame, d[0]) for frame, d in zip(frames, unchecked))


def test_the_check_runs_once_per_track_and_keeps_every_face(media_dir):
    detector = MediaPipeDetector()
    frames = next(iter_frames(media_dir / "pub_video2_retalking_face5.mp4", chunk_size=25, count=25))
    found = detector.detect(frames[:10]) + detector.detect(frames[10:])  # verdicts carry across calls
    assert all(len(d) == 1 for d in found)
    assert detector._check.checks == 1  # the first frame; the next 24 reuse its verdict
    # another picture: checked again, not inherited, and turned away
    assert all(len(d) == 0 for d in detector.detect(logo_frames(3)))
    assert detector._check.checks > 1
