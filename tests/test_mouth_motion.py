"""The weight-free mouth-motion check (lipsync.scoring.mouth_motion): the correlation helper on synthetic
series, and the whole check on a synthetic talking clip (a real face whose mouth opens with a synthetic
speech envelope, FaceMesh measuring it), plus the no-face error and the command."""

import json
import math
import wave
from fractions import Fraction

import numpy as np
import pytest
from conftest import MEDIA, REPO, need_shared

from lipsync.errors import LipSyncError, NoFaceError
from lipsync.scoring.mouth_motion import (
    MouthMotionSync,
    MouthTracker,
    lagged_correlation,
    mouth_motion_sync,
    speech_envelope,
    sync_from_series,
)

FPS = 25
SR = 16000
NUM_FRAMES = 100
DELAY = 2  # frames the drawn mouth lags the synthetic speech


def burst_envelope(num_frames: int, seed: int) -> np.ndarray:
    """Syllable-like loudness per frame: bursts of 3-7 frames at random levels, 2-5 silent frames between."""
    rng = np.random.default_rng(seed)
    env = np.zeros(num_frames)
    i = 3
    while i < num_frames - 4:
        length = int(rng.integers(3, 8))
        env[i:i + length] = rng.uniform(0.3, 1.0)
        i += length + int(rng.integers(2, 6))
    return env


def delayed(series: np.ndarray, delay: int) -> np.ndarray:
    return np.concatenate([np.zeros(delay), series[: len(series) - delay]])


# ----------------------------------------------------------------------------------------------------------
# Series


def test_lagged_correlation_finds_the_delay():
    env = burst_envelope(300, seed=1)
    rng = np.random.default_rng(2)
    opening = 0.1 + 0.05 * delayed(env, DELAY) + 0.005 * rng.standard_normal(300)  # follows the audio
    lags, r = lagged_correlation(opening, env, max_lag=5)
    assert list(lags) == list(range(-5, 6))
    assert lags[np.argmax(r)] == DELAY and r.max() > 0.9
    # the mouth leading the audio gives the negative lag
    lags, r = lagged_correlation(env[DELAY:], env[:-DELAY], max_lag=5)
    assert lags[np.argmax(r)] == -DELAY and r.max() > 0.99


def test_lagged_correlation_skips_nan_frames():
    env = burst_envelope(300, seed=3)
    opening = 0.1 + 0.05 * delayed(env, 3)
    opening[::7] = np.nan   # frames without a face
    env_cut = env.copy()
    env_cut[-20:] = np.nan  # frames past the end of the audio
    lags, r = lagged_correlation(opening, env_cut, max_lag=5)
    assert np.isfinite(r).all()
    assert lags[np.argmax(r)] == 3 and r.max() > 0.99


def test_lagged_correlation_of_unrelated_series_is_near_zero():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal(1000), rng.standard_normal(1000)
    _, r = lagged_correlation(a, b, max_lag=5)
    assert np.abs(r).max() < 0.12  # 11 lags of r ~ N(0, 1/sqrt(1000))
    # bursty speech against an opening that follows other speech: no lag stands out
    env, other = burst_envelope(1000, seed=5), burst_envelope(1000, seed=6)
    _, r = lagged_correlation(0.1 + 0.05 * delayed(other, DELAY), env, max_lag=5)
    assert np.abs(r).max() < 0.15


def test_lagged_correlation_edge_cases():
    _, r = lagged_correlation(np.full(50, 0.1), burst_envelope(50, seed=7), max_lag=2)  # a still mouth
    assert np.isnan(r).all()
    _, r = lagged_correlation(burst_envelope(50, seed=7), np.zeros(50), max_lag=2)  # silence
    assert np.isnan(r).all()
    _, r = lagged_correlation(np.array([0.1, 0.2]), np.array([0.3, 0.1]), max_lag=1)  # too few frames
    assert np.isnan(r).all()
    with pytest.raises(ValueError):
        lagged_correlation(np.zeros(5), np.zeros(5), max_lag=-1)
    result = sync_from_series(np.full(50, 0.1), burst_envelope(50, seed=7), FPS, max_lag=2)
    assert result.peak_lag is None and math.isnan(result.peak_correlation)
    assert result.as_dict()["peak_correlation"] is None
    json.dumps(result.as_dict())


def test_speech_envelope_is_the_rms_of_each_frame_window():
    levels = np.array([0.0, 0.5, 0.25, 1.0])
    wav = np.repeat(levels, SR // FPS) * np.where(np.arange(len(levels) * SR // FPS) % 2, 1.0, -1.0)
    env = speech_envelope(wav, FPS, num_frames=6)
    np.testing.assert_allclose(env[:4], levels, atol=1e-12)
    assert np.isnan(env[4:]).all()  # past the end of the audio
    # the video starts 1 frame after the audio in the file: frame 0 reads the audio's second frame
    np.testing.assert_allclose(speech_envelope(wav, FPS, 3, offset_s=1 / FPS), levels[1:], atol=1e-12)
    # a 30000/1001 fps clip: windows of 533.87 samples, cut at whole samples
    env = speech_envelope(np.ones(SR), Fraction(30000, 1001), 29)
    np.testing.assert_allclose(env, 1.0)


# ----------------------------------------------------------------------------------------------------------
# A synthetic talking clip


def write_wav(path, wav: np.ndarray) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SR)
        handle.writeframes((np.clip(wav, -1, 1) * 32767).astype("<i2").tobytes())


def synthetic_speech(env: np.ndarray, seed: int) -> np.ndarray:
    """A buzzy voice (150 Hz and harmonics, some noise) whose loudness in frame i is env[i]."""
    rng = np.random.default_rng(seed)
    t = np.arange(len(env) * SR // FPS) / SR
    voice = sum(np.sin(2 * np.pi * 150 * h * t) / h for h in range(1, 6)) + 0.2 * rng.standard_normal(len(t))
    return (0.25 * np.repeat(env, SR // FPS) * voice / np.abs(voice).max()).astype(np.float32)


def open_mouth(face: np.ndarray, points: np.ndarray, drop: float) -> np.ndarray:
    """``face`` with the jaw dropped by ``drop`` pixels: everything below the lips' meeting line moves down
    (tapering off beside the mouth and below the chin) and the gap is a dark mouth cavity."""
    import cv2

    h, w = face.shape[:2]
    xc = (points[78, 0] + points[308, 0]) / 2   # inner mouth corners
    half = (points[308, 0] - points[78, 0]) / 2
    y0 = (points[13, 1] + points[14, 1]) / 2    # where the inner lips meet
    chin = points[152, 1]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    across = np.clip(1 - (np.abs(xx - xc) - 1.3 * half) / (1.2 * half), 0, 1)
    down = np.where(yy < y0, 0, np.clip(1 - (yy - chin) / 30, 0, 1))
    out = cv2.remap(face, xx, (yy - drop * across * down).astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    if drop >= 1:
        cv2.ellipse(out, (int(round(xc)), int(round(y0 + drop / 2))), (int(0.85 * half), int(round(drop / 2))),
                    0, 0, 360, (45, 15, 20), -1, cv2.LINE_AA)
    return out


def face_source(name: str) -> np.ndarray:
    from lipsync.media.reader import iter_frames, read_image

    if name == "asset":
        return read_image(REPO / "assets" / "example_face.png")  # 256 x 256 face crop
    import cv2

    frame = next(iter(iter_frames(need_shared(MEDIA / "pub_video1_retalking_face2.mp4"), count=1)))[0]
    return cv2.resize(frame, (422, 422), interpolation=cv2.INTER_AREA)  # 844 px halved: a faster clip


@pytest.fixture(scope="module", params=["asset", "pub_video1"])
def talking_clip(request, tmp_path_factory):
    """(clip.mp4 with the speech muxed, speech.wav, other_speech.wav, drawn jaw drop per frame): the mouth
    opens DELAY frames after the speech gets loud, in proportion to its loudness."""
    from lipsync.media.writer import VideoWriter

    folder = tmp_path_factory.mktemp(f"mouth_motion_{request.param}")
    face = face_source(request.param)
    with MouthTracker(video=False) as tracker:
        points = tracker.landmarks(face)
    assert points is not None, "FaceMesh finds no face in the source frame"
    env = burst_envelope(NUM_FRAMES, seed=10)
    eye_distance = float(np.linalg.norm(points[33] - points[263]))
    drops = 0.25 * eye_distance * delayed(env, DELAY)  # up to a quarter of the eye distance
    frames = np.stack([open_mouth(face, points, d) for d in drops])
    write_wav(folder / "speech.wav", synthetic_speech(env, seed=11))
    write_wav(folder / "other_speech.wav", synthetic_speech(burst_envelope(NUM_FRAMES, seed=12), seed=13))
    with VideoWriter(folder / "clip.mp4", fps=FPS, size=(face.shape[1], face.shape[0]),
                     audio_path=folder / "speech.wav") as writer:
        writer.write(frames)
        writer.finish()
    return folder / "clip.mp4", folder / "speech.wav", folder / "other_speech.wav", drops


def test_the_check_finds_the_mouth_following_the_speech(talking_clip):
    clip, speech, _, drops = talking_clip
    result = mouth_motion_sync(clip, speech)
    assert isinstance(result, MouthMotionSync)
    assert result.num_frames == result.frames_measured == result.frames_with_face == NUM_FRAMES
    # FaceMesh tracks the drawn mouth: the measured openings follow the drawn jaw drop
    assert np.corrcoef(result.openings, drops)[0, 1] > 0.9
    assert result.peak_lag == DELAY and result.peak_correlation > 0.8
    assert result.correlations[DELAY] == result.peak_correlation
    assert result.correlations[0] < result.peak_correlation - 0.3
    assert result.confidence > 0.5
    info = result.as_dict()
    assert info["peak_lag"] == DELAY and sorted(int(k) for k in info["correlations"]) == list(range(-5, 6))
    json.dumps(info)


def test_the_clip_against_its_own_track_and_other_speech(talking_clip):
    clip, _, other, _ = talking_clip
    own = mouth_motion_sync(clip, clip, max_lag=3)  # the AAC track muxed into the clip
    assert own.peak_lag == DELAY and own.peak_correlation > 0.8
    assert sorted(own.correlations) == list(range(-3, 4))
    mismatched = mouth_motion_sync(clip, other)
    assert mismatched.peak_correlation < own.peak_correlation - 0.4


def test_max_frames_reads_only_the_start(talking_clip):
    clip, speech, _, _ = talking_clip
    result = mouth_motion_sync(clip, speech, max_lag=2, max_frames=40)
    assert result.num_frames == 40 and result.peak_lag == DELAY


def test_a_clip_without_a_face_is_a_clear_error(tmp_path):
    from lipsync.media.writer import VideoWriter

    rng = np.random.default_rng(0)
    frames = np.clip(120 + 20 * rng.standard_normal((12, 128, 128, 3)), 0, 255).astype(np.uint8)
    with VideoWriter(tmp_path / "noface.mp4", fps=FPS, size=(128, 128)) as writer:
        writer.write(frames)
        writer.finish()
    write_wav(tmp_path / "speech.wav", synthetic_speech(burst_envelope(12, seed=1), seed=2))
    with pytest.raises(NoFaceError, match="no face was found in any of the 12 frames of noface.mp4"):
        mouth_motion_sync(tmp_path / "noface.mp4", tmp_path / "speech.wav")
    assert issubclass(NoFaceError, LipSyncError)

    from lipsync.mouth_motion import main

    assert main([str(tmp_path / "noface.mp4"), str(tmp_path / "speech.wav")]) == 1


def test_the_command_prints_one_line_and_writes_json(talking_clip, tmp_path, capsys):
    from lipsync.mouth_motion import main

    clip, speech, _, _ = talking_clip
    assert main([str(clip), str(speech), "--max-frames", "50", "--json", str(tmp_path / "r.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and f"lag +{DELAY} frames" in lines[0] and "50/50 frames" in lines[0]
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["peak_lag"] == DELAY and data["num_frames"] == 50
    assert main([str(clip), str(tmp_path / "missing.wav")]) == 1
    assert "error:" in capsys.readouterr().err
