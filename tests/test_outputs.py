"""What a user finds in the output folder: normal file permissions, the source's colour tags (BT.709 / BT.601,
range) on the result and the side-by-side, and no leftovers or tracebacks when a CLI job is stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MEDIA, REPO, need_shared, run_ffmpeg, small_pipeline

from lipsync.engine import JobOptions, LipSyncEngine
from lipsync.video import VideoWriter, find_ffprobe, iter_frames, probe_video

# (matrix, primaries, transfer, range) as ffprobe names them
TAGS = {
    "bt709": ("bt709", "bt709", "bt709", "tv"),
    "bt601": ("smpte170m", "smpte170m", "smpte170m", "tv"),
    "bt601_full_range": ("bt470bg", "bt470bg", "bt470bg", "pc"),
}
SCALE_MATRIX = {"bt709": "bt709", "smpte170m": "smpte170m", "bt470bg": "bt470"}


def _tags(path: Path) -> dict:
    out = subprocess.run([find_ffprobe(), "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=color_space,color_primaries,color_transfer,color_range", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    stream = json.loads(out)["streams"][0]
    return {key: stream.get(key) for key in ("color_space", "color_primaries", "color_transfer", "color_range")}


def _expected(kind: str) -> dict:
    matrix, primaries, transfer, value_range = TAGS[kind]
    return {"color_space": matrix, "color_primaries": primaries, "color_transfer": transfer,
            "color_range": value_range}


def _tagged(source_args: list[str], path: Path, kind: str, frames: int) -> Path:
    """Encode ``source_args`` (an ffmpeg input) to H.264 converted with and tagged as ``kind``."""
    matrix, primaries, transfer, value_range = TAGS[kind]
    transfer = {"bt470bg": "gamma28"}.get(transfer, transfer)  # ffmpeg's name of what ffprobe calls bt470bg
    run_ffmpeg(*source_args, "-frames:v", str(frames), "-vf",
               f"scale=256:256:out_color_matrix={SCALE_MATRIX[matrix]}:out_range={value_range},format=yuv420p",
               "-c:v", "libx264", "-preset", "ultrafast", "-crf", "14", "-colorspace", matrix,
               "-color_primaries", primaries, "-color_trc", transfer, "-color_range", value_range, str(path))
    assert _tags(path) == _expected(kind)
    return path


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# ------------------------------------------------------------------------------------------ the writer


def test_written_file_has_normal_permissions(tmp_path, umask_022):
    frames = np.full((3, 32, 48, 3), 90, np.uint8)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 25, (48, 32)) as writer:
        writer.write(frames)
    assert out.stat().st_mode & 0o777 == 0o644  # 0666 less the umask, not the temp file's 0600
    os.umask(0o077)
    private = tmp_path / "private.mp4"
    with VideoWriter(private, 25, (48, 32)) as writer:
        writer.write(frames)
    assert private.stat().st_mode & 0o777 == 0o600
    out.chmod(0o664)  # replacing a file keeps its mode, as rewriting it would
    with VideoWriter(out, 25, (48, 32)) as writer:
        writer.write(frames)
    assert out.stat().st_mode & 0o777 == 0o664


@pytest.mark.parametrize("kind", list(TAGS))
def test_writer_carries_colour_tags_and_keeps_the_colours(tmp_path, kind):
    # smooth saturated colours, where BT.709 and BT.601 matrices disagree by several levels
    y, x = np.mgrid[0:256, 0:256]
    rgb = np.stack([40 + 0.7 * x, 200 - 0.5 * y, 60 + 0.3 * (x + y) / 2], -1).astype(np.uint8)
    raw = tmp_path / "rgb.raw"
    np.repeat(rgb[None], 4, 0).tofile(raw)
    source = _tagged(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "256x256", "-r", "25", "-i", str(raw)],
                     tmp_path / "source.mp4", kind, 4)
    info = probe_video(source)
    assert info.colors == _expected(kind)
    decoded = np.concatenate(list(iter_frames(source, info=info)))
    assert _psnr(decoded[0], rgb) > 38  # the tags are honoured when decoding

    out = tmp_path / "out.mp4"
    with VideoWriter(out, 25, (256, 256), colors=info.colors) as writer:
        writer.write(decoded)
    assert _tags(out) == _expected(kind)
    again = np.concatenate(list(iter_frames(out)))
    assert _psnr(again, decoded) > 42

    # (tagging without converting with the same matrix and range would shift the colours: PSNR < 35)


# ------------------------------------------------------------------------------------------ the engine


@pytest.fixture(scope="module")
def engine():
    return LipSyncEngine(pipeline=small_pipeline(), detector="opencv")


@pytest.mark.parametrize("kind", ["bt709", "bt601"])
def test_job_outputs_carry_colour_tags_and_normal_permissions(engine, tmp_path, kind, umask_022):
    need_shared(MEDIA)
    source = _tagged(["-i", str(MEDIA / "pub_video2_retalking_face5.mp4")], tmp_path / "face.mp4", kind, 8)
    audio = tmp_path / "speech.wav"
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:sample_rate=16000:duration=0.32", str(audio))
    out = tmp_path / "out.mp4"
    report = engine.run(source, audio, out, JobOptions(num_inference_steps=1, detector="opencv",
                                                       length_policy="shortest", side_by_side=True))
    assert report.faces_found > 0
    for path in (out, report.side_by_side):
        assert _tags(path) == _expected(kind)
        assert path.stat().st_mode & 0o777 == 0o644
    # outside the face the result shows the source's colours (no matrix mix-up on the way through)
    x1, y1, x2, y2 = report.boxes[0]
    src, res = next(iter_frames(source))[0], next(iter_frames(out))[0]
    keep = np.ones(src.shape[:2], bool)
    keep[y1:y2, x1:x2] = False
    assert _psnr(res[keep], src[keep]) > 40
