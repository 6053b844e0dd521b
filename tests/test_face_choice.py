"""The right face in every shot (issue 18): cuts between people, jumps at a cut, short shots, the user's choice.

Clips are cut from the shared clips with ffmpeg's concat filter at 192 x 192 (A: pub_video1, B: pub_video2),
shots of 10-14 frames, and run through the engine with the tiny random model: a lip-synced face differs
plainly from the source, an untouched one only by the re-encode.
"""

import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import MEDIA, REPO, concat_shots, need_shared, run_ffmpeg, small_pipeline

from lipsync.engine import LipSyncEngine
from lipsync.errors import NoFaceError
from lipsync.job import JobOptions
from lipsync.media.detectors import get_detector
from lipsync.media.reader import iter_frames
from lipsync.media.source import FrameSource, detect_frames, face_track

A = MEDIA / "pub_video1_retalking_face2.mp4"
B = MEDIA / "pub_video2_retalking_face5.mp4"


@pytest.fixture(scope="module")
def engine():
    return LipSyncEngine(pipeline=small_pipeline(), detector="opencv")


@pytest.fixture(scope="module")
def aba(tmp_path_factory):
    """A (frames 0-9) -> B (10-19) -> A (20-29), with A's speech."""
    need_shared(A)
    return concat_shots(tmp_path_factory.mktemp("aba") / "aba.mp4", [(A, 0, 10, ""), (B, 0, 10, ""), (A, 10, 10, "")],
                        audio=A)


def options(**kwargs) -> JobOptions:
    return JobOptions(num_inference_steps=1, detector="opencv", length_policy="shortest", side_by_side=False,
                      **kwargs)


def decode(path) -> np.ndarray:
    return np.concatenate(list(iter_frames(path)))


def luma_psnr(a, b, mask=None) -> float:
    """PSNR of the grey images (the writer's 4:2:0 colour resampling is not a change of the picture)."""
    a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    b = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64)
    err = (a - b) ** 2 if mask is None else ((a - b) ** 2)[mask]
    mse = err.mean()
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def synced(source: np.ndarray, result: np.ndarray, box) -> bool:
    """Whether the lower half of the face box (the generated mouth) plainly differs from the source."""
    x1, y1, x2, y2 = (int(v) for v in box)
    mask = np.zeros(source.shape[:2], bool)
    mask[(y1 + y2) // 2:y2, x1:x2] = True
    return luma_psnr(source, result, mask) < 30


def test_cut_between_two_people_syncs_the_speaker_and_leaves_the_other_untouched(engine, aba, tmp_path):
    out = tmp_path / "out.mp4"
    report = engine.run(aba, aba, out, options())
    source, result = decode(aba), decode(out)
    shown = source[report.source_index[:len(result)]]
    assert report.shots == 3 and report.shots_without_face == 1
    assert "3 shots, 1 without the chosen face (left untouched)" in report.summary()
    for i in range(len(result)):
        k = int(report.source_index[i])
        if 10 <= k < 20:  # B's shot: untouched
            assert not report.valid[k] and luma_psnr(shown[i], result[i]) >= 45, i
        else:  # A's shots get the mouth
            assert report.valid[k] and synced(shown[i], result[i], report.boxes[k]), i


def test_face_point_on_the_other_person_reverses_the_choice(aba, tmp_path):
    """``--face X,Y`` (a point in the reference frame, 15: B's shot) on the CLI: B is lip-synced, A is not."""
    checkpoint = tmp_path / "ckpt"
    small_pipeline().save_pretrained(checkpoint)
    frame = decode(aba)[15]
    box = get_detector("opencv").detect(frame[None])[0][0]
    x, y = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
    out = tmp_path / "b.mp4"
    done = subprocess.run([sys.executable, "-m", "lipsync", "--video", str(aba), "--audio", str(aba), "--output",
                           str(out), "--checkpoint", str(checkpoint), "--detector", "opencv", "--steps", "1",
                           "--length-policy", "shortest", "--reference-frame", "15", "--face", f"{x},{y}", "--quiet"],
                          check=False, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "3 shots, 2 without the chosen face (left untouched)" in done.stdout
    source, result = decode(aba), decode(out)
    for i in range(len(result)):  # "shortest": output frame i shows source frame i
        if 10 <= i < 20:
            assert luma_psnr(source[i], result[i]) < 40, i
        else:
            assert luma_psnr(source[i], result[i]) >= 45, i


def test_face_point_on_no_face_is_refused_with_the_faces_listed(engine, aba, tmp_path):
    out = tmp_path / "none.mp4"
    with pytest.raises(NoFaceError) as err:
        engine.run(aba, aba, out, options(face_point=(3, 3)))
    message = str(err.value)
    assert "the face point 3,3 is on no face in frame 0" in message and "face 1 at x" in message
    assert "give a point inside the face" in message
    assert not out.exists()


def test_largest_face_per_shot_keeps_the_old_behaviour(aba):
    source = FrameSource(aba)
    detections = detect_frames(source, get_detector("opencv"), source.num_frames)
    speaker = face_track(detections, source)
    largest = face_track(detections, source, face_choice="largest")
    assert speaker.valid.tolist() == [True] * 10 + [False] * 10 + [True] * 10
    assert largest.valid.all() and largest.shots_without_face == []


def test_jump_at_a_cut_changes_nothing_outside_each_frames_own_face(engine, tmp_path):
    """Same person, the picture zoomed 1.33 x and moved at the cut (frame 10): no box is smoothed across it."""
    need_shared(A)
    clip = concat_shots(tmp_path / "jump.mp4", [(A, 0, 10, ""), (A, 10, 10, "crop=144:144:0:30,scale=192:192")],
                        audio=A)
    out = tmp_path / "out.mp4"
    report = engine.run(clip, clip, out, options())
    assert report.shots == 2
    source, result = decode(clip), decode(out)
    detector = get_detector("opencv")
    for i in range(7, 14):  # +-3 frames around the cut
        (x1, y1, x2, y2, _), = detector.detect(source[i][None])[0][:1]
        grow = 0.1 * (x2 - x1)
        outside = np.ones(source.shape[1:3], bool)
        outside[int(max(y1 - grow, 0)):int(y2 + grow), int(max(x1 - grow, 0)):int(x2 + grow)] = False
        assert report.valid[i] and luma_psnr(source[i], result[i], outside) >= 40, i


def test_short_opening_shot_of_the_speaker_gets_its_mouth(engine, tmp_path):
    """12 frames of A, smaller and off-centre, then 14 of A framed as usual: the opening shot is shorter than the
    tracker's 25-frame minimum for a second face, but it is the same person."""
    need_shared(A)
    clip = concat_shots(tmp_path / "short.mp4", [(A, 0, 12, "scale=128:128,pad=192:192:50:40"), (A, 12, 14, "")],
                        audio=A)
    out = tmp_path / "out.mp4"
    report = engine.run(clip, clip, out, options())
    source, result = decode(clip), decode(out)
    assert report.shots == 2 and report.valid[:12].all()
    for i in range(12):
        assert synced(source[i], result[i], report.boxes[i]), i


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    """A talking (left, with its own sound) beside B frozen on one frame (right, the larger face)."""
    need_shared(A)
    path = tmp_path_factory.mktemp("two") / "two.mp4"
    graph = ("[0:v]trim=end_frame=40,setpts=PTS-STARTPTS,scale=160:160[a];"
             "[1:v]trim=end_frame=1,scale=160:160,loop=loop=39:size=1:start=0,setpts=N/25/TB[b];"
             "[a][b]hstack=inputs=2,format=yuv420p[v]")
    run_ffmpeg("-i", str(A), "-i", str(B), "-filter_complex", graph, "-map", "[v]", "-map", "0:a", "-t", "1.6",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", "12", "-c:a", "aac", str(path))
    return path


def test_the_face_that_talks_wins_over_a_larger_still_one(two_faces):
    source = FrameSource(two_faces)
    detections = detect_frames(source, get_detector("opencv"), source.num_frames)
    speaker = face_track(detections, source)
    largest = face_track(detections, source, face_choice="largest")
    assert speaker.valid.all() and (speaker.boxes[:, 2] <= 160).all()  # A, on the left
    assert largest.valid.all() and (largest.boxes[:, 0] >= 160).all()  # B, on the right


def test_check_image_numbers_the_faces_and_marks_the_one_used(engine, two_faces):
    def green(image, x1, x2):
        part = image[:, x1:x2].astype(int)
        return int(((part[..., 1] > 200) & (part[..., 0] < 60) & (part[..., 2] < 60)).sum())

    image, found = engine.face_check(two_faces, 0, JobOptions(detector="opencv"))
    assert found and green(image, 160, 320) > 100 and green(image, 0, 160) == 0  # the larger face, on the right
    box = get_detector("opencv").detect(decode(two_faces)[:1])[0]
    left = box[np.argmin(box[:, 0])]
    point = ((left[0] + left[2]) / 2, (left[1] + left[3]) / 2)
    image, found = engine.face_check(two_faces, 0, JobOptions(detector="opencv", face_point=point))
    assert found and green(image, 0, 160) > 100 and green(image, 160, 320) == 0
    image, found = engine.face_check(two_faces, 0, JobOptions(detector="opencv", face_point=(2, 2)))
    assert not found and green(image, 0, 320) == 0
