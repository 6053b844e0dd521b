"""Damaged input: a video whose middle is overwritten with zeros is lip-synced with a warning that names the
damaged frames and their time range; with --strict the CLI exits 1 and writes nothing."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_ffmpeg, small_pipeline

from lipsync.engine import LipSyncEngine
from lipsync.job import JobOptions
from lipsync.media.reader import DecodeDamage, decode_damage, iter_frames

CLIP = "pub_video2_retalking_face5.mp4"


def psnr_per_frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12))


@pytest.fixture(scope="module")
def clips(media_dir, tmp_path_factory):
    """(clean, damaged): 1 s of a shared clip at 256 px with a keyframe every 8 frames, and a copy whose middle
    10 % is overwritten with zeros."""
    folder = tmp_path_factory.mktemp("damaged")
    clean, damaged = folder / "clean.mp4", folder / "damaged.mp4"
    run_ffmpeg("-i", str(media_dir / CLIP), "-t", "1", "-an", "-vf", "scale=256:256", "-c:v", "libx264", "-g", "8",
               "-pix_fmt", "yuv420p", str(clean))
    shutil.copyfile(clean, damaged)
    size = damaged.stat().st_size
    with open(damaged, "r+b") as handle:
        handle.seek(size // 2 - size // 20)
        handle.write(bytes(size // 10))
    return clean, damaged


def damaged_frames(clean, damaged) -> np.ndarray:
    """Indices of the frames a viewer sees damaged: below 40 dB against the clean clip."""
    a, b = (np.concatenate(list(iter_frames(path))) for path in (clean, damaged))
    assert len(a) == len(b) == 25
    return np.flatnonzero(psnr_per_frame(a, b) < 40)


@pytest.fixture(scope="module")
def expected(clips) -> str:
    """The warning for the damaged clip, from the frames that differ visibly from the clean one."""
    seen = damaged_frames(*clips)
    assert len(seen) > 0 and np.array_equal(seen, np.arange(seen[0], seen[-1] + 1))
    first, last = int(seen[0]), int(seen[-1])
    return f"frames {first}–{last} could not be decoded cleanly ({first / 25:.1f}–{(last + 1) / 25:.1f} s)"


def test_the_warning_names_exactly_the_frames_that_are_damaged(clips, expected):
    clean, damaged = clips
    assert decode_damage(damaged).describe() == expected  # the lost frames up to the next keyframe, no more
    assert decode_damage(clean).ranges == []


def test_shared_clips_decode_cleanly(media_dir):
    for name in ("pub_video1_retalking_face2.mp4", "pub_video2_retalking_face5.mp4",
                 "pub_video3_sadtalker_katiehill.mp4", "train/train_21_lipnet_bbaf2n.mpg"):
        assert decode_damage(media_dir / name).describe() == "", name


def test_description_of_damaged_frames():
    assert DecodeDamage([(170, 201)], 30.0).describe() == "frames 170–201 could not be decoded cleanly (5.7–6.7 s)"
    assert DecodeDamage([(5, 5), (10, 19)], 25.0).describe() == (
        "frames 5 (0.2–0.2 s) and 10–19 (0.4–0.8 s) could not be decoded cleanly")
    assert DecodeDamage([], 25.0).describe() == ""


def test_job_on_a_damaged_clip_writes_the_output_and_warns(clips, expected, media_dir, tmp_path):
    _, damaged = clips
    out = tmp_path / "out.mp4"
    engine = LipSyncEngine(pipeline=small_pipeline(), detector="opencv")
    report = engine.run(damaged, media_dir / "tts_en.wav", out,
                        JobOptions(num_inference_steps=1, detector="opencv", length_policy="shortest",
                                   side_by_side=False))
    assert out.is_file() and report.frames == 25
    assert report.warnings == [expected]
    assert f"warning: {expected}" in report.summary()
    assert f"| warning | {expected} |" in report.as_markdown()


def test_strict_cli_exits_1_and_leaves_no_file(clips, expected, media_dir, tmp_path):
    _, damaged = clips
    checkpoint = tmp_path / "ckpt"
    small_pipeline().save_pretrained(checkpoint)
    out = tmp_path / "out" / "strict.mp4"
    out.parent.mkdir()
    result = subprocess.run([sys.executable, "-m", "lipsync", "--video", str(damaged), "--audio",
                             str(media_dir / "tts_en.wav"), "--output", str(out), "--checkpoint", str(checkpoint),
                             "--detector", "opencv", "--steps", "1", "--length-policy", "shortest", "--strict",
                             "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: damaged.mp4: {expected}; ")
    assert list(out.parent.iterdir()) == []
