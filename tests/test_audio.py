"""Audio front end: parity with the official Diff2Lip mel / windows, loading of real formats, errors."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import FIXTURES, MEDIA
from conftest import need_shared as _need
from conftest import run_ffmpeg as _ffmpeg

from lipsync.media.audio import (
    DEFAULT_AUDIO,
    AudioConfig,
    audio_duration,
    frames_for_audio,
    load_audio,
    mel_windows,
    melspectrogram,
    num_windows,
)
from lipsync.errors import AudioTooShortError, InvalidMediaError, NoAudioError


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(_need(FIXTURES / "speech_16k.wav"))


@pytest.fixture(scope="module")
def mel(speech) -> np.ndarray:
    return melspectrogram(speech)


# ---------------------------------------------------------------------------------------------- reference


def test_load_audio_is_bit_identical_to_int16_over_32768(speech):
    raw, rate = sf.read(str(FIXTURES / "speech_16k.wav"), dtype="int16")
    assert rate == 16000
    assert speech.dtype == np.float32
    assert speech.shape == (60716,)
    np.testing.assert_array_equal(speech, raw.astype(np.float32) / 32768.0)


def test_melspectrogram_equals_reference(mel):
    reference = np.load(_need(FIXTURES / "mel_reference.npy"))
    assert mel.dtype == np.float64
    assert mel.shape == reference.shape == (80, 1 + 60716 // 200)
    assert np.abs(mel - reference).max() <= 1e-9


def test_mel_windows_25fps_equal_reference(mel):
    reference = np.load(_need(FIXTURES / "mel_windows_25fps.npy"))
    windows = mel_windows(mel, 25)
    assert windows.dtype == np.float32
    assert windows.shape == reference.shape == (92, 80, 16)
    assert np.abs(windows - reference.astype(np.float32)).max() <= 1e-6
    # the reference's one-frame-late quirk: frames 0 and 1 share the first window
    np.testing.assert_array_equal(windows[0], windows[1])
    assert num_windows(mel.shape[1], 25) == 92


def test_window_count_follows_reference_loop_for_many_lengths():
    # Brute force of the reference loop: count windows until the first that does not fit.
    for fps in (25, 24, Fraction(30000, 1001), 50, 60):
        for columns in range(16, 200, 7):
            n = 0
            while math.floor(80 * max(n - 1, 0) / Fraction(fps)) + 16 <= columns:
                n += 1
            assert num_windows(columns, fps) == n, (fps, columns)


# ----------------------------------------------------------------------------------------- generalisation


def _ramp_mel(columns: int) -> np.ndarray:
    """(80, columns) mel whose every value is its own column index, so a window reveals its start."""
    return np.tile(np.arange(columns, dtype=np.float64), (80, 1))


def test_windows_at_50fps_start_at_time_of_previous_frame():
    windows = mel_windows(_ramp_mel(400), 50)
    starts = windows[:, 0, 0].astype(int)
    assert starts.tolist() == [math.floor(80 * max(n - 1, 0) / 50) for n in range(len(windows))]
    assert starts[:5].tolist() == [0, 0, 1, 3, 4]
    # 242 windows fit: the last starts at column 384 (ends at 400), the next would start at 385
    assert len(windows) == num_windows(400, 50) == 242
    assert starts[-1] == 384


def test_windows_at_29_97fps_follow_exact_time():
    mel = _ramp_mel(3000)  # 37.5 s
    ntsc = mel_windows(mel, Fraction(30000, 1001))[:, 0, 0].astype(int)
    # frame n starts at (n - 1) * 1001 / 30000 s -> column floor(80 * that)
    assert ntsc[1000] == (80 * 999 * 1001) // 30000 == 2666
    assert (80 * 999) // 30 == 2664  # a 30 fps assumption would be 2 columns (25 ms) early here
    assert ntsc.tolist() == [(80 * max(n - 1, 0) * 1001) // 30000 for n in range(len(ntsc))]
    # float(30000/1001) is read as the exact NTSC rate, 29.97 as exactly 2997/100
    np.testing.assert_array_equal(mel_windows(mel, 30000 / 1001)[:, 0, 0], ntsc)
    decimal = mel_windows(mel, 29.97)[:, 0, 0].astype(int)
    assert decimal.tolist() == [(80 * max(n - 1, 0) * 100) // 2997 for n in range(len(decimal))]


def test_audio_offset_shifts_windows_by_whole_frames():
    mel = _ramp_mel(300)
    base = mel_windows(mel, 25, num_frames=20)[:, 0, 0].astype(int)
    later = mel_windows(mel, 25, num_frames=20, audio_offset=2)[:, 0, 0].astype(int)
    earlier = mel_windows(mel, 25, num_frames=20, audio_offset=-3)[:, 0, 0].astype(int)
    assert later.tolist() == [(80 * max(n + 1, 0)) // 25 for n in range(20)]
    assert later[5] == base[7]
    assert earlier.tolist() == [(80 * max(n - 4, 0)) // 25 for n in range(20)]
    assert num_windows(300, 25, audio_offset=2) == num_windows(300, 25) - 2
    assert num_windows(300, 25, audio_offset=-3) == num_windows(300, 25) + 3


def test_num_frames_pads_by_clamping_to_the_last_window():
    mel = _ramp_mel(100)
    fit = num_windows(100, 25)
    windows = mel_windows(mel, 25, num_frames=fit + 5)
    assert windows.shape == (fit + 5, 80, 16)
    starts = windows[:, 0, 0].astype(int)
    assert starts[fit - 1] <= 84
    assert (starts[fit:] == 84).all()  # the final 16 columns, ending at the last one
    np.testing.assert_array_equal(windows[-1, 0], np.arange(84, 100))
    assert mel_windows(mel, 25, num_frames=3).shape == (3, 80, 16)


def test_too_short_audio_raises_with_the_needed_length(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(str(path), (0.1 * np.sin(np.arange(1600) / 5.0)).astype(np.float32), 16000, subtype="PCM_16")
    wav = load_audio(path)
    assert len(wav) == 1600
    with pytest.raises(AudioTooShortError, match=r"0\.1 s long; at least 0\.2 s"):
        mel_windows(melspectrogram(wav), 25)
    # 3000 samples (0.1875 s) is the first length with one full window
    assert mel_windows(melspectrogram(np.zeros(3000, np.float32)), 25).shape[0] >= 1


# ------------------------------------------------------------------------------------------------ loading


def test_44k_stereo_is_resampled_to_16k_mono():
    path = _need(MEDIA / "pub_audio2_retalking_audio1_44k_stereo.wav")
    wav = load_audio(path)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels) == (44100, 2)
    # ffprobe rounds the duration to 5.016 s; the file holds 221184 frames = 5.01551 s -> 80248.2 samples
    assert abs(len(wav) - info.frames * 16000 / 44100) <= 1
    assert abs(audio_duration(wav, 16000) - 5.016) < 0.002
    assert wav.dtype == np.float32 and np.abs(wav).max() <= 1.0
    # mono mixdown: the mean of the channels (compare energy with a crude reference)
    stereo, _ = sf.read(str(path), dtype="float32")
    assert np.isclose(np.sqrt(np.mean(wav**2)), np.sqrt(np.mean(stereo.mean(axis=1) ** 2)), rtol=0.05)


def test_16k_stereo_is_the_mean_of_its_channels_like_librosa():
    path = _need(MEDIA / "pub_audio3_sadtalker_radio31_en_16k_stereo.wav")
    stereo, rate = sf.read(str(path), dtype="float32")  # (num_samples, 2), int16 / 32768
    assert rate == 16000 and stereo.shape[1] == 2
    np.testing.assert_array_equal(load_audio(path), stereo.mean(axis=1))


def test_audio_track_of_an_mp4_is_extracted():
    wav = load_audio(_need(MEDIA / "pub_video1_retalking_face2.mp4"))
    assert abs(len(wav) / 16000 - 5.0) < 0.05
    assert np.abs(wav).max() > 0.05  # speech, not silence


@pytest.fixture(scope="module")
def encoded_formats(tmp_path_factory) -> dict[str, Path]:
    source = _need(MEDIA / "pub_audio1_latentsync_demo1_16k_mono.wav")
    folder = tmp_path_factory.mktemp("formats")
    recipes = {
        "flac": ["-c:a", "flac"],
        "mp3": ["-c:a", "libmp3lame", "-b:a", "96k"],
        "m4a": ["-c:a", "aac", "-b:a", "96k"],
        "ogg": ["-c:a", "libvorbis"],
        "wav": ["-ar", "48000", "-c:a", "pcm_s24le"],
    }
    out = {}
    for ext, codec in recipes.items():
        path = folder / f"speech.{ext}"
        _ffmpeg("-t", "3", "-i", str(source), *codec, str(path))
        out[ext] = path
    return out


@pytest.mark.parametrize("ext", ["flac", "mp3", "m4a", "ogg", "wav"])
def test_common_formats_load_with_the_right_duration(encoded_formats, ext):
    wav = load_audio(encoded_formats[ext])
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(audio_duration(wav) - 3.0) <= 0.02, len(wav)
    assert 0.05 < np.abs(wav).max() <= 1.0


def test_flac_is_lossless(encoded_formats):
    source, _ = sf.read(str(MEDIA / "pub_audio1_latentsync_demo1_16k_mono.wav"), dtype="int16", frames=48000)
    np.testing.assert_array_equal(load_audio(encoded_formats["flac"]), source.astype(np.float32) / 32768.0)


def test_text_file_renamed_wav_is_invalid_media(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(InvalidMediaError, match="notes.wav could not be read") as info:
        load_audio(path)
    assert "audio or video file ffmpeg can read" in str(info.value)
    assert not isinstance(info.value, NoAudioError)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(InvalidMediaError, match="missing.mp3 does not exist"):
        load_audio(tmp_path / "missing.mp3")


def test_video_without_audio_raises_no_audio(tmp_path):
    path = tmp_path / "silent.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=0.5", "-c:v", "libx264", str(path))
    with pytest.raises(NoAudioError, match="silent.mp4 has no audio track; upload a file with speech"):
        load_audio(path)


# -------------------------------------------------------------------------------------------------- sizing


def test_frames_for_audio_rounds_to_nearest_frame():
    assert frames_for_audio(3.79475, 25) == 95  # 94.87
    assert frames_for_audio(1.0, Fraction(30000, 1001)) == 30  # 29.97
    assert frames_for_audio(0.01, 25) == 1  # never zero
    assert frames_for_audio(0.1, 25) == 3  # 2.5 rounds up
    assert audio_duration(np.zeros(8000, np.float32), 16000) == 0.5


def test_config_defaults_match_reference_hparams():
    config = AudioConfig()
    assert config == DEFAULT_AUDIO
    assert (config.sample_rate, config.n_fft, config.hop_size, config.num_mels) == (16000, 800, 200, 80)
    assert config.mel_fps == config.sample_rate // config.hop_size == 80
    assert config.min_duration_s == pytest.approx(0.2)
