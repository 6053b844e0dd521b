"""Video I/O through the ffmpeg / ffprobe command-line tools.

Reading: :func:`probe_video` -> :class:`VideoInfo`; :func:`iter_frames` streams (n, H, W, 3) uint8 RGB chunks
at the source's constant frame rate and display orientation. Writing: :class:`VideoWriter` encodes H.264
(yuv420p) to a hidden temporary file next to the output, muxes the driving audio as AAC and atomically
renames the result, so a failed or aborted run never leaves a partial output file.

Every subprocess takes an argument list; nothing goes through a shell.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Iterator, Mapping, Sequence

import cv2
import numpy as np

from .errors import InvalidMediaError, NoAudioError, NoVideoStreamError, OutputPathError

__all__ = [
    "VideoInfo",
    "VideoWriter",
    "as_fraction",
    "check_output_path",
    "count_frames",
    "find_ffmpeg",
    "find_ffprobe",
    "first_frame_pts",
    "is_image",
    "iter_frames",
    "probe_duration",
    "probe_streams",
    "probe_video",
    "read_frames",
    "read_image",
    "side_by_side",
    "comparison_layout",
    "ComparisonLayout",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})


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


def _ffmpeg_reason(stderr: bytes | str, path: str | Path | None = None) -> str:
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


def _read_tail(handle: IO[bytes]) -> bytes:
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
            f"{path.name} could not be read: {_ffmpeg_reason(proc.stderr, path)}; upload {what} ffmpeg can read"
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
            f"{path.name} could not be read as a video: {_ffmpeg_reason(proc.stderr, path)}; "
            "upload an mp4/mov/mkv/webm file"
        )
    streams = json.loads(proc.stdout or b"{}").get("streams") or []
    if not streams:
        raise NoVideoStreamError(f"{path.name} has no video stream; upload an mp4/mov/mkv/webm file")
    return int(streams[0].get("nb_read_frames", 0))


# ----------------------------------------------------------------------------------------------------------
# Still images


def is_image(path: str | Path) -> bool:
    """True when ``path`` has a still-image extension (png, jpg, jpeg, bmp, webp, tif, tiff)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | Path) -> np.ndarray:
    """Read a still image as (H, W, 3) uint8 RGB with ``cv2.imread`` (alpha dropped, grey expanded).

    Raises:
        InvalidMediaError: the file is missing or not an image OpenCV can decode.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidMediaError(f"{path} does not exist; upload a png or jpg photo of a face")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # (H, W, 3) BGR
    if image is None:
        raise InvalidMediaError(f"{path.name} could not be read as an image; upload a png or jpg photo of a face")
    return np.ascontiguousarray(image[:, :, ::-1])


# ----------------------------------------------------------------------------------------------------------
# Decoding


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - kill() does not fail on Linux
        pass


SEEK_MARGIN_SECONDS = 2.0  # a seek lands this much before the wanted frame; the rest is decoded and dropped


def first_frame_pts(path: str | Path, info: VideoInfo | None = None) -> int | None:
    """Timestamp (in ``info.time_base`` units) of the first frame the decoder delivers: frame 0 of
    :func:`iter_frames`, whatever the stream's start time, edit list or leading frames the edit list hides.

    The result is kept in ``info.first_frame_pts``. None when the decoder gives the frame no timestamp.
    """
    path = Path(path)
    if info is None:
        info = probe_video(path)
    if info.first_frame_pts is not None:
        return info.first_frame_pts
    # Decode a few packets first; an edit list may hide a whole group of pictures, so read more if needed.
    for packets in (16, 512, None):
        interval = ["-read_intervals", f"%+#{packets}"] if packets is not None else []
        cmd = [find_ffprobe(), "-v", "error", "-select_streams", "v:0", *interval,
               "-show_entries", "frame=best_effort_timestamp", "-of", "csv=p=0", str(path)]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        values = [line.strip().strip(",") for line in proc.stdout.decode("ascii", "replace").splitlines()]
        values = [v for v in values if v]
        if values:
            first = values[0]
            info.first_frame_pts = int(first) if first.lstrip("-").isdigit() else None
            return info.first_frame_pts
    return None


def _frame_select(info: VideoInfo, path: Path, start: int) -> tuple[list[str], str]:
    """(input seek options, filter chain) that make ffmpeg deliver frames ``start``, ``start + 1``, ... of the
    constant-rate numbering, exactly as a decode from the beginning numbers them.

    Frame k is the k-th output of ``fps=info.fps`` applied to the decoded frames with the first frame's
    timestamp as time 0. A seek keeps the file's own timestamps (``-copyts``), subtracts the first frame's
    (:func:`first_frame_pts`), goes to a keyframe some margin before frame ``start`` (``-noaccurate_seek``:
    ffmpeg drops nothing) and ``trim`` drops the frames before it, so the numbering does not depend on the
    container's start time, the stream's start offset or edit list, or where the seek happened to land.
    """
    rate = f"{info.fps.numerator}/{info.fps.denominator}"
    resample = f"fps={rate}"
    if start <= 0:  # from the beginning: ffmpeg's own timestamp handling, re-zeroed on the first frame
        return [], f"setpts=PTS-STARTPTS,{resample}"
    origin = first_frame_pts(path, info)
    if origin is None:  # no timestamps to anchor on: count frames from the beginning
        return [], f"setpts=PTS-STARTPTS,{resample},trim=start_frame={start}"
    origin_seconds = Fraction(origin) * info.time_base
    seek_to = origin_seconds + Fraction(start) / info.fps - Fraction(SEEK_MARGIN_SECONDS)
    # ffmpeg's input -ss counts from the container's start time; keep original timestamps (-copyts)
    offset = float(seek_to) - info.container_start
    seek = ["-noaccurate_seek", "-ss", f"{offset:.6f}"] if offset > 0 else []
    chain = f"setpts=PTS-{origin},{resample},trim=start_pts={start}"
    return [*seek, "-copyts"], chain


def iter_frames(
    path: str | Path, chunk_size: int = 64, info: VideoInfo | None = None, start: int = 0, count: int | None = None
) -> Iterator[np.ndarray]:
    """Decode a video into chunks of RGB frames, at constant frame rate and display orientation.

    ffmpeg decodes to raw rgb24 on a pipe (no image intermediates, full source resolution), applies the
    rotation stored in the file (``width``/``height`` of :class:`VideoInfo` are already swapped for it) and
    resamples to a constant ``info.fps`` (the ``fps`` filter: duplicating or dropping frames of a
    variable-rate source), so the frame count is about duration * fps. Frame 0 is the first frame the
    decoder delivers, even when the video starts later than the audio (``video_start`` > 0) or an edit list
    hides leading frames. Memory is bounded by one chunk.

    Args:
        path: video file.
        chunk_size: frames per yielded chunk (the last chunk may be smaller).
        info: the result of :func:`probe_video` (probed here when None).
        start: first frame to decode. A seek lands on exactly the frame a decode from the beginning numbers
            ``start``, whatever the stream's start time, time base or edit list (used to read a clip
            backwards in chunks without holding it in memory).
        count: decode at most this many frames.

    Yields:
        frames: (n, H, W, 3) uint8 RGB, 1 <= n <= chunk_size.

    Raises:
        InvalidMediaError / NoVideoStreamError: as :func:`probe_video`, or when not a single frame decodes.
        A file that breaks off midway yields the frames ffmpeg could decode (like every player does).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    path = Path(path)
    if info is None:
        info = probe_video(path)
    width, height = info.width, info.height
    frame_bytes = width * height * 3
    seek, chain = _frame_select(info, path, int(start))
    limit = ["-frames:v", str(int(count))] if count is not None else []
    cmd = [
        find_ffmpeg(), "-nostdin", "-hide_banner", "-v", "error",
        *seek, "-i", str(path),
        "-map", "0:v:0", "-an", "-sn", "-dn", *limit,
        # Time 0 is the first frame, so a video that starts after its audio (video_start > 0) is not padded
        # with copies of its first frame; the fps filter makes the rate constant, and nothing after it may
        # drop or repeat frames (passthrough).
        "-vf", chain, "-sws_flags", "bicubic+accurate_rnd+full_chroma_int",
        "-fps_mode", "passthrough",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        try:
            total = 0
            while True:
                data = proc.stdout.read(frame_bytes * chunk_size)
                if not data:
                    break
                n = len(data) // frame_bytes
                if n == 0:
                    break
                chunk = np.frombuffer(data[: n * frame_bytes], dtype=np.uint8).reshape(n, height, width, 3)
                total += n
                yield chunk
                if len(data) % frame_bytes:
                    break
            proc.stdout.close()
            code = proc.wait()
            if code != 0 and total == 0:
                raise InvalidMediaError(
                    f"{path.name} could not be decoded as a video: {_ffmpeg_reason(_read_tail(errors), path)}; "
                    "upload an mp4/mov/mkv/webm file"
                )
            if total == 0:
                raise InvalidMediaError(
                    f"{path.name} decoded to zero frames; upload a video with at least one frame "
                    "(mp4/mov/mkv/webm)"
                )
        finally:
            _kill(proc)
            if proc.stdout is not None and not proc.stdout.closed:
                proc.stdout.close()


def read_frames(path: str | Path, indices: Sequence[int], info: VideoInfo | None = None) -> np.ndarray:
    """Fetch specific frames (0-based, in the constant-rate numbering of :func:`iter_frames`).

    Returns:
        frames: (len(indices), H, W, 3) uint8 RGB, in the order of ``indices`` (repeats allowed).

    Raises:
        IndexError: an index is negative or past the last decoded frame.
    """
    wanted = [int(i) for i in indices]
    if info is None:
        info = probe_video(path)
    if not wanted:
        return np.zeros((0, info.height, info.width, 3), dtype=np.uint8)
    if min(wanted) < 0:
        raise IndexError(f"frame indices must be >= 0, got {min(wanted)}")
    needed = set(wanted)
    last = max(wanted)
    found: dict[int, np.ndarray] = {}
    position = 0
    frames_iter = iter_frames(path, chunk_size=32, info=info)
    try:
        for chunk in frames_iter:
            for k in range(len(chunk)):
                if position + k in needed:
                    found[position + k] = chunk[k].copy()
            position += len(chunk)
            if position > last:
                break
    finally:
        frames_iter.close()
    missing = sorted(needed - found.keys())
    if missing:
        raise IndexError(f"{Path(path).name} has {position} frames; frame {missing[0]} does not exist")
    return np.stack([found[i] for i in wanted])


# ----------------------------------------------------------------------------------------------------------
# Writing


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


class VideoWriter:
    """Encode RGB frames to an H.264/AAC MP4 that appears only once it is complete.

    Usage::

        with VideoWriter("out.mp4", fps=info.fps, size=(W, H), audio_path="speech.wav") as writer:
            for frames in chunks:          # (n, H, W, 3) uint8 RGB
                writer.write(frames)
        # out.mp4 now exists; on an exception inside the block nothing is left behind.

    Frames are piped to ``ffmpeg -c:v libx264 -preset veryfast -crf 12 -pix_fmt yuv420p`` writing a hidden
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
        crf: int = 12,
        preset: str = "veryfast",
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
        self.preset = preset
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
        reason = _ffmpeg_reason(_read_tail(self._errors)) if self._errors is not None else "unknown error"
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
                _kill(proc)
        for path in self._temp_files:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self._temp_files.clear()
        if self._errors is not None:
            self._errors.close()
            self._errors = None


# ----------------------------------------------------------------------------------------------------------
# Side-by-side comparison


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


WIDE_ASPECT = 1.25  # panels wider than this (W / H) are stacked vertically, so each stays big
CAPTION_BACKGROUND = (24, 24, 24)  # the caption band under each panel: dark grey, white text
CAPTION_TEXT = (255, 255, 255)


@dataclass(frozen=True)
class ComparisonLayout:
    """Geometry of a side-by-side comparison (all sizes in pixels).

    Each panel is a cell: the frame (``panel`` = (W, H)), then an optional zoomed mouth strip
    (``zoom_height`` rows), then a caption band (``caption_height`` rows). Cells sit in a row, or in a
    column when ``vertical`` (wide clips).
    """

    count: int
    panel: tuple[int, int]
    caption_height: int
    zoom_height: int
    vertical: bool

    @property
    def cell_height(self) -> int:
        return self.panel[1] + self.zoom_height + self.caption_height

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the whole comparison frame."""
        width, _ = self.panel
        if self.vertical:
            return width, self.count * self.cell_height
        return self.count * width, self.cell_height

    def cell_origin(self, index: int) -> tuple[int, int]:
        """(x, y) of panel ``index``'s top-left corner."""
        if self.vertical:
            return 0, index * self.cell_height
        return index * self.panel[0], 0

    def caption_box(self, index: int) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) of panel ``index``'s caption band."""
        x, y = self.cell_origin(index)
        top = y + self.panel[1] + self.zoom_height
        return x, top, x + self.panel[0], top + self.caption_height


def comparison_layout(frame_size: tuple[int, int], count: int, *, captions: bool = True,
                      mouth_zoom: bool = False, vertical: bool | None = None) -> ComparisonLayout:
    """The layout of ``count`` panels of ``frame_size`` = (W, H) (see :class:`ComparisonLayout`).

    ``vertical`` None: stacked when the clip is wide (W > 1.25 H). The caption band is about 11% of the
    panel height (at least 32 px); the mouth strip is half the panel height.
    """
    width, height = int(frame_size[0]), int(frame_size[1])
    if vertical is None:
        vertical = width > WIDE_ASPECT * height
    caption = 0
    if captions:
        caption = max(32, int(round(0.11 * height)))
        caption += caption % 2
    zoom = 0
    if mouth_zoom:
        zoom = max(16, height // 2)
        zoom += zoom % 2
    return ComparisonLayout(int(count), (width, height), caption, zoom, bool(vertical))


def _fit_panel(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, h, w, 3) -> (n, H, W, 3): resized with its aspect kept, centred on the caption colour."""
    width, height = size
    h, w = frames.shape[1:3]
    if (w, h) == (width, height):
        return frames
    scale = min(width / w, height / h)
    new_w, new_h = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.empty((len(frames), height, width, 3), np.uint8)
    out[:] = CAPTION_BACKGROUND
    x0, y0 = (width - new_w) // 2, (height - new_h) // 2
    for k, frame in enumerate(frames):
        out[k, y0:y0 + new_h, x0:x0 + new_w] = cv2.resize(frame, (new_w, new_h), interpolation=interp)
    return out


def _mouth_strip(frame: np.ndarray, box: np.ndarray, width: int, height: int) -> np.ndarray:
    """The lower half of face ``box`` (x1, y1, x2, y2) in ``frame`` scaled to ``height`` rows, centred in
    ``width`` columns; a plain band when the box is empty (no face)."""
    strip = np.empty((height, width, 3), np.uint8)
    strip[:] = CAPTION_BACKGROUND
    x1, y1, x2, y2 = (int(v) for v in box)
    y1 = y1 + (y2 - y1) // 2
    x1, x2 = max(0, x1), min(frame.shape[1], x2)
    y1, y2 = max(0, y1), min(frame.shape[0], y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return strip
    mouth = frame[y1:y2, x1:x2]
    scale = min(height / mouth.shape[0], width / mouth.shape[1])
    new_w, new_h = max(1, int(round(mouth.shape[1] * scale))), max(1, int(round(mouth.shape[0] * scale)))
    x0, y0 = (width - new_w) // 2, (height - new_h) // 2
    strip[y0:y0 + new_h, x0:x0 + new_w] = cv2.resize(mouth, (new_w, new_h), interpolation=cv2.INTER_CUBIC)
    return strip


def _caption_band(text: str, width: int, height: int) -> np.ndarray:
    """A (height, width, 3) dark band with ``text`` centred in white, about half the band high."""
    band = np.empty((height, width, 3), np.uint8)
    band[:] = CAPTION_BACKGROUND
    if not text:
        return band
    font = cv2.FONT_HERSHEY_SIMPLEX
    (unit_w, unit_h), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = min(0.5 * height / unit_h, 0.9 * width / unit_w)
    thickness = max(1, int(round(scale * 1.6)))
    (text_w, text_h), _ = cv2.getTextSize(text, font, scale, thickness)
    origin = ((width - text_w) // 2, (height + text_h) // 2)
    cv2.putText(band, text, origin, font, scale, CAPTION_TEXT, thickness, cv2.LINE_AA)
    return band


def side_by_side(
    left: np.ndarray | Sequence[np.ndarray],
    right: np.ndarray | None = None,
    labels: Sequence[str | None] | None = ("source", "Diff2Lip"),
    *,
    mouth_boxes: np.ndarray | None = None,
    vertical: bool | None = None,
) -> np.ndarray:
    """Place 2 or 3 frame sequences next to each other (or one above the other), each captioned below.

    Args:
        left: (n, H1, W1, 3) uint8 RGB frames, or a list of 2-3 such arrays (then ``right`` must be None).
        right: (n, H2, W2, 3) uint8 RGB frames when ``left`` is a single array.
        labels: one caption per panel (None or "" for an empty band); None for no caption bands at all.
            Captions sit in a dark band under each panel, outside the picture, so nothing covers them.
        mouth_boxes: optional (n, 4) face boxes x1, y1, x2, y2 in the first panel's pixels: a zoomed strip of
            the lower half of each box is added under every panel (the mouth, where the panels differ).
        vertical: stack the panels top to bottom; None: only for wide clips (W > 1.25 H).

    Returns:
        (n, H_total, W_total, 3) uint8 of ``comparison_layout((W1, H1), ...).size``: every panel is fitted to
        the first panel's size (aspect kept). Single frames (H, W, 3) give a (H_total, W_total, 3) result.
    """
    if isinstance(left, (list, tuple)):
        if right is not None:
            raise ValueError("pass either a list of panels or left and right, not both")
        panels = [np.asarray(p) for p in left]
    else:
        if right is None:
            raise ValueError("side_by_side needs at least two panels")
        panels = [np.asarray(left), np.asarray(right)]
    if not 2 <= len(panels) <= 3:
        raise ValueError(f"side_by_side supports 2 or 3 panels, got {len(panels)}")
    single = panels[0].ndim == 3
    panels = [p[None] if p.ndim == 3 else p for p in panels]
    for p in panels:
        if p.ndim != 4 or p.shape[-1] != 3 or p.dtype != np.uint8:
            raise ValueError(f"each panel must be (n, H, W, 3) uint8 RGB, got {p.shape} {p.dtype}")
    count = len(panels[0])
    if any(len(p) != count for p in panels):
        raise ValueError(f"all panels need the same number of frames, got {[len(p) for p in panels]}")
    captions = labels is not None
    labels = list(labels) if captions else [None] * len(panels)
    if len(labels) != len(panels):
        raise ValueError(f"got {len(labels)} labels for {len(panels)} panels")
    if mouth_boxes is not None:
        mouth_boxes = np.asarray(mouth_boxes).reshape(-1, 4)
        if len(mouth_boxes) != count:
            raise ValueError(f"got {len(mouth_boxes)} mouth boxes for {count} frames")

    height, width = panels[0].shape[1:3]
    layout = comparison_layout((width, height), len(panels), captions=captions,
                               mouth_zoom=mouth_boxes is not None, vertical=vertical)
    out_w, out_h = layout.size
    out = np.empty((count, out_h, out_w, 3), np.uint8)
    for i, (panel, text) in enumerate(zip(panels, labels)):
        x, y = layout.cell_origin(i)
        out[:, y:y + height, x:x + width] = _fit_panel(panel, (width, height))
        if layout.zoom_height:
            top = y + height
            for k in range(count):
                out[k, top:top + layout.zoom_height, x:x + width] = _mouth_strip(
                    out[k, y:y + height, x:x + width], mouth_boxes[k], width, layout.zoom_height)
        if layout.caption_height:
            x1, y1, x2, y2 = layout.caption_box(i)
            out[:, y1:y2, x1:x2] = _caption_band(text or "", width, layout.caption_height)
    return out[0] if single else out
