"""Frame-exact seeking: a seek to frame k returns the frame a decode from the start numbers k, on clips whose
video starts after 0 (start offset, edit list, audio-first mux, odd time bases, variable rate); the engine's
backward ping-pong half, reference frame and preview read the right frames on such a clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import MEDIA, need_shared, run_ffmpeg, small_pipeline

from lipsync.job import JobOptions
from lipsync.engine import LipSyncEngine
from lipsync.media.reader import iter_frames
from lipsync.media.probe import probe_video

PATTERN = "testsrc2=size=96x64:rate={rate}:duration={seconds}"


def _source(tmp_path: Path, rate: str = "25", seconds: float = 1.6, gop: int = 8, extra=()) -> Path:
    """An H.264 clip with B-frames and a keyframe every ``gop`` frames; every frame differs (testsrc2)."""
    path = tmp_path / f"source_{rate.replace('/', '_')}_{len(extra)}.mp4"
    run_ffmpeg("-f", "lavfi", "-i", PATTERN.format(rate=rate, seconds=seconds), *extra, "-c:v", "libx264",
               "-preset", "ultrafast", "-g", str(gop), "-bf", "2", "-pix_fmt", "yuv420p", str(path))
    return path


def _late_video(tmp_path: Path, source: Path, offset: float, name: str, audio_codec: str = "aac",
                cut: float | None = None) -> Path:
    """``source``'s video starting ``offset`` s after an audio track that starts at 0 (stream copy)."""
    path = tmp_path / name
    cut_args = ["-ss", str(cut)] if cut is not None else []
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000:duration=3",
               "-itsoffset", str(offset), *cut_args, "-i", str(source),
               "-map", "1:v", "-map", "0:a", "-c:v", "copy", "-c:a", audio_codec, str(path))
    return path


def _clip(kind: str, tmp_path: Path) -> Path:
    if kind == "mp4_start_offset":  # the video track starts 0.85 s in (an empty edit in the edit list)
        return _late_video(tmp_path, _source(tmp_path), 0.85, "late.mp4")
    if kind == "mkv_audio_first":  # Matroska: the first video timestamp is 853 ms, the audio starts at 0
        return _late_video(tmp_path, _source(tmp_path), 0.853, "late.mkv", audio_codec="libvorbis")
    if kind == "ntsc_90k_time_base":  # 30000/1001 fps counted in 1/90000 s, starting at 1.234 s
        source = tmp_path / "ntsc.mp4"
        run_ffmpeg("-f", "lavfi", "-i", PATTERN.format(rate="30000/1001", seconds=1.4), "-c:v", "libx264",
                   "-preset", "ultrafast", "-g", "15", "-pix_fmt", "yuv420p", "-video_track_timescale", "90000",
                   str(source))
        return _late_video(tmp_path, source, 1.234, "ntsc_late.mp4")
    if kind == "edit_list_cut":  # a cut between keyframes: the edit list hides the leading decoded frames
        path = tmp_path / "cut.mp4"
        run_ffmpeg("-ss", "1.3", "-i", str(_source(tmp_path, seconds=2.8, gop=12)), "-c", "copy", str(path))
        return path
    if kind == "edit_list_start_offset":  # a cut (edit list with a media time) re-muxed to start 0.85 s in
        cut = tmp_path / "cut.mp4"
        run_ffmpeg("-ss", "0.7", "-i", str(_source(tmp_path, seconds=2.2, gop=12)), "-c", "copy", str(cut))
        return _late_video(tmp_path, cut, 0.85, "cut_late.mp4")
    if kind == "variable_rate_offset":  # 25 fps for 1 s, then 12.5 fps; starts 0.37 s after the audio
        vfr = _source(tmp_path, extra=("-vf", "setpts='if(lt(N,25),N/25,1+(N-25)/12.5)/TB'",
                                                     "-fps_mode", "passthrough"))
        return _late_video(tmp_path, vfr, 0.37, "vfr_late.mp4")
    raise AssertionError(kind)


KINDS = ["mp4_start_offset", "mkv_audio_first", "ntsc_90k_time_base", "edit_list_cut", "edit_list_start_offset",
         "variable_rate_offset"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_seek_lands_on_the_sequential_frame(tmp_path, kind):
    path = _clip(kind, tmp_path)
    info = probe_video(path)
    sequential = np.concatenate(list(iter_frames(path, chunk_size=16, info=info)))  # (N, 64, 96, 3)
    n = len(sequential)
    assert n >= 30
    # every frame is different (a variable-rate source has repeats), so a seek that lands on a neighbour fails
    distinct = len({frame.tobytes() for frame in sequential})
    assert distinct == n or (kind == "variable_rate_offset" and distinct >= n // 2)
    if kind != "edit_list_cut":
        assert info.video_start > 0.3  # the case that used to be off by video_start * fps frames
    for k in range(n):
        fresh = probe_video(path) if k % 10 == 3 else info  # also find the first frame's timestamp anew
        frame = next(iter_frames(path, chunk_size=1, info=fresh, start=k, count=1))[0]
        assert np.array_equal(frame, sequential[k]), f"seek to {k} returned another frame"
    # a seek reads on frame-exactly for several chunks, and a seek past the end yields nothing more
    k = n // 3
    tail = np.concatenate(list(iter_frames(path, chunk_size=7, info=info, start=k)))
    np.testing.assert_array_equal(tail, sequential[k:])


@pytest.fixture(scope="module")
def late_face_clip(tmp_path_factory):
    """24 frames of a real face clip (keyframe every 6) with a moving pattern in the top-left corner, its
    video starting 0.85 s after its audio; and a 1.6 s driving audio (ping-pong: 24 forward, 16 backward)."""
    need_shared(MEDIA)
    folder = tmp_path_factory.mktemp("late_face")
    face = folder / "face.mp4"
    run_ffmpeg("-i", str(MEDIA / "pub_video2_retalking_face5.mp4"), "-f", "lavfi", "-i",
               "testsrc2=size=96x64:rate=25", "-filter_complex", "[0:v]scale=256:256[f];[f][1:v]overlay=0:0",
               "-frames:v", "24", "-an", "-c:v", "libx264", "-preset", "ultrafast", "-g", "6", "-bf", "2",
               "-crf", "16", "-pix_fmt", "yuv420p", str(face))
    late = _late_video(folder, face, 0.85, "late_face.mp4")
    audio = folder / "speech.wav"
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:sample_rate=16000:duration=1.6", str(audio))
    return late, audio


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def test_pingpong_backward_half_reference_and_preview_are_frame_exact(late_face_clip, tmp_path):
    video, audio = late_face_clip
    assert probe_video(video).video_start == pytest.approx(0.85, abs=0.01)
    source = np.concatenate(list(iter_frames(video)))  # (24, 256, 256, 3)
    engine = LipSyncEngine(pipeline=small_pipeline(), detector="opencv")
    out = tmp_path / "out.mp4"
    report = engine.run(video, audio, out, JobOptions(num_inference_steps=1, detector="opencv",
                                                      length_policy="pingpong", side_by_side=False,
                                                      reference_frame=20, chunk_frames=8))
    result = np.concatenate(list(iter_frames(out)))
    assert len(result) == report.frames == 40
    assert report.source_index[30].item() == 16  # the backward half
    corner = (slice(0, 64), slice(0, 96))  # the counter pattern, far from the face box
    for j, k in enumerate(report.source_index):
        x1, y1, x2, y2 = report.boxes[k]
        assert x1 >= 96 or y1 >= 64, "the face box must leave the corner pattern alone"
        outside = np.ones(result.shape[1:3], bool)
        outside[y1:y2, x1:x2] = False
        outside[corner] = False  # the saturated pattern loses more to H.264; it is checked below
        assert _psnr(result[j][outside], source[k][outside]) >= 40, f"output frame {j} is not source frame {k}"
        # the closest source frame in the corner is the one the timeline names (neighbours differ there)
        scores = [_psnr(result[j][corner], candidate[corner]) for candidate in source]
        assert int(np.argmax(scores)) == k, f"output frame {j} shows source frame {int(np.argmax(scores))}, not {k}"

    # the reference face is cropped from frame 20 itself
    from lipsync.media.crop import crop_faces
    from lipsync.job import FACE_SIZE
    from lipsync.engine import STAGES
    from lipsync.media.stages import StageTimer

    plan = engine._plan(video, audio, JobOptions(num_inference_steps=1, detector="opencv", reference_frame=20,
                                                 side_by_side=False), StageTimer(STAGES), None)
    plan.source.close()
    expected = crop_faces(source[20:21], plan.boxes[20:21], FACE_SIZE)[0]
    np.testing.assert_array_equal(plan.reference, expected)

    # the app's preview of frame k shows frame k (compare the corner, which the preview does not draw on)
    for k in (0, 13, 23):
        preview = engine.preview_frame(video, k, JobOptions(detector="opencv"))
        np.testing.assert_array_equal(preview[corner], source[k][corner])
