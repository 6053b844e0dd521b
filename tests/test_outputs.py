"""What a user finds in the output folder: normal file permissions, the source's colour tags (BT.709 / BT.601,
range) on the result and the side-by-side, and no leftovers or tracebacks when a CLI job is stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MEDIA, REPO, need_shared, run_ffmpeg, small_pipeline

from lipsync.job import JobOptions
from lipsync.engine import LipSyncEngine
from lipsync.media.writer import VideoWriter
from lipsync.media.probe import find_ffprobe, probe_video
from lipsync.media.reader import iter_frames

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


# ------------------------------------------------------------------------------------------ stopping the CLI


@pytest.fixture(scope="module")
def cli_job(tmp_path_factory):
    """A small saved model, a 24-frame face clip and 3 s of audio (75 output frames): the CLI's arguments."""
    need_shared(MEDIA)
    folder = tmp_path_factory.mktemp("cli_job")
    checkpoint = folder / "model"
    small_pipeline().save_pretrained(checkpoint)
    video, audio = folder / "face.mp4", folder / "speech.wav"
    run_ffmpeg("-i", str(MEDIA / "pub_video2_retalking_face5.mp4"), "-frames:v", "24", "-vf", "scale=256:256",
               "-an", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(video))
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:sample_rate=16000:duration=3", str(audio))
    return ["--video", str(video), "--audio", str(audio), "--checkpoint", str(checkpoint), "--detector", "opencv",
            "--steps", "2", "--batch-size", "4", "--quiet"]


def _start_cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lipsync", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the CLI ended (status {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode("utf-8", "replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_sigterm_mid_run_leaves_the_output_folder_empty(cli_job, tmp_path):
    out_dir = tmp_path / "outputs"
    out_dir.mkdir()
    proc = _start_cli([*cli_job, "--output", str(out_dir / "result.mp4"), "--side-by-side"])
    # stop it while it encodes: the hidden temporary files exist
    _wait_for(lambda: any(p.name.endswith(".video.mp4") for p in out_dir.iterdir()), proc, "encoding started")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert list(out_dir.iterdir()) == []
    assert _processes_mentioning(str(out_dir)) == []  # no ffmpeg left behind either


@pytest.mark.parametrize("audio", ["empty", "short", "silent_video"])
def test_bad_audio_is_exactly_one_line(cli_job, tmp_path, audio):
    """Unreadable, too short or missing audio: one ``error:`` line on stderr, no progress line before it."""
    bad = {"empty": tmp_path / "empty.wav", "short": tmp_path / "short.wav", "silent_video": tmp_path / "mute.mp4"}
    bad["empty"].write_bytes(b"")
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:sample_rate=16000:duration=0.1", str(bad["short"]))
    run_ffmpeg("-f", "lavfi", "-i", "color=gray:s=64x64:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
               str(bad["silent_video"]))
    args = [*cli_job]
    args[args.index("--audio") + 1] = str(bad[audio])
    args.remove("--quiet")  # progress lines on: none may come before the error
    result = subprocess.run([sys.executable, "-m", "lipsync", *args, "--output", str(tmp_path / "out.mp4")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("library", ["numpy", "libtorch"])
def test_ctrl_c_during_start_up_prints_one_line(cli_job, tmp_path, library):
    out_dir = tmp_path / "outputs"
    out_dir.mkdir()
    proc = _start_cli([*cli_job, "--output", str(out_dir / "result.mp4")])
    maps = Path(f"/proc/{proc.pid}/maps")
    # interrupt while it is still importing (numpy: the engine's first imports; libtorch: the model code)
    _wait_for(lambda: library in maps.read_text(errors="replace"), proc, f"{library} is being loaded")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert stderr.strip() == "error: interrupted; no output was written"
    assert list(out_dir.iterdir()) == []


def test_ctrl_c_turned_into_another_error_by_a_library_still_reads_as_interrupted(monkeypatch, capsys):
    # numpy's start-up turns a Ctrl-C that lands in its C initialisation into an ImportError
    from lipsync import cli

    def run_that_a_library_interrupts(argv):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt as exc:
            raise ImportError('PyCapsule_Import could not import module "datetime"') from exc
        return 0

    monkeypatch.setattr(cli, "_run", run_that_a_library_interrupts)
    assert threading.current_thread() is threading.main_thread()
    assert cli.main([]) == 130
    assert capsys.readouterr().err.strip() == "error: interrupted; no output was written"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back

    def run_with_a_real_bug(argv):
        raise ImportError("no module named nothing")

    monkeypatch.setattr(cli, "_run", run_with_a_real_bug)
    with pytest.raises(ImportError):  # without a signal, an error stays an error
        cli.main([])


def test_ctrl_c_raised_inside_a_finaliser_still_stops_the_job(monkeypatch, capsys):
    # garbage collection can run a __del__ just as Ctrl-C arrives; Python swallows exceptions raised there
    from lipsync import cli

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # the handler runs here, inside the finaliser

    worked = []

    def job(argv):
        Finalised()  # dropped at once: its __del__ runs
        for _ in range(100):  # 5 s of work that the interrupt must stop
            time.sleep(0.05)
            worked.append(1)
        return 1

    monkeypatch.setattr(cli, "_run", job)
    hook = sys.unraisablehook
    assert cli.main([]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "error: interrupted; no output was written", err  # no "Exception ignored" traceback
    assert len(worked) < 20  # stopped at once, not after the job's 5 s
    assert sys.unraisablehook is hook  # given back


# ------------------------------------------------------------------------------------------ the report


def _report(policy: str, num_source: int, num_output: int):
    from lipsync.job import JobReport, source_indices

    index = source_indices(num_source, num_output, policy)
    used = int(index.max()) + 1
    return JobReport(output=Path("out.mp4"), side_by_side=None, frames=num_output, fps=25.0, width=524, height=524,
                     faces_found=used - 2, faces_missing=0, faces_interpolated=2, seconds={"diffusion": 3.0},
                     duration=num_output / 25, valid=np.ones(used, bool), source_index=index)


def test_summary_says_the_face_counts_are_per_source_frame():
    text = _report("pingpong", 122, 161).summary()
    assert ("161 frames at 25 fps (6.44 s, 524x524), showing 122 source frames played forward and backward "
            "(ping-pong); per source frame: faces found in 120, interpolated 2, missing 0") in text
    looped = _report("loop", 122, 161).summary()
    assert "showing 122 source frames looped; per source frame: faces found in 120" in looped
    plain = _report("loop", 122, 100).summary()  # each source frame once: no note needed
    assert "(4.00 s, 524x524); faces found in 98, interpolated 2" in plain and "per source frame" not in plain
    table = _report("pingpong", 122, 161).as_markdown()
    assert "| source frames | 122 source frames played forward and backward (ping-pong) |" in table
    assert "| faces found (per source frame) | 120 |" in table
