"""The engine on real clips: fps, frame counts, durations, untouched pixels, missing faces, bad input."""

import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, small_pipeline

from lipsync.media import audio as audio_io
from lipsync.job import JobOptions, monotonic_runs, source_indices
from lipsync.engine import LipSyncEngine
from lipsync.errors import (AudioTooShortError, InvalidMediaError, NoAudioError, NoFaceError, NoVideoStreamError,
                            OutputPathError)
from lipsync.media.writer import VideoWriter
from lipsync.media.probe import count_frames, probe_duration, probe_video
from lipsync.media.reader import iter_frames

CLIPS = ["pub_video1_retalking_face2.mp4", "pub_video2_retalking_face5.mp4", "pub_video3_sadtalker_katiehill.mp4"]
AUDIOS = ["pub_audio1_latentsync_demo1_16k_mono.wav", "pub_audio2_retalking_audio1_44k_stereo.wav",
          "pub_audio3_sadtalker_radio31_en_16k_stereo.wav", "tts_en.wav"]
# 9.6 s: official shortest; 5.0 s: shorter than clip 3 (stops with the audio), longer than clips 1-2 (ping-pong);
# 8.0 s: loop; 6.4 s: ping-pong
POLICY_FOR_AUDIO = {0: "shortest", 1: "pingpong", 2: "loop", 3: "pingpong"}


@pytest.fixture(scope="module")
def engine():
    return LipSyncEngine(pipeline=small_pipeline(), detector="opencv")


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def decode(path):
    return np.concatenate(list(iter_frames(path)))


def test_timelines():
    assert source_indices(4, 10, "pingpong").tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert source_indices(4, 6, "loop").tolist() == [0, 1, 2, 3, 0, 1]
    assert source_indices(1, 3, "pingpong").tolist() == [0, 0, 0]
    assert monotonic_runs(np.array([2, 3, 2, 1, 0, 1, 5])) == [(0, 2), (2, 5), (5, 6), (6, 7)]


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("audio_index", range(len(AUDIOS)))
def test_real_clip_with_real_audio(engine, media_dir, tmp_path, clip, audio_index):
    video, audio = media_dir / clip, media_dir / AUDIOS[audio_index]
    policy = POLICY_FOR_AUDIO[audio_index]
    out = tmp_path / "out.mp4"
    options = JobOptions(num_inference_steps=1, detector="opencv", length_policy=policy, batch_size=32,
                         chunk_frames=64, side_by_side=(audio_index == 3))
    started = time.perf_counter()
    report = engine.run(video, audio, out, options)
    elapsed = time.perf_counter() - started
    # the summary gives the job's wall time and the stage times' sum (larger when stages overlap)
    assert 0 < report.wall_seconds <= elapsed
    assert f"{report.wall_seconds:.1f} s (stage times add up to {sum(report.seconds.values()):.1f} s" in report.summary()

    info, src_info = probe_video(out), probe_video(video)
    assert info.fps == src_info.fps  # the source frame rate is kept
    seconds = audio_io.audio_duration(audio_io.load_audio(audio))
    if policy == "shortest":
        windows = audio_io.num_windows(audio_io.melspectrogram(audio_io.load_audio(audio)).shape[1], src_info.fps)
        expected = min(src_info.num_frames, windows)
    else:  # the output covers the audio, playing the clip forward/backward or looping
        expected = round(seconds * float(src_info.fps))
    frames = count_frames(out)
    assert abs(frames - expected) <= 1 and report.frames == frames
    assert abs(probe_duration(out) - expected / float(src_info.fps)) <= 1.5 / float(src_info.fps)
    assert info.has_audio

    # outside the face boxes (and, in mouth mode, in the upper half of each box) the source is untouched
    source, result = decode(video), decode(out)
    shown = source[report.source_index[: len(result)]]
    outside = np.ones(result.shape[:3], bool)
    upper = np.zeros(result.shape[:3], bool)
    for i, k in enumerate(report.source_index[: len(result)]):
        x1, y1, x2, y2 = report.boxes[k]
        outside[i, y1:y2, x1:x2] = False
        upper[i, y1:y1 + (y2 - y1) // 2, x1:x2] = True
    assert psnr(result[outside], shown[outside]) >= 40
    assert psnr(result[upper], shown[upper]) >= 40
    lower = ~outside & ~upper
    assert psnr(result[lower], shown[lower]) < 30  # the random model really did paint the mouth
    if options.side_by_side:
        sbs = report.side_by_side
        assert sbs.is_file() and count_frames(sbs) == frames
        assert probe_video(sbs).width == 2 * src_info.width


def test_box_mode_replaces_the_whole_box_and_reference_frame(engine, media_dir, tmp_path):
    out = tmp_path / "box.mp4"
    report = engine.run(media_dir / CLIPS[1], media_dir / "tts_en.wav", out,
                        JobOptions(num_inference_steps=1, detector="opencv", paste="box", length_policy="shortest",
                                   reference_frame=10, side_by_side=False))
    source, result = decode(media_dir / CLIPS[1])[: report.frames], decode(out)
    x1, y1, x2, y2 = report.boxes[5]
    upper = (slice(y1, y1 + (y2 - y1) // 2), slice(x1, x2))
    # the official paste resamples the whole box through 128x128: the upper half is blurred, not kept
    assert psnr(result[5][upper], source[5][upper]) < 40


def test_frames_without_a_face_pass_through_unchanged(engine, media_dir, tmp_path):
    frames = decode(media_dir / CLIPS[1])[:50].copy()
    frames[20:35] = 128  # 15 frames with no face: longer than the 12-frame gap that is interpolated
    clip = tmp_path / "gap.mp4"
    with VideoWriter(clip, 25, (frames.shape[2], frames.shape[1]), audio_path=media_dir / "tts_en.wav") as w:
        w.write(frames)
    src = decode(clip)
    out = tmp_path / "out.mp4"
    report = engine.run(clip, media_dir / "tts_en.wav", out,
                        JobOptions(num_inference_steps=1, detector="opencv", length_policy="shortest",
                                   side_by_side=False))
    result = decode(out)
    assert report.faces_missing >= 15 and not report.valid[20:35].any()
    for i in range(21, 34):
        assert psnr(result[i], src[i]) >= 45
    assert psnr(result[5], src[5]) < 40  # frames with a face were lip-synced


def make_silent_video(path, seconds=1.0, face=None):
    args = [ "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=gray:s=160x120:d={seconds}",
             "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(args, check=True)


BAD = {
    "not_a_video": (InvalidMediaError, "could not be read"),
    "no_video_stream": (NoVideoStreamError, "no video stream"),
    "no_audio": (NoAudioError, "no audio"),
    "audio_too_short": (AudioTooShortError, "at least 0.2 s"),
    "no_face": (NoFaceError, "no face was found"),
    "unwritable_output": (OutputPathError, "cannot write"),
}


def bad_case(name, media_dir, tmp_path):
    video, audio = media_dir / CLIPS[1], media_dir / "tts_en.wav"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "result.mp4"
    if name == "not_a_video":
        video = tmp_path / "notes.mp4"
        video.write_text("this is not a video")
    elif name == "no_video_stream":
        video = media_dir / "tts_en.wav"
    elif name == "no_audio":
        audio = tmp_path / "silent.mp4"
        make_silent_video(audio)
    elif name == "audio_too_short":
        audio = tmp_path / "short.wav"
        import soundfile

        soundfile.write(audio, np.zeros(1600, np.float32), 16000)  # 0.1 s
    elif name == "no_face":
        video = tmp_path / "gray.mp4"
        make_silent_video(video)
    elif name == "unwritable_output":
        output = out_dir / "missing-folder" / "result.mp4"
    return video, audio, output, out_dir


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_names_the_problem_and_leaves_no_file(engine, media_dir, tmp_path, name):
    video, audio, output, out_dir = bad_case(name, media_dir, tmp_path)
    error, text = BAD[name]
    with pytest.raises(error, match=text):
        engine.run(video, audio, output, JobOptions(num_inference_steps=1, detector="opencv"))
    assert list(out_dir.iterdir()) == []


@pytest.fixture(scope="module")
def cli_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    small_pipeline().save_pretrained(path)
    return path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lipsync", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("name", ["not_a_video", "no_face", "unwritable_output"])
def test_cli_bad_input_exits_non_zero_with_one_line(media_dir, tmp_path, cli_checkpoint, name):
    video, audio, output, out_dir = bad_case(name, media_dir, tmp_path)
    result = cli("--video", video, "--audio", audio, "--output", output, "--checkpoint", cli_checkpoint,
                 "--detector", "opencv", "--steps", "1", "--quiet")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and BAD[name][1] in lines[0]
    assert list(out_dir.iterdir()) == []


def test_cli_end_to_end(media_dir, tmp_path, cli_checkpoint):
    out = tmp_path / "cli.mp4"
    result = cli("--video", media_dir / CLIPS[1], "--audio", media_dir / "tts_en.wav", "--output", out,
                 "--checkpoint", cli_checkpoint, "--detector", "opencv", "--steps", "1", "--length-policy",
                 "shortest", "--side-by-side", "--batch-size", "32")
    assert result.returncode == 0, result.stderr
    assert out.is_file() and (tmp_path / "cli_side_by_side.mp4").is_file()
    assert "122 frames at 25 fps" in result.stdout or "frames at 25 fps" in result.stdout
    assert "diffusion" in result.stderr  # tqdm progress bars per stage


def test_still_photo_is_held_for_the_whole_audio(engine, media_dir, tmp_path):
    import cv2

    frame = decode(media_dir / CLIPS[1])[0]
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), frame[:, :, ::-1])
    out = tmp_path / "photo.mp4"
    report = engine.run(photo, media_dir / "tts_en.wav", out,
                        JobOptions(num_inference_steps=1, detector="opencv", side_by_side=False))
    seconds = audio_io.audio_duration(audio_io.load_audio(media_dir / "tts_en.wav"))
    assert abs(count_frames(out) - round(seconds * 25)) <= 1 and report.fps == 25


def test_frames_with_the_mouth_out_of_the_picture_pass_through_unchanged(media_dir, tmp_path):
    pytest.importorskip("mediapipe")
    import cv2

    # clip 1 at 422x422, 40 frames; frames 14-29 are an extreme close-up of the eyes and nose (the
    # mouth is about 20 px below the picture's edge before the zoom)
    frames = np.stack([cv2.resize(f, (422, 422), interpolation=cv2.INTER_AREA) for f in decode(media_dir / CLIPS[0])[:40]])
    for i in range(14, 30):
        frames[i] = cv2.resize(frames[i, 55:235, 114:294], (422, 422), interpolation=cv2.INTER_CUBIC)
    clip = tmp_path / "closeup.mp4"
    with VideoWriter(clip, 25, (frames.shape[2], frames.shape[1]), audio_path=media_dir / "tts_en.wav") as w:
        w.write(frames)
    src = decode(clip)
    out = tmp_path / "out.mp4"
    engine = LipSyncEngine(pipeline=small_pipeline(), detector="mediapipe")
    report = engine.run(clip, media_dir / "tts_en.wav", out,
                        JobOptions(num_inference_steps=1, detector="mediapipe", length_policy="shortest",
                                   side_by_side=False))
    result = decode(out)
    assert not report.valid[14:30].any() and report.valid[:14].all() and report.valid[30:].all()
    assert report.faces_refused >= 4  # close-ups where a face was found, its mouth out of the picture
    assert report.faces_refused + report.faces_missing == 16
    assert report.faces_found + report.faces_interpolated == 24
    assert "refused" in report.summary()
    for i in range(14, 30):
        assert psnr(result[i], src[i]) >= 45
    assert psnr(result[10], src[10]) < 40  # frames with the whole mouth were lip-synced


def test_preview_says_when_the_mouth_is_out_of_the_picture(media_dir, tmp_path):
    pytest.importorskip("mediapipe")
    import cv2

    frame = decode(media_dir / CLIPS[0])[0]
    close = cv2.resize(frame[110:470, 228:588], (844, 844), interpolation=cv2.INTER_CUBIC)  # eyes and nose only
    engine = LipSyncEngine(pipeline=small_pipeline(), detector="mediapipe")
    options = JobOptions(detector="mediapipe")
    shown = {}
    for name, image in (("whole", frame), ("close", close)):
        path = tmp_path / f"{name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        shown[name] = engine.preview_frame(path, 0, options)
    assert len(engine.detector("mediapipe").detect(close[None])[0]) >= 1  # a face IS found on the close-up
    green = np.array([0, 255, 0])
    red = np.array([255, 0, 0])
    assert (shown["whole"] == green).all(axis=-1).sum() > 500  # the face box is drawn
    assert not (shown["close"] == green).all(axis=-1).any()  # no box on the close-up...
    assert (shown["close"] == red).all(axis=-1).sum() > 500  # ...but the red note
