"""Hard cuts found while decoding (lipsync.media.shots) and who a face is (lipsync.media.identity), on real clips."""

import numpy as np
import pytest
from conftest import MEDIA, concat_shots, need_shared

from lipsync.media.detectors import get_detector
from lipsync.media.identity import SAME_PERSON, descriptor_distance, face_descriptors
from lipsync.media.reader import iter_frames
from lipsync.media.shots import ChangeMeter, find_cuts, shot_bounds
from lipsync.media.source import FrameSource, detect_frames

A = MEDIA / "pub_video1_retalking_face2.mp4"
B = MEDIA / "pub_video2_retalking_face5.mp4"
C = MEDIA / "pub_video3_sadtalker_katiehill.mp4"


def cuts_of(path, start=0, count=None) -> list:
    meter = ChangeMeter()
    for chunk in iter_frames(path, 32, start=start, count=count):
        meter.add(chunk)
    return find_cuts(np.array(meter.changes)).tolist()


@pytest.mark.parametrize("clip", [A, B, C])
def test_no_cut_in_the_shared_clips_without_cuts(clip):
    assert cuts_of(need_shared(clip)) == []


def test_cuts_are_found_at_the_concat_points(tmp_path):
    need_shared(A)
    people = concat_shots(tmp_path / "abc.mp4", [(A, 0, 10, ""), (B, 0, 12, ""), (C, 0, 8, ""), (A, 10, 10, "")])
    assert cuts_of(people) == [10, 22, 30]
    zoom = concat_shots(tmp_path / "zoom.mp4", [(A, 0, 10, ""), (A, 10, 10, "crop=150:150:21:21,scale=192:192")])
    assert cuts_of(zoom) == [10]  # the same picture, 1.28 x larger from one frame to the next
    moved = concat_shots(tmp_path / "moved.mp4", [(A, 0, 12, ""), (A, 12, 10, "scale=128:128,pad=192:192:50:40")])
    assert cuts_of(moved) == [12]


def test_a_jump_cut_in_real_footage_is_found():
    """train_02 (LatentSync's demo 3) cuts from frame 270 (eyes closed, hands folded) to 271 (talking, hands up)."""
    clip = need_shared(MEDIA / "train" / "train_02_latentsync_demo3_video.mp4")
    if not clip.is_file():
        pytest.skip(f"{clip} is absent")
    assert cuts_of(clip, start=250, count=40) == [21]


def test_clip_detections_carry_the_shots(tmp_path):
    need_shared(A)
    clip = concat_shots(tmp_path / "ab.mp4", [(A, 0, 10, ""), (B, 0, 10, "")])
    source = FrameSource(clip)
    detections = detect_frames(source, get_detector("opencv"), source.num_frames, chunk_frames=8)  # a cut mid-chunk
    assert detections.shots == [(0, 10), (10, 20)]
    assert detections[5:].shots == [(0, 5), (5, 15)]  # a slice keeps what was measured
    assert all(len(d) == len(k) for d, k in zip(detections, detections.descriptors))


def test_find_cuts_wants_a_lone_spike():
    rng = np.random.default_rng(0)
    steady = 1.0 + 0.3 * rng.random(60)
    spiked = steady.copy()
    spiked[[20, 32]] = 9.0  # two cuts 12 frames apart: both are found
    assert find_cuts(spiked).tolist() == [20, 32]
    busy = 12.0 + 6.0 * rng.random(60)  # a camera pan: every frame changes a lot, none stands out
    assert find_cuts(busy).tolist() == []
    busy[30] = 55.0  # a cut in a busy scene (cuts between the shared clips change by 54-61)
    assert find_cuts(busy).tolist() == [30]
    assert shot_bounds(np.array([20, 32]), 60) == [(0, 20), (20, 32), (32, 60)]


def test_the_same_person_framed_anew_is_one_person_and_two_people_are_two():
    need_shared(A)
    detector = get_detector("opencv")

    def descriptor(path, first, crop=None):
        frames = next(iter_frames(path, 30, start=first))[::3]
        if crop is not None:
            y, x, side = crop
            frames = np.stack([f[y:y + side, x:x + side] for f in frames])
        rows = [face_descriptors(f, d[:1]) for f, d in zip(frames, detector.detect(frames)) if len(d)]
        return np.concatenate(rows).mean(axis=0)

    a = descriptor(A, 0)
    assert descriptor_distance(a, descriptor(A, 60, crop=(80, 120, 600))) < SAME_PERSON  # later, closer
    for other in (B, C):
        assert descriptor_distance(a, descriptor(other, 0)) > SAME_PERSON
    assert descriptor_distance(descriptor(B, 0), descriptor(C, 0)) > SAME_PERSON
