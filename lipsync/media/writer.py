"""Writing: :class:`VideoWriter` encodes H.264 (yuv420p, the source's colour tags) to a hidden temporary file
next to the output, muxes the driving audio as AAC and atomically renames the result, so a failed or aborted
run never leaves a partial output file. :func:`check_output_path` fails early on paths that cannot be written.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import IO, Mapping

import cv2
import numpy as np

from lipsync.errors import NoAudioError, OutputPathError
from lipsync.media.probe import as_fraction, ffmpeg_reason, find_ffmpeg, kill_process, probe_streams, read_tail

# ----------------------------------------------------------------------------------------------------------
# Writing

# x264's speed presets, fastest first. veryfast is the default by measurement (benchmarks/e2e.py --encoders,
# crf 12, 2-core EPYC): medium costs 2.2x (1080p) to 2.4x (512 px) its CPU per frame (0.081 vs 0.036 core-s
# per 1080p frame) for a file of the same size; superfast and ultrafast save 10-30% more CPU but write files
# 1.2-4x larger.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
DEFAULT_ENCODER_PRESET = "veryfast"
DEFAULT_CRF = 12


def check_encoder_preset(preset: str) -> str:
    """``preset`` if it is one of x264's (:data:`X264_PRESETS`); else ValueError naming them."""
    if preset not in X264_PRESETS:
        raise ValueError(f"unknown encoder preset {preset!r}; use one of x264's: {', '.join(X264_PRESETS)}")
    return preset


def check_output_path(path: str | Path) -> Path:
    """Fail early when ``path`` cannot be written; returns it as an absolute Path.

    Raises:
        OutputPathError: the path is a directory, its folder does not exist or is not a folder, or the
            folder is not writable (checked by creating and deleting a hidden probe file).
    """
    path = Path(path).expanduser().absolute()

    def fail(reason: str) -> OutputPathError:
        return OutputPathError(f"cannot write {path}: {reason}; choose a writable folder")

    if path.is_dir():
        raise fail("it is a directory, not a file name")
    parent = path.parent
    if not parent.exists():
        raise fail(f"the folder {parent} does not exist")
    if not parent.is_dir():
        raise fail(f"{parent} is not a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise fail("the existing file is read-only")
    try:
        handle, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".probe")
    except OSError as exc:
        raise fail(f"the folder is not writable ({exc.strerror or exc})") from exc
    os.close(handle)
    os.unlink(probe)
    return path


# ffprobe's matrix names -> the scale filter's out_color_matrix names
_SCALE_MATRICES = {"bt709": "bt709", "smpte170m": "smpte170m", "bt470bg": "bt470", "fcc": "fcc",
                   "smpte240m": "smpte240m", "bt2020nc": "bt2020", "bt2020c": "bt2020"}


def _rgb_to_yuv_filter(colors: Mapping[str, str]) -> str:
    """The scale filter that turns rgb24 into yuv420p with the source's matrix and range (BT.601 limited
    range when the source has no tags)."""
    options = ["flags=area+accurate_rnd+full_chroma_int"]
    matrix = _SCALE_MATRICES.get(colors.get("color_space", ""))
    if matrix:
        options.append(f"out_color_matrix={matrix}")
    if colors.get("color_range") in ("tv", "pc"):
        options.append(f"out_range={colors['color_range']}")
    return f"scale={':'.join(options)},format=yuv420p"


# ffprobe's names -> ffmpeg's option values (they differ for two transfers); tags not listed are not carried
_PRIMARIES = {name: name for name in ("bt709", "bt470m", "bt470bg", "smpte170m", "smpte240m", "film", "bt2020",
                                      "smpte428", "smpte431", "smpte432")}
_TRANSFERS = {name: name for name in ("bt709", "smpte170m", "smpte240m", "linear", "log100", "log316",
                                      "iec61966-2-4", "bt1361e", "iec61966-2-1", "bt2020-10", "bt2020-12",
                                      "smpte2084", "smpte428", "arib-std-b67")}
_TRANSFERS.update({"bt470m": "gamma22", "bt470bg": "gamma28"})


def _color_tag_options(colors: Mapping[str, str]) -> list[str]:
    """ffmpeg output options that tag the stream with the source's colour description."""
    args = []
    matrix = colors.get("color_space", "")
    if matrix in _SCALE_MATRICES:  # tag only a matrix the conversion really used
        args += ["-colorspace", matrix]
    if colors.get("color_range") in ("tv", "pc"):
        args += ["-color_range", colors["color_range"]]
    if colors.get("color_primaries") in _PRIMARIES:
        args += ["-color_primaries", _PRIMARIES[colors["color_primaries"]]]
    if colors.get("color_transfer") in _TRANSFERS:
        args += ["-color_trc", _TRANSFERS[colors["color_transfer"]]]
    return args


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (threads may be creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(path: Path) -> int:
    """Mode for a file written to ``path``: the replaced file's mode, else 0666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _draw_label(frame: np.ndarray, text: str) -> np.ndarray:
    """Copy of ``frame`` (H, W, 3) uint8 with ``text`` in white on a dark box in the top-left corner."""
    out = np.ascontiguousarray(frame).copy()
    height = out.shape[0]
    scale = max(0.4, height / 720.0)
    thickness = max(1, int(round(scale * 1.5)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, thickness)
    margin = max(3, int(round(6 * scale)))
    x0, y0 = margin, margin
    x1, y1 = x0 + text_w + 2 * margin, y0 + text_h + baseline + 2 * margin
    cv2.rectangle(out, (x0, y0), (x1, y1), (20, 20, 20), thickness=-1)
    cv2.putText(out, text, (x0 + margin, y0 + margin + text_h), font, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)
    return out


class VideoWriter:
    """Encode RGB frames to an H.264/AAC MP4 that appears only once it is complete.

    Usage::

        with VideoWriter("out.mp4", fps=info.fps, size=(W, H), audio_path="speech.wav") as writer:
            for frames in chunks:          # (n, H, W, 3) uint8 RGB
                writer.write(frames)
        # out.mp4 now exists; on an exception inside the block nothing is left behind.

    Frames are piped to ``ffmpeg -c:v libx264 -preset <preset> -crf 12 -pix_fmt yuv420p`` writing a hidden
    temporary file in the output's folder. On success the driving audio is muxed as AAC, padded with silence
    or trimmed to exactly the video length N / fps (or ``duration``), ``-movflags +faststart`` is applied and
    the result is ``os.replace``d onto ``output_path``. Odd frame sizes are padded to even by repeating the last
    row/column. On an exception, or :meth:`close` before :meth:`finish`, ffmpeg is killed and every temporary
    file is deleted.

    Args:
        output_path: the MP4 to create (its folder must exist and be writable).
        fps: frame rate (Fraction kept exactly, e.g. 30000/1001; floats as in :func:`as_fraction`).
        size: (W, H) of the frames that will be written.
        audio_path: file whose first audio track is muxed (any format ffmpeg reads, or a video).
        audio_array: alternatively, (num_samples,) float32 mono audio at 16 kHz in [-1, 1].
        duration: optional final length in seconds; default N / fps. Audio is padded/trimmed to it and the
            video trimmed to it (video is never extended).
        side_label: optional text burned into the top-left corner of every frame (e.g. "Diff2Lip").
        crf: x264's constant rate factor (12: visually lossless for faces).
        preset: x264's speed preset (:data:`X264_PRESETS`; default ``veryfast``, chosen by measurement).
        colors: the source's colour tags (``VideoInfo.colors``: ``color_space``, ``color_range``,
            ``color_primaries``, ``color_transfer``). RGB is converted to YUV with that matrix and range, and
            the output is tagged with all four, so players show the colours of the source. Without tags:
            BT.601 limited range, untagged (as before).

    The finished file gets the permissions of a normally created file (0666 less the umask), or keeps the
    mode of the file it replaces.
    """

    AUDIO_SAMPLE_RATE = 16000

    def __init__(
        self,
        output_path: str | Path,
        fps: int | float | str | Fraction,
        size: tuple[int, int],
        audio_path: str | Path | None = None,
        audio_array: np.ndarray | None = None,
        duration: float | None = None,
        side_label: str | None = None,
        crf: int = DEFAULT_CRF,
        preset: str = DEFAULT_ENCODER_PRESET,
        colors: Mapping[str, str] | None = None,
    ) -> None:
        if audio_path is not None and audio_array is not None:
            raise ValueError("give either audio_path or audio_array, not both")
        self.output_path = check_output_path(output_path)
        self.fps = as_fraction(fps)
        self.width, self.height = int(size[0]), int(size[1])
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"size must be (W, H) with positive values, got {size}")
        self.audio_path = Path(audio_path) if audio_path is not None else None
        if self.audio_path is not None:
            streams = probe_streams(self.audio_path, "an audio or video file")
            if not any(s.get("codec_type") == "audio" for s in streams):
                raise NoAudioError(
                    f"{self.audio_path.name} has no audio track; upload a file with speech, e.g. wav/mp3/m4a"
                )
        self.audio_array = None
        if audio_array is not None:
            audio = np.asarray(audio_array, dtype=np.float32)
            if audio.ndim != 1:
                raise ValueError(f"audio_array must be mono (num_samples,), got shape {audio.shape}")
            self.audio_array = np.ascontiguousarray(np.clip(audio, -1.0, 1.0))
        if duration is not None and not duration > 0:
            raise ValueError(f"duration must be positive seconds, got {duration}")
        self.duration = duration
        self.side_label = side_label
        self.crf = int(crf)
        self.preset = check_encoder_preset(preset)
        self.colors = dict(colors or {})
        self.num_frames = 0
        self._enc_width = self.width + (self.width % 2)
        self._enc_height = self.height + (self.height % 2)
        self._temp_files: list[Path] = []
        self._proc: subprocess.Popen | None = None
        self._errors: IO[bytes] | None = None
        self._video_tmp: Path | None = None
        self._done = False
        self._closed = False
        self._start()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _temp_path(self, suffix: str) -> Path:
        handle, name = tempfile.mkstemp(dir=self.output_path.parent, prefix=f".{self.output_path.stem}.",
                                        suffix=suffix)
        os.close(handle)
        path = Path(name)
        self._temp_files.append(path)
        return path

    def _start(self) -> None:
        ffmpeg = find_ffmpeg()  # before any temporary file exists
        self._video_tmp = self._temp_path(".video.mp4")
        rate = f"{self.fps.numerator}/{self.fps.denominator}"
        cmd = [
            ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self._enc_width}x{self._enc_height}",
            "-framerate", rate, "-i", "pipe:0",
            # area + full-chroma RGB->YUV keeps 4:2:0 chroma closest to the source (about +3 dB on hard edges)
            "-an", "-vf", _rgb_to_yuv_filter(self.colors),
            "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf),
            "-pix_fmt", "yuv420p", *_color_tag_options(self.colors),
            "-movflags", "+faststart", "-f", "mp4", str(self._video_tmp),
        ]
        self._errors = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=self._errors)
        except OSError:
            self.close()
            raise

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.close()

    def __del__(self) -> None:  # safety net for writers that were never closed
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def _failure(self, stage: str) -> OutputPathError:
        reason = ffmpeg_reason(read_tail(self._errors)) if self._errors is not None else "unknown error"
        return OutputPathError(
            f"cannot write {self.output_path}: ffmpeg failed while {stage} ({reason}); "
            "check free disk space and choose a writable folder"
        )

    # -- writing -----------------------------------------------------------------------------------------

    def write(self, frames: np.ndarray) -> None:
        """Append frames: (n, H, W, 3) or a single (H, W, 3) uint8 RGB array with (W, H) == size."""
        if self._done or self._closed:
            raise RuntimeError("this VideoWriter is already closed; create a new one")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(
                f"frames must have shape (n, {self.height}, {self.width}, 3) to match size="
                f"({self.width}, {self.height}), got {frames.shape}"
            )
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 RGB in [0, 255], got dtype {frames.dtype}")
        if len(frames) == 0:
            return
        if self.side_label:
            frames = np.stack([_draw_label(frame, self.side_label) for frame in frames])
        if (self._enc_width, self._enc_height) != (self.width, self.height):
            pad = ((0, 0), (0, self._enc_height - self.height), (0, self._enc_width - self.width), (0, 0))
            frames = np.pad(frames, pad, mode="edge")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frames).tobytes())
        except (BrokenPipeError, OSError) as exc:
            self._proc.wait()
            error = self._failure("encoding")
            self.close()
            raise error from exc
        self.num_frames += len(frames)

    def finish(self) -> Path:
        """Finish encoding, mux the audio and move the file into place; returns ``output_path``."""
        if self._done:
            return self.output_path
        if self._closed:
            raise RuntimeError("this VideoWriter was closed before finishing; nothing was written")
        try:
            if self.num_frames == 0:
                raise ValueError(f"no frames were written to {self.output_path.name}; write at least one frame")
            try:
                self._proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            if self._proc.wait() != 0:
                raise self._failure("encoding")
            final = self._mux()
            os.chmod(final, _new_file_mode(self.output_path))
            os.replace(final, self.output_path)
        except BaseException:
            self.close()
            raise
        self._done = True
        self.close()
        return self.output_path

    def _target_duration(self) -> Fraction:
        length = Fraction(self.num_frames) / self.fps
        if self.duration is not None:
            length = min(length, Fraction(self.duration).limit_denominator(1_000_000))
        return length

    def _mux(self) -> Path:
        """Combine the encoded video with the audio; returns the finished temporary file."""
        has_audio = self.audio_path is not None or self.audio_array is not None
        trim = self.duration is not None and Fraction(self.duration) < Fraction(self.num_frames) / self.fps
        if not has_audio and not trim:
            return self._video_tmp  # already H.264 + faststart, exactly N frames
        target = self._target_duration()
        seconds = f"{float(target):.6f}"
        output = self._temp_path(".mux.mp4")
        cmd = [find_ffmpeg(), "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", str(self._video_tmp)]
        stdin_data = None
        if self.audio_path is not None:
            cmd += ["-i", str(self.audio_path)]
        elif self.audio_array is not None:
            cmd += ["-f", "f32le", "-ar", str(self.AUDIO_SAMPLE_RATE), "-ac", "1", "-i", "pipe:0"]
            stdin_data = self.audio_array.astype("<f4").tobytes()
        cmd += ["-map", "0:v:0"]
        if has_audio:
            cmd += ["-map", "1:a:0", "-af", "apad", "-c:a", "aac", "-b:a", "128k"]
        cmd += ["-c:v", "copy", "-t", seconds, "-movflags", "+faststart", "-f", "mp4", str(output)]
        self._errors.seek(0)
        self._errors.truncate()
        proc = subprocess.run(
            cmd,
            input=stdin_data,
            stdin=None if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._errors,
            check=False,
        )
        if proc.returncode != 0:
            raise self._failure("adding the audio")
        return output

    def close(self) -> None:
        """Release ffmpeg and delete temporary files. Before :meth:`finish` this discards the output."""
        if self._closed:
            return
        self._closed = True
        proc = self._proc
        if proc is not None:
            if proc.stdin is not None and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
            if self._done:
                proc.wait()
            else:
                kill_process(proc)
        for path in self._temp_files:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self._temp_files.clear()
        if self._errors is not None:
            self._errors.close()
            self._errors = None
