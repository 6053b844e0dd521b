"""Audio front end: any audio/video file -> 16 kHz mono -> mel (80, T) -> one mel window per frame.

The mel spectrogram reproduces the Wav2Lip / Diff2Lip ``audio.melspectrogram`` exactly (see the fixtures
README section 6), and :func:`mel_windows` reproduces Diff2Lip's ``load_all_indiv_mels`` alignment at 25 fps,
including its one-frame-late quirk (README section 9.1), generalised to any frame rate by exact time
arithmetic.
"""

from __future__ import annotations

import functools
import math
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import librosa
import numpy as np
from scipy import signal

from lipsync.errors import AudioTooShortError, InvalidMediaError, NoAudioError
from lipsync.media.probe import as_fraction, find_ffmpeg, probe_streams

__all__ = [
    "AudioConfig",
    "DEFAULT_AUDIO",
    "load_audio",
    "melspectrogram",
    "mel_windows",
    "num_windows",
    "window_starts",
    "audio_duration",
    "frames_for_audio",
]


@dataclass(frozen=True)
class AudioConfig:
    """Hyper-parameters of the Wav2Lip/Diff2Lip audio front end (the official ``hparams`` values)."""

    sample_rate: int = 16000
    n_fft: int = 800
    hop_size: int = 200
    win_size: int = 800
    num_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0
    mel_step_size: int = 16  # window length in mel columns (0.2 s)
    mel_fps: int = 80  # mel columns per second = sample_rate / hop_size

    @property
    def mel_rate(self) -> Fraction:
        """Exact mel columns per second (sample_rate / hop_size)."""
        return Fraction(self.sample_rate, self.hop_size)

    @property
    def min_duration_s(self) -> float:
        """Shortest audio that yields one full mel window, in seconds (0.2 s for the defaults)."""
        return self.mel_step_size * self.hop_size / self.sample_rate


DEFAULT_AUDIO = AudioConfig()


# ----------------------------------------------------------------------------------------------------------
# Loading


def load_audio(path: str | Path, sample_rate: int = DEFAULT_AUDIO.sample_rate) -> np.ndarray:
    """Decode the first audio track of any ffmpeg-readable file to mono float32.

    Args:
        path: an audio file (wav 16/24-bit, flac, mp3, m4a/aac, ogg, ...) or a video file with an audio track.
        sample_rate: output rate in Hz; ffmpeg resamples (default swr resampler) when the source differs.

    Returns:
        wav: (num_samples,) float32 in [-1, 1]; channels are averaged (like librosa's ``to_mono``). For a mono
        16-bit file already at ``sample_rate`` the samples are bit-identical to int16 / 32768, i.e. to
        ``librosa.load(path, sr=sample_rate)`` as used by the reference.

    Raises:
        InvalidMediaError: the file is missing or is not media ffmpeg can read.
        NoAudioError: the file is media but has no audio track, or the track decodes to zero samples.
    """
    path = Path(path)
    streams = probe_streams(path, what="an audio or video file")
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if audio is None:
        raise NoAudioError(
            f"{path.name} has no audio track; upload a file with speech, e.g. wav/mp3/m4a"
        )
    # Keep every channel and average them here: ffmpeg's own "-ac 1" downmix scales stereo by 1/sqrt(2)
    # per channel, whereas the reference (librosa) takes the plain mean. Resampling is linear, so
    # resample-then-average equals average-then-resample.
    channels = max(1, int(audio.get("channels") or 1))
    cmd = [
        find_ffmpeg(), "-nostdin", "-hide_banner", "-v", "error",
        "-i", str(path),
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-ac", str(channels), "-ar", str(int(sample_rate)),
        "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1",
    ]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if proc.returncode != 0:
        reason = _last_line(proc.stderr)
        raise InvalidMediaError(
            f"the audio of {path.name} could not be decoded: {reason}; "
            "upload an audio or video file ffmpeg can read (e.g. wav/mp3/m4a/mp4)"
        )
    # s16 -> f32 conversion in ffmpeg is an exact division by 32768, so 16-bit sources stay bit-identical.
    samples = np.frombuffer(proc.stdout, dtype="<f4")
    samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels)  # (num_samples, channels)
    wav = samples[:, 0].copy() if channels == 1 else samples.mean(axis=1, dtype=np.float32)
    if wav.size == 0:
        raise NoAudioError(
            f"{path.name} has an audio track with no samples; upload a file with speech, e.g. wav/mp3/m4a"
        )
    # Resampling can overshoot slightly; keep the documented range.
    np.clip(wav, -1.0, 1.0, out=wav)
    return wav


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown ffmpeg error"


def audio_duration(wav: np.ndarray, sample_rate: int = DEFAULT_AUDIO.sample_rate) -> float:
    """Length of ``wav`` (num_samples,) at ``sample_rate`` Hz, in seconds."""
    return len(wav) / float(sample_rate)


def frames_for_audio(duration_s: float, fps: float | Fraction) -> int:
    """Number of video frames that cover ``duration_s`` seconds at ``fps``.

    Rounds to the nearest frame (halves round up) and never returns less than 1.
    """
    frames = math.floor(Fraction(float(duration_s)) * as_fraction(fps) + Fraction(1, 2))
    return max(1, int(frames))


# ----------------------------------------------------------------------------------------------------------
# Mel spectrogram


@functools.lru_cache(maxsize=8)
def _mel_basis(config: AudioConfig) -> np.ndarray:
    # (num_mels, n_fft // 2 + 1) float32, slaney scale and slaney area normalisation (librosa defaults).
    basis = librosa.filters.mel(
        sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.num_mels, fmin=config.fmin, fmax=config.fmax
    )
    basis.setflags(write=False)
    return basis


def melspectrogram(wav: np.ndarray, config: AudioConfig = DEFAULT_AUDIO) -> np.ndarray:
    """Normalised log-mel spectrogram, identical to Wav2Lip/Diff2Lip ``audio.melspectrogram``.

    Args:
        wav: (num_samples,) float mono waveform in [-1, 1] at ``config.sample_rate``.
        config: front-end hyper-parameters.

    Returns:
        mel: (num_mels, T) float64 in [-max_abs_value, max_abs_value] = [-4, 4], with
        T = 1 + num_samples // hop_size (80 columns per second).
    """
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"wav must be 1-D (num_samples,), got shape {wav.shape}; mix it down to mono first")
    # 1. Pre-emphasis y[n] = x[n] - k x[n-1] (float64 out of lfilter).
    emphasized = signal.lfilter([1.0, -config.preemphasis], [1.0], wav)
    # 2. STFT magnitude: periodic Hann, centred frames with zero padding of n_fft // 2 on each side.
    spec = librosa.stft(
        y=emphasized,
        n_fft=config.n_fft,
        hop_length=config.hop_size,
        win_length=config.win_size,
        window="hann",
        center=True,
        pad_mode="constant",
    )
    magnitude = np.abs(spec)  # (n_fft // 2 + 1, T)
    # 3. Mel projection (float32 basis times float64 magnitude -> float64).
    mel = np.dot(_mel_basis(config), magnitude)  # (num_mels, T)
    # 4. Amplitude -> dB relative to ref_level_db; floor at min_level_db (1e-5 amplitude).
    min_level = np.exp(config.min_level_db / 20.0 * np.log(10.0))
    db = 20.0 * np.log10(np.maximum(min_level, mel)) - config.ref_level_db
    # 5. Symmetric normalisation to [-max_abs, max_abs], clipped.
    max_abs = config.max_abs_value
    scaled = (2.0 * max_abs) * ((db - config.min_level_db) / (-config.min_level_db)) - max_abs
    return np.clip(scaled, -max_abs, max_abs)


# ----------------------------------------------------------------------------------------------------------
# Per-frame mel windows


def _start_column(start_frame: int, fps: Fraction, config: AudioConfig) -> int:
    # floor(mel_rate * start_frame / fps), exact.
    return math.floor(config.mel_rate * start_frame / fps)


def num_windows(mel_columns: int, fps: float | Fraction, audio_offset: int = 0,
                config: AudioConfig = DEFAULT_AUDIO) -> int:
    """How many full mel windows fit in ``mel_columns`` columns (the reference's window count N).

    Window n starts at video frame ``max(n - 1 + audio_offset, 0)``; counting stops at the first window
    that would run past the last mel column, exactly like Diff2Lip's ``load_all_indiv_mels``
    (N = 92 for the 304-column fixture at 25 fps).

    Args:
        mel_columns: T, the number of mel columns.
        fps: video frame rate (int, float or Fraction; floats are read as the nearest simple fraction).
        audio_offset: integer shift in video frames (see :func:`mel_windows`).
    """
    fps = as_fraction(fps)
    step = config.mel_step_size
    if mel_columns < step:
        return 0
    # start_column(sf) <= T - step  <=>  mel_rate * sf / fps < T - step + 1
    #                                  <=>  sf < (T - step + 1) * fps / mel_rate
    bound = Fraction(mel_columns - step + 1) * fps / config.mel_rate
    max_start_frame = math.ceil(bound) - 1
    # n - 1 + audio_offset <= max_start_frame, and n = 0 needs max(audio_offset - 1, 0) <= max_start_frame.
    return max(0, max_start_frame + 2 - audio_offset)


def window_starts(num_frames: int, fps: float | Fraction, audio_offset: int = 0,
                  mel_columns: int | None = None, config: AudioConfig = DEFAULT_AUDIO) -> np.ndarray:
    """First mel column of the window of each video frame, (num_frames,) int64.

    start(n) = floor(80 * max(n - 1 + audio_offset, 0) / fps). When ``mel_columns`` is given, starts are
    clamped to ``mel_columns - mel_step_size`` so every window ends at or before the last column.
    """
    fps = as_fraction(fps)
    starts = np.array(
        [_start_column(max(n - 1 + int(audio_offset), 0), fps, config) for n in range(int(num_frames))],
        dtype=np.int64,
    )
    if mel_columns is not None:
        np.minimum(starts, mel_columns - config.mel_step_size, out=starts)
    return starts


def mel_windows(mel: np.ndarray, fps: float | Fraction, num_frames: int | None = None, audio_offset: int = 0,
                config: AudioConfig = DEFAULT_AUDIO) -> np.ndarray:
    """Cut one ``mel_step_size``-column mel window per output video frame.

    Window n covers mel columns [s, s + 16) with s = floor(80 * max(n - 1 + audio_offset, 0) / fps), computed
    with exact rational arithmetic. At 25 fps and ``audio_offset=0`` this is the official Diff2Lip alignment
    bit for bit, including its quirk: frames 0 and 1 share the window at column 0 and frame n hears the audio
    that starts one frame (40 ms) after its own timestamp.

    Args:
        mel: (num_mels, T) spectrogram from :func:`melspectrogram`.
        fps: video frame rate (int, float such as 29.97, or Fraction(30000, 1001)); floats are read as the
            nearest fraction with denominator <= 1e6, so 29.97 means 2997/100.
        num_frames: number of windows to return. None returns every window that fits fully
            (:func:`num_windows`, the reference behaviour). When given, exactly that many are returned; a window
            whose start would run past the end of the mel is clamped to start at T - 16, i.e. the last frames
            repeat the final 0.2 s of audio.
        audio_offset: integer shift in video frames; positive values make frame n use audio from
            ``audio_offset`` frames later in the track, negative values from earlier (clamped at the start).

    Returns:
        windows: (N, num_mels, 16) float32 in [-4, 4].

    Raises:
        AudioTooShortError: the mel has fewer than 16 columns (audio shorter than about 0.2 s).
    """
    mel = np.asarray(mel)
    step = config.mel_step_size
    if mel.ndim != 2:
        raise ValueError(f"mel must be 2-D (num_mels, T), got shape {mel.shape}")
    columns = mel.shape[1]
    if columns < step:
        seconds = max(columns - 1, 0) * config.hop_size / config.sample_rate
        raise AudioTooShortError(
            f"the audio is {seconds:.3g} s long; at least {config.min_duration_s:.1f} s of speech is needed"
        )
    if num_frames is None:
        num_frames = num_windows(columns, fps, audio_offset, config)
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    starts = window_starts(num_frames, fps, audio_offset, mel_columns=columns, config=config)  # (N,)
    index = starts[:, None] + np.arange(step)[None, :]  # (N, 16)
    windows = mel[:, index]  # (num_mels, N, 16)
    return np.ascontiguousarray(windows.transpose(1, 0, 2), dtype=np.float32)
