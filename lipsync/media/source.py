"""A clip as the engine reads it: :class:`FrameSource` (a video decoded on demand, or a still photo as one
frame), and the first pass over it: :func:`detect_frames` (detections, plus what the face choice needs:
each frame's change for the cut test, each face's appearance and mouth patch; chunk by chunk, no frame is
kept) and :func:`face_track` / :func:`track_faces` (the boxes the engine crops with, shot by shot).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from lipsync.errors import NoAudioError
from lipsync.media import audio as audio_io
from lipsync.media.identity import face_descriptors
from lipsync.media.probe import probe_video
from lipsync.media.reader import is_image, iter_frames, read_image
from lipsync.media.shots import ChangeMeter, find_cuts, shot_bounds
from lipsync.media.speaker import choose_rows
from lipsync.media.stages import StageTimer
from lipsync.media.talking import mouth_patches, speech_envelope
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


class ClipDetections(list):
    """Per-frame detections of a clip (a list of (k, 5+) arrays, as detectors return them) that also carries,
    frame for frame: ``changes`` (N,) the frame's change from the previous one (lipsync.media.shots),
    ``descriptors`` (k, D) appearance descriptors and ``patches`` (k, 8, 16) mouth patches of its faces.
    Slicing keeps them."""

    def __init__(self, detections=(), changes=(), descriptors=(), patches=()):
        super().__init__(detections)
        self.changes = list(changes)
        self.descriptors = list(descriptors)
        self.patches = list(patches)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ClipDetections(list.__getitem__(self, index), self.changes[index], self.descriptors[index],
                                  self.patches[index])
        return list.__getitem__(self, index)

    def add(self, frames: np.ndarray, detections: Sequence[np.ndarray], meter: ChangeMeter) -> None:
        """Append the detections of (n, H, W, 3) uint8 ``frames`` (in clip order) and measure them."""
        before = len(meter.changes)
        meter.add(frames)
        self.changes.extend(meter.changes[before:])
        for frame, dets in zip(frames, detections):  # float16: 0.9 KB per face and frame
            self.append(dets)
            self.descriptors.append(face_descriptors(frame, dets).astype(np.float16))
            self.patches.append(mouth_patches(frame, dets).astype(np.float16))

    @property
    def shots(self) -> List[Tuple[int, int]]:
        """[start, stop) frame ranges of the shots (one shot when no changes were measured)."""
        if len(self.changes) != len(self):
            return [(0, len(self))]
        return shot_bounds(find_cuts(np.asarray(self.changes)), len(self))


def detect_frames(source: FrameSource, detector, count: int, chunk_frames: int = 32, timer=None,
                  notify: Optional[Callable[[str, float, str], None]] = None) -> ClipDetections:
    """Per-frame detections of frames [0, count) of ``source``, decoded chunk by chunk (only detections, frame
    changes, face descriptors and mouth patches are kept).

    Args:
        source: the clip.
        detector: any ``lipsync.media.detectors.FaceDetector``.
        count: frames to detect; fewer come back when the clip decodes to fewer frames.
        chunk_frames: frames decoded per chunk.
        timer: optional ``StageTimer`` that gets the "decode" and "detect" seconds.
        notify: optional ``progress(stage, fraction, message)``.
    Returns:
        :class:`ClipDetections`: one (k, 5) float array (x1, y1, x2, y2, score) per decoded frame.
    """
    timer = timer or StageTimer()
    notify = notify or (lambda stage, fraction, message: None)
    detections = ClipDetections()
    meter = ChangeMeter()
    chunks = source.chunks(chunk_frames, count=count)
    try:
        while len(detections) < count:
            with timer("decode"):
                chunk = next(chunks, None)
            if chunk is None:
                break
            with timer("detect"):
                chunk = chunk[: count - len(detections)]
                detections.add(chunk, detector.detect(chunk), meter)
            notify("detect", min(1.0, len(detections) / count), f"faces: frame {len(detections)}/{count}")
    finally:
        chunks.close()
    return detections


@dataclass
class FaceTrack:
    """The face the engine lip-syncs, per source frame, and the clip's shots."""

    boxes: np.ndarray  # (N, 4) int64 x1, y1, x2, y2 (placeholders on invalid frames)
    valid: np.ndarray  # (N,) bool: frames to lip-sync
    found: np.ndarray  # (N,) bool: the face was detected there (valid & ~found: interpolated)
    refused: np.ndarray  # (N,) bool: a face whose mouth is out of the picture (never lip-synced)
    shots: List[Tuple[int, int]]  # [start, stop) frame ranges

    @property
    def shots_without_face(self) -> List[Tuple[int, int]]:
        """Shots where the chosen face is never found: left untouched."""
        return [(a, b) for a, b in self.shots if not self.found[a:b].any()]


def own_speech(source: FrameSource, num_frames: int) -> Optional[np.ndarray]:
    """(num_frames,) speech envelope of the clip's own sound track, None for a photo or a clip without sound."""
    if source.is_image or source.info is None or not source.info.has_audio:
        return None
    try:
        wav = audio_io.load_audio(source.path)
    except NoAudioError:
        return None
    return speech_envelope(wav, source.fps, num_frames, audio_io.DEFAULT_AUDIO.sample_rate)


def face_track(detections: List[np.ndarray], source: FrameSource, pads=(0, 0, 0, 0), face_choice: str = "speaker",
               face_point=None, point_frame: int = 0) -> FaceTrack:
    """The boxes the engine crops with, shot by shot (``lipsync.media.tracking.boxes_from_detections`` with the
    clip's cuts and ``lipsync.media.speaker.choose_rows``).

    Args:
        detections: per-frame detections from :func:`detect_frames` (a plain list: one shot, largest faces).
        source: the clip (its frame size clips padded boxes; its name is used in errors; its sound tells who talks).
        pads: (top, bottom, left, right) pixels.
        face_choice: "speaker" (one person in every shot) or "largest" (the largest face of every shot).
        face_point: (x, y) pixels in frame ``point_frame``: follow the person whose face contains it.
    Raises:
        NoFaceError: no frame has a face, or ``face_point`` is on no face.
    """
    frame_shape = (source.height, source.width, 3)
    config = FaceConfig(pads=tuple(int(p) for p in pads))
    extra = isinstance(detections, ClipDetections) and len(detections.descriptors) == len(detections)
    shots = detections.shots if isinstance(detections, ClipDetections) else [(0, len(detections))]
    n = len(detections)

    def choose(usable, keeps):
        descriptors = [d[k] for d, k in zip(detections.descriptors, keeps)] if extra else None
        patches = [p[k] for p, k in zip(detections.patches, keeps)] if extra else None
        return choose_rows(usable, shots, descriptors, face_choice, face_point, point_frame,
                           speech=lambda: own_speech(source, n), patches=patches)

    boxes, valid, found, refused = boxes_from_detections(detections, frame_shape, config, source=source.path.name,
                                                         shots=shots, choose=choose)
    return FaceTrack(boxes, valid, found, refused, shots)


def track_faces(detections: List[np.ndarray], source: FrameSource, pads=(0, 0, 0, 0)
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`face_track` with the default choice (the speaker), as a tuple.

    Returns:
        boxes (N, 4) int64 x1, y1, x2, y2, valid (N,) bool (frames to lip-sync), found (N,) bool (detected),
        refused (N,) bool (a face whose mouth is out of the picture: never lip-synced).
    Raises:
        NoFaceError: no frame has a face.
    """
    track = face_track(detections, source, pads)
    return track.boxes, track.valid, track.found, track.refused
