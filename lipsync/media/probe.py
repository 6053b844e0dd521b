"""Finding ffmpeg and ffprobe, and probing media: :func:`probe_video` -> :class:`VideoInfo` (size, frame rate
and count, rotation, colour tags), :func:`probe_streams`, :func:`probe_duration`, :func:`count_frames`.

Every subprocess takes an argument list; nothing goes through a shell.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Sequence

from lipsync.errors import InvalidMediaError, NoVideoStreamError

# ----------------------------------------------------------------------------------------------------------
# Tools and small helpers


def _find_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} was not found; install it (apt-get install ffmpeg)")
    return found


def find_ffmpeg() -> str:
    """Absolute path of the ``ffmpeg`` binary; raises FileNotFoundError with an install hint if missing."""
    return _find_tool("ffmpeg")


def find_ffprobe() -> str:
    """Absolute path of the ``ffprobe`` binary; raises FileNotFoundError with an install hint if missing."""
    return _find_tool("ffprobe")


def as_fraction(fps: int | float | str | Fraction) -> Fraction:
    """Exact frame rate as a Fraction.

    Args:
        fps: an int, a Fraction, a string ("30000/1001" or "29.97") or a float. Floats are read as the nearest
            fraction with denominator <= 1e6, so 29.97 -> 2997/100 and float(30000/1001) -> 30000/1001.

    Raises:
        ValueError: the rate is not a positive finite number.
    """
    if isinstance(fps, Fraction):
        value = fps
    elif isinstance(fps, int):
        value = Fraction(fps)
    elif isinstance(fps, str):
        value = Fraction(fps.strip())
    else:
        fps = float(fps)
        if not math.isfinite(fps):
            raise ValueError(f"fps must be a finite number, got {fps}")
        value = Fraction(fps).limit_denominator(1_000_000)
    if value <= 0:
        raise ValueError(f"fps must be positive, got {fps}; pass the video's frame rate, e.g. 25")
    return value


def ffmpeg_reason(stderr: bytes | str, path: str | Path | None = None) -> str:
    """The most useful line of an ffmpeg/ffprobe error output, without the leading "<path>: "."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return "unknown ffmpeg error"
    reason = lines[-1]
    if path is not None and reason.startswith(f"{path}: "):
        reason = reason[len(f"{path}: "):]
    return reason


def read_tail(handle: IO[bytes]) -> bytes:
    handle.flush()
    handle.seek(0)
    return handle.read()[-4000:]


def _ffprobe_json(path: str | Path, what: str, extra: Sequence[str] = ()) -> dict:
    """Run ffprobe on ``path`` and return its JSON; raise InvalidMediaError naming ``what`` it must be."""
    path = Path(path)
    if not path.exists():
        raise InvalidMediaError(f"{path} does not exist; upload {what} ffmpeg can read")
    if not path.is_file():
        raise InvalidMediaError(f"{path} is not a file; upload {what} ffmpeg can read")
    cmd = [find_ffprobe(), "-v", "error", "-show_streams", "-show_format", *extra, "-of", "json", str(path)]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if proc.returncode != 0:
        raise InvalidMediaError(
            f"{path.name} could not be read: {ffmpeg_reason(proc.stderr, path)}; upload {what} ffmpeg can read"
        )
    try:
        data = json.loads(proc.stdout.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidMediaError(
            f"{path.name} could not be read: ffprobe returned no usable description ({exc}); "
            f"upload {what} ffmpeg can read"
        ) from exc
    if not data.get("streams"):
        raise InvalidMediaError(f"{path.name} contains no audio or video streams; upload {what} ffmpeg can read")
    return data


def probe_streams(path: str | Path, what: str = "an audio or video file") -> list[dict]:
    """ffprobe's list of stream dicts of ``path`` (codec_type, codec_name, sample_rate, ...).

    Raises:
        InvalidMediaError: missing file, or not media ffprobe understands; the message says it must be
            ``what`` ffmpeg can read.
    """
    return _ffprobe_json(path, what)["streams"]


# ----------------------------------------------------------------------------------------------------------
# Probing


@dataclass
class VideoInfo:
    """What a video file holds, as the decoder will deliver it.

    Attributes:
        path: the probed file.
        width, height: display size in pixels AFTER rotation (what :func:`iter_frames` yields).
        fps: exact frame rate from ``avg_frame_rate`` (falls back to ``r_frame_rate`` when that is 0/0).
        num_frames: ``nb_frames`` from the container when present, else round(duration * fps) (an estimate;
            Matroska/WebM do not store a count). :func:`count_frames` decodes to get an exact count.
        duration: seconds (video stream duration, else container duration).
        rotation: display rotation in degrees as ffprobe reports it (0, 90, 180, 270; 0 when none).
        codec: video codec name, e.g. "h264", "hevc", "vp9", "mpeg4".
        has_audio: whether the file has at least one audio stream.
        video_start, audio_start: stream start times in seconds (audio_start is None without audio).
        time_base: the video stream's time base (its timestamps count in these units).
        container_start: the container's start time in seconds (ffmpeg's ``-ss`` counts from it).
        first_frame_pts: timestamp of the first frame the decoder delivers, in ``time_base`` units: frame 0 of
            :func:`iter_frames`. Found by decoding on the first seek and kept here (None until then).
        colors: the video stream's colour tags as ffprobe names them (``color_range``, ``color_space``,
            ``color_transfer``, ``color_primaries``); only tags that are set.
    """

    path: Path
    width: int
    height: int
    fps: Fraction
    num_frames: int
    duration: float
    rotation: int
    codec: str
    has_audio: bool
    video_start: float
    audio_start: float | None
    time_base: Fraction = Fraction(1, 90000)
    container_start: float = 0.0
    first_frame_pts: int | None = None
    colors: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) display size."""
        return (self.width, self.height)


def _parse_rate(text: str | None) -> Fraction | None:
    if not text:
        return None
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _float_or_none(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _rotation(stream: dict) -> int:
    angle = None
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            angle = _float_or_none(side["rotation"])
            break
    if angle is None:
        angle = _float_or_none((stream.get("tags") or {}).get("rotate"))
    if angle is None:
        return 0
    return int(round(angle)) % 360


COLOR_TAGS = ("color_range", "color_space", "color_transfer", "color_primaries")


def _color_tags(stream: dict) -> dict[str, str]:
    """The colour tags ffprobe reports for ``stream`` that are set (not "unknown"/"unspecified")."""
    tags = {}
    for key in COLOR_TAGS:
        value = str(stream.get(key) or "")
        if value and value not in ("unknown", "unspecified", "reserved"):
            tags[key] = value
    return tags


def probe_video(path: str | Path) -> VideoInfo:
    """Describe the first video stream of ``path``.

    Raises:
        InvalidMediaError: the file is missing, not media, or corrupt.
        NoVideoStreamError: the file is media (e.g. audio only) but has no video stream.
    """
    path = Path(path)
    what = "an mp4/mov/mkv/webm file"
    try:
        data = _ffprobe_json(path, what)
    except InvalidMediaError as exc:
        text = str(exc)
        if " could not be read: " in text:
            text = text.replace(" could not be read: ", " could not be read as a video: ", 1)
        raise InvalidMediaError(text) from exc
    streams = data["streams"]
    video = next(
        (s for s in streams
         if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")),
        None,
    )
    if video is None:
        raise NoVideoStreamError(
            f"{path.name} has no video stream; upload a video of a face (mp4/mov/mkv/webm) or a photo"
        )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)

    fps = _parse_rate(video.get("avg_frame_rate")) or _parse_rate(video.get("r_frame_rate"))
    if fps is None:
        raise InvalidMediaError(
            f"{path.name} could not be read as a video: its frame rate is unknown; "
            "re-encode it as an mp4 (e.g. ffmpeg -i in -r 25 out.mp4) and upload that"
        )
    rotation = _rotation(video)
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width <= 0 or height <= 0:
        raise InvalidMediaError(
            f"{path.name} could not be read as a video: its frame size is unknown; upload an mp4/mov/mkv/webm file"
        )
    if rotation % 180 == 90:
        width, height = height, width

    duration = _float_or_none(video.get("duration"))
    if duration is None:
        duration = _float_or_none((data.get("format") or {}).get("duration")) or 0.0
    nb_frames = video.get("nb_frames")
    if nb_frames is not None and str(nb_frames).isdigit() and int(nb_frames) > 0:
        num_frames = int(nb_frames)
    else:
        num_frames = max(1, int(round(duration * fps)))

    return VideoInfo(
        path=path,
        width=width,
        height=height,
        fps=fps,
        num_frames=num_frames,
        duration=float(duration),
        rotation=rotation,
        codec=str(video.get("codec_name", "unknown")),
        has_audio=audio is not None,
        video_start=_float_or_none(video.get("start_time")) or 0.0,
        audio_start=(_float_or_none(audio.get("start_time")) or 0.0) if audio is not None else None,
        time_base=_parse_rate(video.get("time_base")) or Fraction(1, 90000),
        container_start=_float_or_none((data.get("format") or {}).get("start_time")) or 0.0,
        colors=_color_tags(video),
    )


def probe_duration(path: str | Path) -> float:
    """Container duration of ``path`` in seconds (ffprobe ``format.duration``)."""
    data = _ffprobe_json(path, "a media file")
    duration = _float_or_none((data.get("format") or {}).get("duration"))
    if duration is None:
        raise InvalidMediaError(f"{Path(path).name} has no known duration; re-encode it as an mp4")
    return duration


def count_frames(path: str | Path) -> int:
    """Exact number of frames in the first video stream, by decoding (ffprobe ``-count_frames``)."""
    path = Path(path)
    cmd = [
        find_ffprobe(), "-v", "error", "-select_streams", "v:0", "-count_frames",
        "-show_entries", "stream=nb_read_frames", "-of", "json", str(path),
    ]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if proc.returncode != 0:
        raise InvalidMediaError(
            f"{path.name} could not be read as a video: {ffmpeg_reason(proc.stderr, path)}; "
            "upload an mp4/mov/mkv/webm file"
        )
    streams = json.loads(proc.stdout or b"{}").get("streams") or []
    if not streams:
        raise NoVideoStreamError(f"{path.name} has no video stream; upload an mp4/mov/mkv/webm file")
    return int(streams[0].get("nb_read_frames", 0))


def kill_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - kill() does not fail on Linux
        pass
