"""A clip as the engine reads it: :class:`FrameSource` (a video decoded on demand, or a still photo as one
frame), and the first pass over it: :func:`detect_frames` (detections only, chunk by chunk) and
:func:`track_faces` (the boxes the engine crops with).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from lipsync.media.probe import probe_video
from lipsync.media.reader import is_image, iter_frames, read_image
from lipsync.media.stages import StageTimer
from lipsync.media.tracking import FaceConfig, boxes_from_detections

IMAGE_FPS = Fraction(25)  # a still photo becomes a 25 fps clip


class FrameSource:
    """Frames of a video file (decoded on demand) or of a still photo (one frame)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.is_image = is_image(self.path)
        if self.is_image:
            self.image = read_image(self.path)
            self.height, self.width = self.image.shape[:2]
            self.fps = IMAGE_FPS
            self.num_frames = 1
            self.info = None
        else:
            self.info = probe_video(self.path)
            self.height, self.width, self.fps = self.info.height, self.info.width, self.info.fps
            self.num_frames = self.info.num_frames
        self._reader: Optional[Iterator[np.ndarray]] = None
        self._position = 0
        self._buffer = np.zeros((0, self.height, self.width, 3), np.uint8)

    def chunks(self, chunk_size: int, count: Optional[int] = None) -> Iterator[np.ndarray]:
        """Sequential (n, H, W, 3) uint8 chunks from frame 0."""
        if self.is_image:
            yield self.image[None]
            return
        yield from iter_frames(self.path, chunk_size, self.info, count=count)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) ascending. Continues an open sequential reader when possible, else seeks."""
        if self.is_image:
            return np.repeat(self.image[None], stop - start, axis=0)
        if self._reader is None or start != self._position:
            self.close()
            self._reader = iter_frames(self.path, 64, self.info, start=start)
            self._position = start
        out = [self._buffer]
        have = len(self._buffer)
        while have < stop - start:
            chunk = next(self._reader, None)
            if chunk is None:
                break
            out.append(chunk)
            have += len(chunk)
        frames = np.concatenate(out)
        if len(frames) < stop - start:  # the container claimed more frames than decode: repeat the last
            frames = np.concatenate([frames, np.repeat(frames[-1:], stop - start - len(frames), axis=0)])
        self._buffer = frames[stop - start:]
        self._position = stop
        return frames[: stop - start]

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = None
        self._buffer = self._buffer[:0]


def detect_frames(source: FrameSource, detector, count: int, chunk_frames: int = 32, timer=None,
                  notify: Optional[Callable[[str, float, str], None]] = None) -> List[np.ndarray]:
    """Per-frame detections of frames [0, count) of ``source``, decoded chunk by chunk (only detections are kept).

    Args:
        source: the clip.
        detector: any ``lipsync.media.detectors.FaceDetector``.
        count: frames to detect; fewer come back when the clip decodes to fewer frames.
        chunk_frames: frames decoded per chunk.
        timer: optional ``StageTimer`` that gets the "decode" and "detect" seconds.
        notify: optional ``progress(stage, fraction, message)``.
    Returns:
        one (k, 5) float array (x1, y1, x2, y2, score) per decoded frame.
    """
    timer = timer or StageTimer()
    notify = notify or (lambda stage, fraction, message: None)
    detections: List[np.ndarray] = []
    chunks = source.chunks(chunk_frames, count=count)
    try:
        while len(detections) < count:
            with timer("decode"):
                chunk = next(chunks, None)
            if chunk is None:
                break
            with timer("detect"):
                detections.extend(detector.detect(chunk[: count - len(detections)]))
            notify("detect", min(1.0, len(detections) / count), f"faces: frame {len(detections)}/{count}")
    finally:
        chunks.close()
    return detections


def track_faces(detections: List[np.ndarray], source: FrameSource, pads=(0, 0, 0, 0)
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The boxes the engine crops with: ``lipsync.media.tracking.boxes_from_detections`` with the job's pads.

    Args:
        detections: per-frame detections from :func:`detect_frames`.
        source: the clip (its frame size clips padded boxes; its name is used in errors).
        pads: (top, bottom, left, right) pixels.
    Returns:
        boxes (N, 4) int64 x1, y1, x2, y2, valid (N,) bool (frames to lip-sync), found (N,) bool (detected),
        refused (N,) bool (a face whose mouth is out of the picture: never lip-synced).
    Raises:
        NoFaceError: no frame has a face.
    """
    frame_shape = (source.height, source.width, 3)
    config = FaceConfig(pads=tuple(int(p) for p in pads))
    return boxes_from_detections(detections, frame_shape, config, source=source.path.name)
