"""Tests for lipsync.faces: detectors on real clips, tracking, gaps, smoothing, crop, paste."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from lipsync.errors import CheckpointMismatchError, NoFaceError, WeightsUnavailableError
from lipsync.faces import (
    DETECTORS,
    FaceConfig,
    FaceDetector,
    OpenCVDetector,
    S3FDDetector,
    crop_faces,
    face_boxes,
    fill_missing,
    get_detector,
    pad_boxes,
    paste_faces,
    select_main_face,
    smooth_boxes,
)

MEDIA = Path("/work/shared/media")
CLIPS = {
    "pub_video1_retalking_face2.mp4": (844, 844),
    "pub_video2_retalking_face5.mp4": (524, 524),
    "pub_video3_sadtalker_katiehill.mp4": (512, 512),
}
needs_media = pytest.mark.skipif(not MEDIA.is_dir(), reason=f"{MEDIA} is absent")


def read_frames(name: str, count: int) -> np.ndarray:
    """First ``count`` frames of a shared clip as (N, H, W, 3) uint8 RGB, decoded by ffmpeg."""
    height, width = CLIPS[name]
    raw = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(MEDIA / name), "-frames:v", str(count),
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True, capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


# ----------------------------------------------------------------------------- detectors


def test_get_detector_by_name_and_unknown_name():
    assert set(DETECTORS) == {"s3fd", "opencv", "mediapipe"}
    detector = get_detector("OpenCV")
    assert isinstance(detector, OpenCVDetector) and isinstance(detector, FaceDetector)
    with pytest.raises(ValueError, match="choose one of s3fd, opencv, mediapipe"):
        get_detector("retinaface")


@needs_media
@pytest.mark.parametrize("name", sorted(CLIPS))
def test_opencv_detector_finds_the_face_in_real_clips(name):
    frames = read_frames(name, 25)
    height, width = frames.shape[1:3]
    detections = OpenCVDetector().detect(frames)
    assert len(detections) == len(frames)
    assert all(d.ndim == 2 and d.shape[1] == 5 for d in detections)
    boxes, found = select_main_face(detections)
    assert found.mean() >= 0.9, f"face found in only {found.sum()} of {len(found)} frames"
    b = boxes[found]
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 2] <= width).all() and (b[:, 3] <= height).all()
    box_width = (b[:, 2] - b[:, 0]) / width
    assert ((box_width > 0.2) & (box_width < 0.9)).all(), box_width
    # the box holds a face centred in these head-and-shoulders clips, not a corner of the map
    centre_x = (b[:, 0] + b[:, 2]) / 2 / width
    assert ((centre_x > 0.3) & (centre_x < 0.7)).all(), centre_x
    # the full chain gives integer boxes for every frame (detections reused, not recomputed)
    class Replay:
        def detect(self, frames):
            return detections

    smoothed, valid = face_boxes(frames, Replay(), FaceConfig(detector="opencv"), source=name)
    assert smoothed.dtype == np.int64 and smoothed.shape == (25, 4) and valid.all()


@pytest.fixture(scope="module")
def s3fd_weights(tmp_path_factory):
    """A randomly initialised S3FD saved in face-alignment's layout (a plain state dict)."""
    torch = pytest.importorskip("torch")
    net_s3fd = pytest.importorskip("face_alignment.detection.sfd.net_s3fd")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("s3fd") / "s3fd-random.pth"
    torch.save(net_s3fd.s3fd().state_dict(), path)
    return path


@needs_media
def test_s3fd_runs_in_batches_and_maps_boxes_back_to_the_frame(s3fd_weights):
    frames = read_frames("pub_video1_retalking_face2.mp4", 3)  # 844 x 844
    detector = get_detector("s3fd", path_to_detector=s3fd_weights, batch_size=2, max_size=160)
    detections = detector.detect(frames)
    assert len(detections) == 3
    for dets in detections:
        assert isinstance(dets, np.ndarray) and dets.ndim == 2 and dets.shape[1] == 5
        assert (dets[:, :4] >= 0).all() and (dets[:, [0, 2]] <= 844).all() and (dets[:, [1, 3]] <= 844).all()
        assert (dets[:, 4] >= 0.5).all() and (np.diff(dets[:, 4]) <= 0).all()  # threshold, sorted
    # the same detector on frames we shrink ourselves, with boxes scaled by hand, agrees
    small = np.stack([cv2.resize(f, (160, 160), interpolation=cv2.INTER_AREA) for f in frames[:1]])
    by_hand = detector.detect(small)[0]
    by_hand[:, :4] *= 844 / 160
    assert len(by_hand) == len(detections[0])
    np.testing.assert_allclose(detections[0], by_hand, rtol=1e-6, atol=1e-6)


def test_s3fd_without_weights_offline_raises_weights_unavailable(tmp_path, monkeypatch):
    pytest.importorskip("face_alignment")
    # an empty hub cache and a proxy that refuses every connection: no download can succeed
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5)
    try:
        with pytest.raises(WeightsUnavailableError) as info:
            S3FDDetector()
    finally:
        socket.setdefaulttimeout(old_timeout)
    message = str(info.value)
    assert message.startswith("could not download the S3FD face-detector weights (")
    assert "connect to the internet once, or choose the 'opencv' detector" in message


def test_s3fd_with_a_missing_weights_file_says_so(tmp_path):
    pytest.importorskip("face_alignment")
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsUnavailableError, match="could not read the S3FD weights file .*nope.pth"):
        S3FDDetector(path_to_detector=missing)


def test_s3fd_with_a_foreign_state_dict_is_a_checkpoint_mismatch(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("face_alignment")
    path = tmp_path / "not-s3fd.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointMismatchError, match="is not an S3FD state dict"):
        S3FDDetector(path_to_detector=path)


# ----------------------------------------------------------------------------- tracking


def det(x1, y1, x2, y2, score=1.0):
    return [x1, y1, x2, y2, score]


def test_main_face_is_largest_then_followed_by_proximity():
    detections = []
    for i in range(10):
        mover = det(100 + 10 * i, 100, 200 + 10 * i, 200)  # 100 px, moves right
        other = det(400, 50, 400 + 80 + 10 * i, 50 + 80 + 10 * i)  # 80 px, grows to 170 px
        faces = [other, mover] if i % 2 else [mover, other]  # order must not matter
        detections.append(np.array(faces, dtype=float))
    boxes, found = select_main_face(detections)
    assert found.all()
    expected = np.array([[100 + 10 * i, 100, 200 + 10 * i, 200] for i in range(10)], dtype=float)
    np.testing.assert_array_equal(boxes, expected)  # followed even once the other is larger


def test_main_face_missing_frames_and_reacquire():
    a = np.array([det(0, 0, 100, 100)], dtype=float)
    far = np.array([det(500, 500, 560, 560)], dtype=float)
    empty = np.zeros((0, 5))
    detections = [a, empty, far, a] + [far] * 4
    boxes, found = select_main_face(detections, reacquire_after=3)
    # frame 1: nothing; frame 2: only a far-away face, not the main one; frame 3: back
    assert found.tolist() == [True, False, False, True, False, False, False, True]
    assert np.isnan(boxes[1]).all() and np.isnan(boxes[2]).all()
    np.testing.assert_array_equal(boxes[7], far[0, :4])  # lost for 3 frames: take the largest


def test_fill_missing_interpolates_short_gaps_only():
    n = 30
    boxes = np.tile(np.array([10.0, 20.0, 110.0, 140.0]), (n, 1))
    boxes[:, 0] += np.arange(n)  # x1 moves 1 px per frame
    found = np.ones(n, dtype=bool)
    found[[0, 1]] = False  # leading
    found[5:8] = False  # short gap, 3 frames
    found[12:26] = False  # long gap, 14 frames
    found[-1] = False  # trailing
    garbage = boxes.copy()
    garbage[~found] = np.nan
    filled, valid = fill_missing(garbage, found, max_gap=12)
    assert valid[5:8].all()
    np.testing.assert_allclose(filled[5:8], boxes[5:8])  # linear motion is recovered exactly
    assert not valid[[0, 1, 29]].any() and not valid[12:26].any()
    assert np.isfinite(filled).all()  # placeholders keep arrays usable
    np.testing.assert_array_equal(filled[0], boxes[2])  # nearest valid box
    # the same 14-frame gap is bridged with a larger max_gap
    _, valid = fill_missing(garbage, found, max_gap=14)
    assert valid[12:26].all()


def test_fill_missing_without_any_face_raises():
    with pytest.raises(NoFaceError) as info:
        fill_missing(np.full((5, 4), np.nan), np.zeros(5, dtype=bool), source="clip.mp4")
    assert str(info.value) == (
        "no face was found in any frame of clip.mp4; use a clip where the face is visible and "
        "frontal, or try the other detector"
    )


# ----------------------------------------------------------------------------- smoothing


def test_smooth_boxes_official_forward_looking_rule():
    x = [0, 10, 20, 30, 40, 50, 60]
    boxes = np.array([[v, v + 1, v + 2, 7] for v in x])
    # sequential, in place, int truncation; the last 4 use the final 5 (some already smoothed):
    # i=0: mean(0,10,20,30,40)=20; i=1: mean(10..50)=30; i=2: mean(20..60)=40
    # i=3: window rows 2..6 = (40,30,40,50,60) -> 44; i=4: (40,44,40,50,60) -> 46 (46.8 truncated)
    # i=5: (40,44,46,50,60) -> 48; i=6: (40,44,46,48,60) -> 47 (47.6 truncated)
    expected_x1 = [20, 30, 40, 44, 46, 48, 47]
    out = smooth_boxes(boxes, window=5)
    assert out.dtype == np.int64
    assert out[:, 0].tolist() == expected_x1
    assert out[:, 3].tolist() == [7] * 7
    assert boxes[0, 0] == 0  # input not modified


def test_smooth_boxes_only_within_valid_runs():
    boxes = np.array([[v, 0, v + 10, 10] for v in [0, 10, 20, 1000, 30, 40]])
    valid = np.array([True, True, True, False, True, True])
    out = smooth_boxes(boxes, window=5, valid=valid)
    assert out[3].tolist() == [1000, 0, 1010, 10]  # invalid frame unchanged, not averaged in
    # run 0..2 is shorter than the window, so each mean covers the whole (partly smoothed) run:
    # mean(0,10,20)=10; mean(10,10,20)=13.3 -> 13; mean(10,13,20)=14.3 -> 14
    assert out[:3, 0].tolist() == [10, 13, 14]
    assert out[4:, 0].tolist() == [35, 37]
    centred = smooth_boxes(boxes.astype(float), window=3, official=False, valid=valid)
    assert centred[:3, 0].tolist() == [5.0, 10.0, 15.0]


def test_pad_boxes_expands_and_clips():
    boxes = np.array([[5, 10, 50, 90], [20, 30, 60, 70]])
    out = pad_boxes(boxes, (4, 10, 8, 2), frame_shape=(2, 96, 128, 3))
    assert out.tolist() == [[0, 6, 52, 96], [12, 26, 62, 80]]
    assert boxes[0].tolist() == [5, 10, 50, 90]


# ----------------------------------------------------------------------------- crop / paste


def random_frames(n=3, h=120, w=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_crop_faces_is_the_official_resize():
    frames = random_frames()
    boxes = np.array([[10, 20, 90, 110], [0, 0, 160, 120], [30.9, 5.2, 71.7, 47.9]])
    faces = crop_faces(frames, boxes)
    assert faces.shape == (3, 128, 128, 3) and faces.dtype == np.uint8
    np.testing.assert_array_equal(faces[0], cv2.resize(frames[0, 20:110, 10:90], (128, 128)))
    np.testing.assert_array_equal(faces[2], cv2.resize(frames[2, 5:47, 30:71], (128, 128)))
    assert crop_faces(frames, boxes, size=96).shape == (3, 96, 96, 3)


def test_paste_mouth_keeps_source_outside_the_lower_half():
    frames = random_frames(n=3, h=240, w=320)
    boxes = np.array([[40, 30, 200, 230], [100, 50, 201, 151], [0, 0, 64, 64]])
    generated = np.full((3, 128, 128, 3), 200, dtype=np.uint8)
    generated[:, 64:] = np.array([10, 250, 90], dtype=np.uint8)  # distinctive mouth colour
    valid = np.array([True, True, False])
    before = frames.copy()
    out = paste_faces(frames, boxes, generated, valid, mode="mouth")
    np.testing.assert_array_equal(frames, before)  # input untouched
    np.testing.assert_array_equal(out[2], frames[2])  # invalid frame untouched
    for i in (0, 1):
        x1, y1, x2, y2 = boxes[i]
        mid = y1 + (y2 - y1 + 1) // 2  # first row of the lower half
        changed = np.any(out[i] != frames[i], axis=-1)
        inside = np.zeros_like(changed)
        inside[mid:y2, x1:x2] = True
        assert not changed[~inside].any(), "pixels outside the lower half of the box changed"
        assert changed[inside].mean() > 0.5
        # the centre of the lower half is the generated crop, resized to the box
        h, w = y2 - y1, x2 - x1
        cy, cx = (mid + y2) // 2, (x1 + x2) // 2
        resized = cv2.resize(generated[i], (w, h))
        np.testing.assert_allclose(out[i, cy - 3 : cy + 3, cx - 3 : cx + 3],
                                   resized[cy - y1 - 3 : cy - y1 + 3, cx - x1 - 3 : cx - x1 + 3], atol=1)
        # the seam is feathered: right at the midline the source still dominates
        seam = out[i, mid, x1 + w // 2].astype(int)
        assert np.abs(seam - frames[i, mid, x1 + w // 2]).max() < np.abs(seam - [10, 250, 90]).max()


def test_paste_box_replaces_the_whole_box():
    frames = random_frames(n=2)
    boxes = np.array([[10, 20, 90, 110], [30, 10, 70, 60]])
    generated = random_frames(n=2, h=128, w=128, seed=1)
    out = paste_faces(frames, boxes, generated, valid=np.array([True, False]), mode="box")
    np.testing.assert_array_equal(out[0, 20:110, 10:90], cv2.resize(generated[0], (80, 90)))
    mask = np.ones(frames.shape[1:3], dtype=bool)
    mask[20:110, 10:90] = False
    np.testing.assert_array_equal(out[0][mask], frames[0][mask])
    np.testing.assert_array_equal(out[1], frames[1])


def test_crop_then_paste_identity_round_trip_changes_little():
    frames = random_frames(n=1, h=256, w=256)
    frames = cv2.GaussianBlur(frames[0], (0, 0), 6)[None]  # smooth image: resizing is near-lossless
    boxes = np.array([[50, 40, 178, 168]])  # 128 px box: crop is an exact copy
    out = paste_faces(frames, boxes, crop_faces(frames, boxes), mode="mouth")
    assert np.abs(out.astype(int) - frames).max() <= 1
