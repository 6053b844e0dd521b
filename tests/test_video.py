"""Video I/O: probing real clips, decoding (rotation, frame rates, codecs), the atomic H.264/AAC writer."""

from __future__ import annotations

import functools
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import MEDIA
from conftest import need_shared as _need
from conftest import run_ffmpeg as _ffmpeg

from lipsync.media import probe as probe_module
from lipsync.errors import InvalidMediaError, NoAudioError, NoVideoStreamError, OutputPathError
from lipsync.media.writer import VideoWriter, check_output_path
from lipsync.media.probe import as_fraction, count_frames, find_ffmpeg, find_ffprobe, probe_duration, probe_video
from lipsync.media.reader import is_image, iter_frames, read_frames, read_image
from lipsync.media.sidebyside import comparison_layout, side_by_side


@functools.lru_cache(maxsize=1)
def _encoders() -> str:
    return subprocess.run([find_ffmpeg(), "-hide_banner", "-encoders"], capture_output=True, text=True).stdout


def _make_clip(path: Path, size: str = "64x48", rate: str = "25", seconds: float = 1.0,
               codec: tuple[str, ...] = ("-c:v", "libx264", "-pix_fmt", "yuv420p"), audio: bool = False) -> Path:
    args = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}", "-c:a", "aac"]
    _ffmpeg(*args, *codec, str(path))
    return path


def _decode(path: Path) -> np.ndarray:
    return np.concatenate(list(iter_frames(path)))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _stream(path: Path, kind: str) -> dict:
    out = subprocess.run(
        [find_ffprobe(), "-v", "error", "-select_streams", kind, "-show_entries",
         "stream=codec_name,pix_fmt,sample_rate,channels,duration", "-of", "default=nw=1", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _smooth_frames(n: int = 20, height: int = 96, width: int = 128) -> np.ndarray:
    """(n, H, W, 3) uint8 face-like content: smooth gradients and a moving soft blob."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = []
    for k in range(n):
        blob = np.exp(-((x - 40 - 2 * k) ** 2 + (y - 48) ** 2) / (2 * 15**2))
        red = 120 + 80 * blob + 30 * np.sin(x / 17 + k / 5)
        green = 90 + 60 * (y / height) + 50 * blob
        blue = 150 - 70 * (x / width) + 20 * np.cos(y / 11)
        frames.append(np.stack([red, green, blue], -1))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def _children() -> set[int]:
    """PIDs of this process's live children (Linux /proc)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            pass
    return pids


# ------------------------------------------------------------------------------------------------ probing

SHARED_CLIPS = [
    ("pub_video1_retalking_face2.mp4", 844, 844, 125, "h264"),
    ("pub_video2_retalking_face5.mp4", 524, 524, 122, "h264"),
    ("pub_video3_sadtalker_katiehill.mp4", 512, 512, 200, "mpeg4"),
]


@pytest.mark.parametrize("name,width,height,frames,codec", SHARED_CLIPS)
def test_probe_shared_clips_match_sources(name, width, height, frames, codec):
    info = probe_video(_need(MEDIA / name))
    assert (info.width, info.height) == (width, height)
    assert info.fps == Fraction(25, 1)
    assert info.num_frames == frames
    assert info.codec == codec
    assert info.rotation == 0
    assert info.has_audio and info.video_start == 0.0 and info.audio_start == 0.0
    assert abs(info.duration - frames / 25) < 0.05


def test_iter_frames_decodes_every_frame_in_bounded_chunks():
    path = _need(MEDIA / "pub_video2_retalking_face5.mp4")
    chunks = list(iter_frames(path, chunk_size=50))
    assert [len(c) for c in chunks] == [50, 50, 22]
    assert all(c.shape[1:] == (524, 524, 3) and c.dtype == np.uint8 for c in chunks)
    picked = read_frames(path, [121, 0, 60])
    assert picked.shape == (3, 524, 524, 3)
    np.testing.assert_array_equal(picked[0], chunks[2][-1])
    np.testing.assert_array_equal(picked[1], chunks[0][0])
    np.testing.assert_array_equal(picked[2], chunks[1][10])
    with pytest.raises(IndexError, match="122 frames; frame 122 does not exist"):
        read_frames(path, [122])


def test_iter_frames_is_rgb(tmp_path):
    # a pure red clip must come back red in channel 0
    path = tmp_path / "red.mp4"
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:size=32x32:rate=5:duration=0.4", "-c:v", "libx264",
            "-pix_fmt", "yuv420p", str(path))
    frame = _decode(path)[0].astype(int)
    assert frame[..., 0].mean() > 200 and frame[..., 1].mean() < 40 and frame[..., 2].mean() < 40


def test_closing_the_frame_iterator_ends_ffmpeg(tmp_path):
    path = _make_clip(tmp_path / "clip.mp4", seconds=2)
    before = _children()
    frames = iter_frames(path, chunk_size=2)
    next(frames)
    assert _children() - before  # ffmpeg is running
    frames.close()
    assert not (_children() - before)


def test_rotated_clip_yields_display_orientation(tmp_path):
    plain = _make_clip(tmp_path / "plain.mp4", size="320x240", seconds=0.4)
    rotated = tmp_path / "rotated.mp4"
    _ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    info = probe_video(rotated)
    assert (info.width, info.height) == (240, 320)
    assert info.rotation in (90, 270)
    frames = _decode(rotated)
    assert frames.shape == (10, 320, 240, 3)
    upright = _decode(plain)[0]
    # the pixels are the upright frame turned by a quarter
    assert max(_psnr(frames[0], np.rot90(upright, k)) for k in (1, -1)) > 40


def test_video_starting_after_its_audio_is_not_padded(tmp_path):
    source = _make_clip(tmp_path / "av.mp4", seconds=1.0, audio=True)
    delayed = tmp_path / "delayed.mp4"
    _ffmpeg("-itsoffset", "0.5", "-i", str(source), "-i", str(source), "-map", "0:v", "-map", "1:a",
            "-c", "copy", str(delayed))
    info = probe_video(delayed)
    assert info.video_start == pytest.approx(0.5, abs=0.01) and info.audio_start == pytest.approx(0.0, abs=0.05)
    frames = _decode(delayed)
    assert len(frames) == info.num_frames == 25  # no frozen copies of frame 0 for the first 0.5 s
    np.testing.assert_array_equal(frames, _decode(source))


def test_variable_frame_rate_becomes_constant_at_the_average_rate(tmp_path):
    vfr = tmp_path / "vfr.mp4"  # 25 frames in the first second, then 25 frames at 12.5 fps
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2",
            "-vf", "setpts='if(lt(N,25),N/25,1+(N-25)/12.5)/TB'", "-fps_mode", "passthrough",
            "-c:v", "libx264", str(vfr))
    info = probe_video(vfr)
    assert info.fps == Fraction(50) / Fraction("2.88")  # avg_frame_rate 625/36
    assert abs(len(_decode(vfr)) - info.duration * info.fps) <= 1


@pytest.mark.parametrize(
    "ext,encoder,codec_args",
    [
        ("mp4", "libx265", ("-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params", "log-level=error")),
        ("webm", "libvpx-vp9", ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8")),
        ("mkv", "libx264", ("-c:v", "libx264", "-pix_fmt", "yuv420p")),
        ("mov", "mpeg4", ("-c:v", "mpeg4", "-q:v", "3")),
    ],
)
def test_other_codecs_and_containers_decode(tmp_path, ext, encoder, codec_args):
    if f" {encoder} " not in _encoders():
        pytest.skip(f"this ffmpeg has no {encoder} encoder")
    path = _make_clip(tmp_path / f"clip.{ext}", size="96x64", rate="25", seconds=0.8, codec=codec_args)
    info = probe_video(path)
    assert (info.width, info.height, info.fps) == (96, 64, Fraction(25))
    assert abs(info.num_frames - 20) <= 1  # mkv/webm store no count: estimated from the duration
    frames = _decode(path)
    assert frames.shape == (20, 64, 96, 3)
    assert count_frames(path) == 20


# ---------------------------------------------------------------------------------------------- errors


def test_text_file_is_not_a_video(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_text("definitely not a video\n")
    with pytest.raises(InvalidMediaError, match="clip.mp4 could not be read as a video: .*upload an mp4/mov/mkv/webm"):
        probe_video(path)


def test_missing_video_names_the_path(tmp_path):
    with pytest.raises(InvalidMediaError, match="nothing.mp4 does not exist"):
        probe_video(tmp_path / "nothing.mp4")


def test_audio_file_has_no_video_stream():
    with pytest.raises(NoVideoStreamError, match="tts_en.wav has no video stream"):
        probe_video(_need(MEDIA / "tts_en.wav"))


def test_missing_ffmpeg_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(probe_module.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"ffmpeg was not found; install it \(apt-get install ffmpeg\)"):
        find_ffmpeg()
    with pytest.raises(FileNotFoundError, match="ffmpeg was not found"):
        VideoWriter(tmp_path / "out.mp4", 25, (64, 48))
    assert os.listdir(tmp_path) == []


def test_images_are_detected_and_read_as_rgb(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 255  # red
    rgb[5:10, 5:10] = (0, 0, 255)  # a blue square
    path = tmp_path / "face.PNG"
    cv2.imwrite(str(path), rgb[..., ::-1])
    assert is_image(path) and is_image("a/b.jpeg") and not is_image("clip.mp4")
    np.testing.assert_array_equal(read_image(path), rgb)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(InvalidMediaError, match="bad.jpg could not be read as an image; upload a png or jpg"):
        read_image(bad)


# ---------------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("rate", ["24", "30000/1001", "30", "60"])
def test_frame_rate_survives_decode_and_encode(tmp_path, rate):
    source = _make_clip(tmp_path / "src.mp4", size="64x48", rate=rate, seconds=0.5)
    info = probe_video(source)
    assert info.fps == Fraction(rate)
    frames = _decode(source)
    expected = round(0.5 * Fraction(rate))
    assert len(frames) == info.num_frames == expected
    out = tmp_path / "out.mp4"
    with VideoWriter(out, info.fps, (64, 48), audio_array=np.zeros(8000, np.float32)) as writer:
        writer.write(frames)
    written = probe_video(out)
    assert written.fps == Fraction(rate)
    assert count_frames(out) == expected
    assert abs(probe_duration(out) - expected / Fraction(rate)) <= 1 / Fraction(rate)


def test_float_29_97_is_written_as_2997_over_100(tmp_path):
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 29.97, (32, 32)) as writer:
        writer.write(np.zeros((30, 32, 32, 3), np.uint8))
    assert probe_video(out).fps == Fraction(2997, 100)
    assert as_fraction(30000 / 1001) == Fraction(30000, 1001)


def _is_faststart(path: Path) -> bool:
    data = path.read_bytes()
    return 0 <= data.find(b"moov") < data.find(b"mdat")


@pytest.mark.parametrize("audio", ["long_file", "short_array"])
def test_writer_output_has_exact_length_h264_and_aac(tmp_path, audio):
    frames = _smooth_frames(37)
    out = tmp_path / "result.mp4"
    if audio == "long_file":  # 6.4 s of speech is trimmed to the 1.48 s of video
        kwargs = {"audio_path": _need(MEDIA / "tts_en.wav")}
    else:  # 0.3 s of audio is padded with silence to 1.48 s
        kwargs = {"audio_array": (0.3 * np.sin(np.arange(4800) / 3.0)).astype(np.float32)}
    with VideoWriter(out, 25, (128, 96), **kwargs) as writer:
        writer.write(frames[:20])
        writer.write(frames[20:])
    assert sorted(os.listdir(tmp_path)) == ["result.mp4"]  # temp files are gone
    assert count_frames(out) == 37
    assert probe_video(out).fps == Fraction(25)
    assert abs(probe_duration(out) - 37 / 25) <= 1 / 25
    video = _stream(out, "v:0")
    assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
    sound = _stream(out, "a:0")
    assert sound["codec_name"] == "aac"
    assert abs(float(sound["duration"]) - 37 / 25) <= 1 / 25
    assert _is_faststart(out)


def test_round_trip_is_close_to_the_source(tmp_path):
    frames = _smooth_frames(20)
    out = tmp_path / "smooth.mp4"
    with VideoWriter(out, 25, (128, 96)) as writer:
        writer.write(frames)
    assert _psnr(_decode(out), frames) > 40
    # testsrc's saturated 1-pixel edges are limited by 4:2:0 chroma, not by crf 18
    source = _decode(_make_clip(tmp_path / "testsrc.mp4", size="320x240", seconds=0.4,
                                codec=("-c:v", "libx264", "-crf", "5", "-pix_fmt", "yuv420p")))
    with VideoWriter(tmp_path / "testsrc_out.mp4", 25, (320, 240)) as writer:
        writer.write(source)
    assert _psnr(_decode(tmp_path / "testsrc_out.mp4"), source) > 37


def test_real_face_round_trip(tmp_path):
    frames = next(iter_frames(_need(MEDIA / "pub_video2_retalking_face5.mp4"), chunk_size=10))
    out = tmp_path / "face.mp4"
    with VideoWriter(out, 25, (524, 524)) as writer:
        writer.write(frames)
    assert _psnr(_decode(out), frames) > 38


def test_odd_frame_size_is_padded_to_even(tmp_path):
    frames = _smooth_frames(5, height=49, width=65)
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, 25, (65, 49)) as writer:
        writer.write(frames)
    info = probe_video(out)
    assert (info.width, info.height) == (66, 50)
    back = _decode(out)
    assert _psnr(back[:, :49, :65], frames) > 38
    # the padding repeats the edge instead of adding a black line
    assert np.abs(back[:, 49, :65].astype(int) - back[:, 48, :65]).mean() < 6


def test_exception_inside_with_leaves_nothing(tmp_path):
    out = tmp_path / "result.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, 25, (64, 48), audio_array=np.zeros(16000, np.float32)) as writer:
            writer.write(np.zeros((10, 48, 64, 3), np.uint8))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_wrong_frame_shape_and_close_without_finish_leave_nothing(tmp_path):
    out = tmp_path / "result.mp4"
    with pytest.raises(ValueError, match=r"frames must have shape \(n, 48, 64, 3\)"):
        with VideoWriter(out, 25, (64, 48)) as writer:
            writer.write(np.zeros((3, 48, 64, 3), np.uint8))
            writer.write(np.zeros((3, 64, 48, 3), np.uint8))
    assert os.listdir(tmp_path) == []
    writer = VideoWriter(out, 25, (64, 48))
    writer.write(np.zeros((3, 48, 64, 3), np.uint8))
    assert len(os.listdir(tmp_path)) == 1 and os.listdir(tmp_path)[0].startswith(".")  # hidden temp
    writer.close()
    assert os.listdir(tmp_path) == []


def test_existing_output_is_replaced_only_on_success(tmp_path):
    out = tmp_path / "result.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 25, (64, 48)) as writer:
            writer.write(np.zeros((5, 48, 64, 3), np.uint8))
            raise RuntimeError("interrupted")
    assert out.read_bytes() == b"previous result"
    with VideoWriter(out, 25, (64, 48)) as writer:
        writer.write(np.zeros((5, 48, 64, 3), np.uint8))
    assert count_frames(out) == 5
    assert os.listdir(tmp_path) == ["result.mp4"]


def test_audio_without_sound_is_rejected_before_encoding(tmp_path):
    silent = _make_clip(tmp_path / "silent.mp4")
    with pytest.raises(NoAudioError, match="silent.mp4 has no audio track"):
        VideoWriter(tmp_path / "out.mp4", 25, (64, 48), audio_path=silent)
    assert os.listdir(tmp_path) == ["silent.mp4"]


def test_unwritable_output_paths_fail_early(tmp_path):
    with pytest.raises(OutputPathError, match=r"cannot write .*missing.* does not exist; choose a writable folder"):
        VideoWriter(tmp_path / "missing" / "out.mp4", 25, (64, 48))
    with pytest.raises(OutputPathError, match="it is a directory"):
        check_output_path(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputPathError, match="is not a folder"):
        check_output_path(tmp_path / "file.txt" / "out.mp4")
    assert sorted(os.listdir(tmp_path)) == ["file.txt"]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.geteuid() != 0:  # root may write anywhere, so only a normal user sees this refusal
            with pytest.raises(OutputPathError, match="not writable; choose a writable folder"):
                VideoWriter(locked / "out.mp4", 25, (64, 48))
        else:
            assert check_output_path(locked / "out.mp4") == locked / "out.mp4"
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o755)


# ------------------------------------------------------------------------------------------ side by side


def caption_contrast(band: np.ndarray) -> tuple:
    """(fraction of bright text pixels, mean of the rest) of a caption band (h, w, 3)."""
    grey = band.mean(axis=-1)
    text = grey > 180
    return text.mean(), grey[~text].mean()


def test_side_by_side_two_panels_with_captions_below():
    left = np.full((3, 100, 80, 3), 200, np.uint8)
    right = np.full((3, 50, 40, 3), 100, np.uint8)  # fitted to 100x80: scaled to 80x80, centred
    out = side_by_side(left, right)
    layout = comparison_layout((80, 100), 2)
    assert layout.caption_height == 32 and not layout.vertical
    assert out.shape == (3, 132, 160, 3) and out.dtype == np.uint8 and layout.size == (160, 132)
    # the pictures are untouched: the captions sit in a band under each panel
    assert (out[:, :100, :80] == 200).all() and (out[:, 10:90, 80:] == 100).all()
    for i in range(2):
        x1, y1, x2, y2 = layout.caption_box(i)
        text, background = caption_contrast(out[0, y1:y2, x1:x2])
        assert 0.02 < text < 0.5 and background < 60  # white text on a dark band
    plain = side_by_side(left, right, labels=None)
    assert plain.shape == (3, 100, 160, 3)
    assert (plain[:, :, :80] == 200).all() and (plain[:, 10:90, 80:] == 100).all()


def test_side_by_side_three_panels():
    panels = [np.zeros((2, 64, 64, 3), np.uint8), np.zeros((2, 32, 48, 3), np.uint8),
              np.zeros((2, 64, 32, 3), np.uint8)]
    out = side_by_side(panels, labels=["source", "Wav2Lip", "Diff2Lip"])
    assert out.shape == (2, 64 + 32, 3 * 64, 3)
    with pytest.raises(ValueError, match="same number of frames"):
        side_by_side(panels[0], panels[1][:1])
    with pytest.raises(ValueError, match="2 labels for 3 panels"):
        side_by_side(panels, labels=["a", "b"])


def test_wide_clips_are_stacked_and_mouths_zoomed():
    wide = np.zeros((1, 90, 160, 3), np.uint8)
    wide[:, 65:90, 60:100] = 255  # the lower half of the face box (x 60..100, y 40..90) is white
    out = side_by_side([wide, wide], labels=["source", "Diff2Lip"], mouth_boxes=np.array([[60, 40, 100, 90]]))
    layout = comparison_layout((160, 90), 2, mouth_zoom=True)
    assert layout.vertical and layout.zoom_height == 46  # half the panel height, even
    assert out.shape[1:3] == (2 * (90 + 46 + 32), 160)  # two cells, one above the other
    strip = out[0, 90:90 + 46]  # the first panel's mouth strip: the 40x25 white mouth, enlarged 46/25 times
    white_columns = np.flatnonzero(strip.mean(axis=(0, 2)) > 240)
    assert 70 <= len(white_columns) <= 76 and abs(white_columns.mean() - 80) < 2  # centred
    assert (strip[:, white_columns] > 240).all()  # every row of the strip shows the mouth
    x1, y1, x2, y2 = layout.caption_box(1)
    assert y1 == 90 + 46 + 32 + 90 + 46 and x2 == 160
    text, background = caption_contrast(out[0, y1:y2, x1:x2])
    assert text > 0.02 and background < 60


def test_side_label_is_burned_into_written_frames(tmp_path):
    frames = np.full((4, 96, 128, 3), 230, np.uint8)
    out = tmp_path / "labelled.mp4"
    with VideoWriter(out, 25, (128, 96), side_label="Diff2Lip") as writer:
        writer.write(frames)
    back = _decode(out)
    assert back[:, 4:12, 4:30].mean() < 120  # dark label box
    assert back[:, 60:, 60:].mean() > 220  # rest unchanged
