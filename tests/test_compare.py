"""Wav2Lip comparison and SyncNet scores: 3-panel side-by-side on the real clips, untouched pixels outside the
Wav2Lip box, a user's Wav2Lip result, finite LSE-D / LSE-C, and the CLI (random weights, saved to tmp files)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, small_pipeline

from lipsync.media import audio as audio_io
from lipsync.scoring import compare
from lipsync.job import JobOptions
from lipsync.engine import LipSyncEngine
from lipsync.scoring.syncnet import SyncNetV2, crop_syncnet_faces
from lipsync.media.writer import VideoWriter
from lipsync.media.sidebyside import comparison_layout
from lipsync.media.probe import count_frames, probe_duration, probe_video
from lipsync.media.reader import iter_frames, read_frames
from lipsync.scoring.wav2lip import WAV2LIP_HUB_REPO, Wav2LipModel

CLIPS = ["pub_video1_retalking_face2.mp4", "pub_video2_retalking_face5.mp4", "pub_video3_sadtalker_katiehill.mp4"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random Wav2Lip and SyncNet v2 weights in the released layouts (Wav2Lip: {"state_dict": module.*})."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    wav2lip = {"module." + k: v for k, v in Wav2LipModel().state_dict().items()}
    torch.save({"state_dict": wav2lip}, folder / "wav2lip_gan.pth")
    torch.save(SyncNetV2().state_dict(), folder / "syncnet_v2.model")
    return folder / "wav2lip_gan.pth", folder / "syncnet_v2.model"


@pytest.fixture(scope="module")
def speech(media_dir, tmp_path_factory):
    """The first 2 s of tts_en.wav."""
    path = tmp_path_factory.mktemp("audio") / "speech_2s.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(media_dir / "tts_en.wav"), "-t", "2",
                    str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def engine():
    return LipSyncEngine(pipeline=small_pipeline(), detector="opencv")


def options(**overrides):
    base = dict(num_inference_steps=1, detector="opencv", length_policy="shortest", batch_size=32, chunk_frames=32)
    return JobOptions(**{**base, **overrides})


def outside(mask_box, shape):
    """(H, W) bool: True outside the x1,y1,x2,y2 box."""
    mask = np.ones(shape[:2], bool)
    x1, y1, x2, y2 = (int(v) for v in mask_box)
    mask[y1:y2, x1:x2] = False
    return mask


# ----------------------------------------------------------------------------------------------------
# End to end on the real clips
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", CLIPS)
def test_wav2lip_panel_on_real_clips(engine, media_dir, speech, weights, tmp_path, clip):
    wav2lip_ckpt, syncnet_ckpt = weights
    score = clip == CLIPS[1]  # one clip also scores (SyncNet is the slow part on a CPU)
    out = tmp_path / "out.mp4"
    report = engine.run(media_dir / clip, speech, out,
                        options(compare_wav2lip=True, wav2lip_checkpoint=str(wav2lip_ckpt), score=score,
                                syncnet_checkpoint=str(syncnet_ckpt)))

    # 1. The 3-panel side-by-side: 3 × the source width, the same frames and duration as the output
    src = probe_video(media_dir / clip)
    sbs = report.side_by_side
    assert sbs == tmp_path / "out_side_by_side.mp4" and sbs.is_file()
    info = probe_video(sbs)
    layout = comparison_layout((src.width, src.height), 3)
    assert (info.width, info.height) == layout.size == (3 * src.width, src.height + layout.caption_height)
    windows = audio_io.num_windows(audio_io.melspectrogram(audio_io.load_audio(speech)).shape[1], src.fps)
    assert count_frames(sbs) == count_frames(out) == report.frames == min(src.num_frames, windows)
    assert abs(probe_duration(sbs) - report.duration) < 0.1 and info.fps == src.fps
    assert report.seconds["wav2lip"] > 0

    # 2. Outside the Wav2Lip box the middle panel is the source; inside, Wav2Lip changed the face
    k = int(np.flatnonzero(report.valid[report.source_index])[0])
    frame = read_frames(sbs, [k])[0]
    w = src.width
    frame = frame[:src.height]  # the pictures; the caption band lies below
    left, middle = frame[:, :w].astype(float), frame[:, w:2 * w].astype(float)
    box = compare.wav2lip_boxes(report.boxes[report.source_index[k]][None], (src.height, w, 3))[0]
    keep = outside(box, middle.shape)
    assert np.abs(middle - left)[keep].mean() < 1.5  # H.264 noise only
    x1, y1, x2, y2 = box
    assert np.abs(middle - left)[y1 + 4:y2 - 4, x1 + 4:x2 - 4].mean() > 5

    # 3. Scores against the driving audio
    if score:
        assert set(report.scores) == {"source", "wav2lip", "diffusion"}
        for name, values in report.scores.items():
            assert np.isfinite(values["lse_d"]) and np.isfinite(values["lse_c"]) and values["lse_d"] > 0, name
            assert values["frames"] == report.frames
        table = report.scores_markdown()
        assert "LSE-D" in table and "source (before)" in table and "Wav2Lip" in table and "Diff2Lip" in table
    else:
        assert report.scores == {} and report.scores_markdown() == ""


def test_user_wav2lip_video_is_resized_and_padded_with_its_last_frame(engine, media_dir, speech, tmp_path):
    clip = media_dir / CLIPS[1]
    src = probe_video(clip)
    # a "Wav2Lip result" at half size, 20 frames: frames 0..18 dark grey, the last one light grey
    given = tmp_path / "wav2lip_result.mp4"
    colours = [40] * 19 + [220]
    with VideoWriter(given, src.fps, (src.width // 2, src.height // 2), audio_path=speech) as writer:
        writer.write(np.stack([np.full((src.height // 2, src.width // 2, 3), c, np.uint8) for c in colours]))
        writer.finish()
    out = tmp_path / "out.mp4"
    # no Wav2Lip weights exist here: a given result must not load the model
    report = engine.run(clip, speech, out, options(wav2lip_video=str(given)))
    assert report.frames > 40
    assert probe_video(report.side_by_side).width == 3 * src.width
    w = src.width
    early, late = read_frames(report.side_by_side, [5, report.frames - 1])
    below = slice(0, src.height)  # the pictures; the caption band lies below
    assert abs(early[below, w:2 * w].mean() - 40) < 3
    assert abs(late[below, w:2 * w].mean() - 220) < 3  # past its end: the last frame repeats


def test_cli_compare_and_score_end_to_end(media_dir, speech, weights, tmp_path):
    wav2lip_ckpt, syncnet_ckpt = weights
    checkpoint = tmp_path / "pipeline"
    small_pipeline().save_pretrained(checkpoint)
    out = tmp_path / "cli.mp4"
    result = cli("--video", media_dir / CLIPS[1], "--audio", speech, "--output", out, "--checkpoint", checkpoint,
                 "--detector", "opencv", "--steps", "1", "--length-policy", "shortest", "--batch-size", "32",
                 "--compare-wav2lip", "--wav2lip-checkpoint", wav2lip_ckpt, "--score",
                 "--syncnet-checkpoint", syncnet_ckpt, "--quiet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "frames at 25 fps" in lines[0]
    assert any(line.startswith("| video | LSE-D") for line in lines)
    for label in ("source (before)", "Wav2Lip", "Diff2Lip"):
        row = next(line for line in lines if line.startswith(f"| {label} |"))
        lse_d, lse_c = (float(v) for v in row.split("|")[2:4])
        assert np.isfinite(lse_d) and np.isfinite(lse_c)
    sbs = tmp_path / "cli_side_by_side.mp4"  # --compare-wav2lip writes the side-by-side
    assert sbs.is_file() and probe_video(sbs).width == 3 * probe_video(media_dir / CLIPS[1]).width


def test_cli_missing_wav2lip_weights_offline_is_one_line(media_dir, speech, tmp_path):
    checkpoint = tmp_path / "pipeline"
    small_pipeline().save_pretrained(checkpoint)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "LIPSYNC_WAV2LIP_CHECKPOINT"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf" / "hub"))
    result = cli("--video", media_dir / CLIPS[1], "--audio", speech, "--output", out_dir / "out.mp4",
                 "--checkpoint", checkpoint, "--detector", "opencv", "--steps", "1", "--compare-wav2lip", "--quiet",
                 env=env)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert WAV2LIP_HUB_REPO in lines[0] and "wav2lip_gan.pth" in lines[0] and "--wav2lip-checkpoint" in lines[0]
    assert list(out_dir.iterdir()) == []


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lipsync", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=env)


# ----------------------------------------------------------------------------------------------------
# The pieces, on arrays
# ----------------------------------------------------------------------------------------------------


def test_wav2lip_runner_changes_only_the_padded_box(media_dir):
    torch.manual_seed(0)
    frames = next(iter_frames(media_dir / CLIPS[1], chunk_size=3))  # (3, 524, 524, 3)
    boxes = np.array([[180, 120, 340, 290], [182, 121, 341, 292], [500, 480, 524, 520]])  # last: clipped by pads
    valid = np.array([True, True, False])
    mels = np.random.default_rng(0).standard_normal((3, 80, 16)).astype(np.float32)
    runner = compare.Wav2LipRunner(Wav2LipModel().eval(), boxes, valid, mels, frames.shape[1:])
    result = runner.frames(0, frames)
    assert result.shape == frames.shape and result.dtype == np.uint8
    padded = compare.wav2lip_boxes(boxes, frames.shape[1:])
    assert padded[0].tolist() == [180, 120, 340, 300] and padded[2].tolist() == [500, 480, 524, 524]
    for i in range(2):
        x1, y1, x2, y2 = padded[i]
        changed = np.any(result[i] != frames[i], axis=-1)
        assert not changed[outside(padded[i], frames.shape[1:])].any()
        assert changed[y1:y2, x1:x2].mean() > 0.5
    assert np.array_equal(result[2], frames[2])  # no face: untouched


def test_wav2lip_mels_use_wav2lips_alignment():
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    mel = audio_io.melspectrogram(wav)
    windows = compare.wav2lip_mels(mel, 25, 10)
    for i in (0, 1, 7):  # window i starts at column int(80 * i / 25), as Wav2Lip's inference.py cuts it
        start = int(80 * i / 25)
        assert np.array_equal(windows[i], mel[:, start:start + 16].astype(np.float32))


def test_crops_collected_in_chunks_equal_one_crop_of_the_whole_track():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (30, 96, 128, 3), dtype=np.uint8)
    centre = np.stack([40 + np.arange(30) * 0.7 + rng.normal(0, 2, 30), 45 + rng.normal(0, 2, 30)], axis=1)
    boxes = np.concatenate([centre - 18, centre + 18], axis=1)
    collector = compare.SyncCropCollector(boxes, fps=25, score_seconds=1.0)  # 25 of the 30 frames
    assert collector.num_frames == 25
    for start in range(0, 30, 8):
        collector.add(start, {"source": frames[start:start + 8], "wav2lip": None})
    assert list(collector.crops) == ["source"]
    collected = np.concatenate(collector.crops["source"])
    assert np.array_equal(collected, crop_syncnet_faces(frames[:25], boxes[:25], smooth=True))


def test_wav2lip_video_reader_pads_and_resizes(tmp_path):
    path = tmp_path / "w.mp4"
    with VideoWriter(path, 25, (64, 48)) as writer:
        writer.write(np.stack([np.full((48, 64, 3), 20 * i, np.uint8) for i in range(5)]))
        writer.finish()
    reader = compare.Wav2LipVideoReader(path, (128, 96), 25)
    first = reader.frames(0, np.zeros((3, 96, 128, 3), np.uint8))
    rest = reader.frames(3, np.zeros((6, 96, 128, 3), np.uint8))
    after = reader.frames(9, np.zeros((2, 96, 128, 3), np.uint8))  # past the end: still the last frame
    reader.close()
    assert first.shape == (3, 96, 128, 3) and rest.shape == (6, 96, 128, 3)
    means = [round(float(f.mean()) / 20) for f in np.concatenate([first, rest, after])]
    assert means == [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4]
    with pytest.raises(ValueError, match="sequentially"):
        reader.frames(0, first)  # not where the previous call stopped
