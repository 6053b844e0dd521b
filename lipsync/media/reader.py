"""Decoding: :func:`iter_frames` streams (n, H, W, 3) uint8 RGB chunks at the source's constant frame rate and
display orientation, :func:`read_frames` seeks frame-exactly (offset streams, edit lists), and still images
(:func:`is_image`, :func:`read_image`).

Every subprocess takes an argument list; nothing goes through a shell.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from lipsync.errors import InvalidMediaError
from lipsync.media.probe import (
    VideoInfo,
    ffmpeg_reason,
    find_ffmpeg,
    find_ffprobe,
    kill_process,
    probe_video,
    read_tail,
)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})


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
                    f"{path.name} could not be decoded as a video: {ffmpeg_reason(read_tail(errors), path)}; "
                    "upload an mp4/mov/mkv/webm file"
                )
            if total == 0:
                raise InvalidMediaError(
                    f"{path.name} decoded to zero frames; upload a video with at least one frame "
                    "(mp4/mov/mkv/webm)"
                )
        finally:
            kill_process(proc)
            if proc.stdout is not None and not proc.stdout.closed:
                proc.stdout.close()


# ----------------------------------------------------------------------------------------------------------
# Damaged input


@dataclass
class DecodeDamage:
    """Frames of a video that could not be decoded cleanly: ``ranges`` of (first, last) frame indices, inclusive,
    in the numbering of :func:`iter_frames`, at ``fps``."""

    ranges: list
    fps: float

    @property
    def frames(self) -> int:
        """Number of damaged frames."""
        return sum(last - first + 1 for first, last in self.ranges)

    def describe(self) -> str:
        """In words, e.g. "frames 170–201 could not be decoded cleanly (5.7–6.7 s)" ("" when there is no damage)."""
        if not self.ranges:
            return ""
        spans = [(f"{a}" if a == b else f"{a}–{b}", f"{a / self.fps:.1f}–{(b + 1) / self.fps:.1f} s")
                 for a, b in self.ranges]
        noun = "frame" if len(spans) == 1 and "–" not in spans[0][0] else "frames"
        if len(spans) == 1:
            return f"{noun} {spans[0][0]} could not be decoded cleanly ({spans[0][1]})"
        listed = ", ".join(f"{frames} ({seconds})" for frames, seconds in spans[:-1])
        return f"{noun} {listed} and {spans[-1][0]} ({spans[-1][1]}) could not be decoded cleanly"


def decode_damage(path: str | Path, info: VideoInfo | None = None, count: int | None = None) -> DecodeDamage:
    """Find the frames of a video that could not be decoded cleanly (a damaged or half-overwritten file).

    One ffprobe pass decodes the video stream on one thread, packet by packet, and attaches the decoder's error
    messages to the next frame it delivers (``-show_log``); so the packet sent just before that frame is the
    one that failed. Nothing is reported unless the decoder reported an error. A frame is damaged when its
    packet failed or produced no picture (the stream freezes there), and so is every later packet in decoding
    order up to the next keyframe: those pictures are predicted from the damaged ones (block damage).
    Timestamps map to :func:`iter_frames`'s numbering (time 0 is the first decoded frame, constant
    ``info.fps``); frames past the last decodable one are not counted.

    Args:
        path: video file.
        info: the result of :func:`probe_video` (probed here when None).
        count: only frames [0, count) matter (None: the whole video); decoding stops a second after them.
    Returns:
        :class:`DecodeDamage` (empty ``ranges`` for a clean file).
    """
    path = Path(path)
    if info is None:
        info = probe_video(path)
    fps = float(info.fps)
    interval = ["-read_intervals", f"%+{count / fps + 1:.3f}"] if count is not None else []
    cmd = [find_ffprobe(), "-v", "error", "-threads", "1", "-show_log", "16", "-select_streams", "v:0", *interval,
           "-show_entries", "packet=pts,flags:frame=best_effort_timestamp", "-of", "json", str(path)]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    try:
        items = json.loads(proc.stdout.decode("utf-8", "replace") or "{}").get("packets_and_frames", [])
    except ValueError:  # ffprobe stopped half-way through its output
        items = []
    frames = [int(x["best_effort_timestamp"]) for x in items
              if x.get("type") == "frame" and x.get("best_effort_timestamp") is not None]
    if not frames or not (proc.stderr.strip() or any(x.get("logs") for x in items)):
        return DecodeDamage([], fps)
    decoded = set(frames)
    origin = first_frame_pts(path, info)
    origin = min(decoded) if origin is None else origin
    packets: list = []  # (pts or None, keyframe) in decoding order
    bad: set = set()  # indices into packets
    for item in items:
        if item.get("type") == "packet":
            pts = item.get("pts")
            packets.append((None if pts is None else int(pts), "K" in item.get("flags", "")))
            if pts is not None and int(pts) not in decoded and int(pts) >= origin:
                bad.add(len(packets) - 1)  # no picture came out of it
        elif item.get("logs") and packets:
            bad.add(len(packets) - 1)  # the decoder complained while decoding the last packet sent

    def index(pts: int) -> int:
        return round(float(Fraction(pts - origin) * info.time_base * info.fps))

    last = index(max(decoded)) if count is None else min(index(max(decoded)), count - 1)
    damaged: set = set()
    shown = sorted(decoded)
    for a, b in zip(shown[:-1], shown[1:]):  # packets the demuxer skipped (MPEG-PS resyncs): a hole in time
        if index(b) - index(a) > 1:
            damaged.update(range(index(a) + 1, index(b)))
            bad.update(i for i, (pts, key) in enumerate(packets) if pts == b and not key)  # predicted from them
    for i in sorted(bad):
        j = i
        while j < len(packets) and (j == i or not packets[j][1]):  # up to the next keyframe
            if packets[j][0] is not None and 0 <= index(packets[j][0]) <= last:
                damaged.add(index(packets[j][0]))
            j += 1
    return DecodeDamage(_index_ranges(sorted(i for i in damaged if 0 <= i <= last)), fps)


def damage_warnings(path: str | Path, info: VideoInfo | None, count: int | None = None, strict: bool = False) -> list:
    """The job's warnings about frames [0, count) of a video that do not decode cleanly (:func:`decode_damage`).

    Returns:
        [] for a clean video, else one line such as "frames 170–201 could not be decoded cleanly (5.7–6.7 s)".
    Raises:
        InvalidMediaError: ``strict`` and some frames are damaged.
    """
    text = decode_damage(path, info, count).describe()
    if text and strict:
        raise InvalidMediaError(f"{Path(path).name}: {text}; re-encode or download the video again, or run "
                                "without --strict to lip-sync it anyway")
    return [text] if text else []


def _index_ranges(indices: Sequence[int]) -> list:
    """[(first, last), ...] of runs of consecutive integers in sorted ``indices``."""
    ranges: list = []
    for i in indices:
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], i)
        else:
            ranges.append((i, i))
    return ranges


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
