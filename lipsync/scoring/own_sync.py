"""Scoring a video's lip sync with an own expert (``python -m lipsync.train_syncnet``): face crops as the engine
makes them, the speech's mel spectrogram, and :func:`lipsync.scoring.syncnet_color.expert_sync_score`.

The expert saw the engine's square face crops (``lipsync.media.crop.crop_faces`` of the tracked boxes) during
training, so a video is scored on the same crops. Its figures are labelled "own expert": they are not LSE-D /
LSE-C and are not comparable to published numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from lipsync.errors import LipSyncError
from lipsync.media import audio as audio_io
from lipsync.media.crop import crop_faces
from lipsync.media.detectors import get_detector
from lipsync.media.source import FrameSource, detect_frames, track_faces
from lipsync.scoring.syncnet_color import SYNC_FRAMES, ExpertSyncScore, expert_sync_score

FACE_SIZE = 128


def longest_run(valid: np.ndarray) -> Tuple[int, int]:
    """[start, stop) of the longest run of True in a (N,) bool array ((0, 0) when there is none)."""
    best, start = (0, 0), None
    for i, v in enumerate(list(np.asarray(valid, bool)) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def video_face_crops(video, detector="mediapipe", chunk_frames: int = 32) -> Tuple[np.ndarray, np.ndarray, float]:
    """The engine's face crops of every frame of ``video``.

    Returns (faces (N, 128, 128, 3) uint8 RGB, valid (N,) bool: frames with a face, found or interpolated, fps).
    ``detector``: a name (s3fd, mediapipe, opencv) or a detector object. Raises NoFaceError without any face.
    """
    source = FrameSource(Path(video))
    try:
        finder = get_detector(detector) if isinstance(detector, str) else detector
        detections = detect_frames(source, finder, source.num_frames, chunk_frames)
        boxes, valid, _, _ = track_faces(detections, source)
        faces = []
        for start in range(0, len(detections), chunk_frames):
            stop = min(len(detections), start + chunk_frames)
            faces.append(crop_faces(source.read(start, stop), boxes[start:stop], FACE_SIZE))
    finally:
        source.close()
    return np.concatenate(faces), np.asarray(valid, bool), float(source.fps)


def score_faces(expert, faces: np.ndarray, valid: np.ndarray, wav16k: np.ndarray, fps: float,
                max_offset: int = 15) -> ExpertSyncScore:
    """Score the longest run of frames with a face against ``wav16k`` (16 kHz mono, aligned to frame 0)."""
    start, stop = longest_run(valid)
    if stop - start < SYNC_FRAMES + 1:
        raise LipSyncError(f"the video has no run of {SYNC_FRAMES + 1} consecutive frames with a face; lip sync "
                           "cannot be scored")
    shift = int(round(start / fps * audio_io.DEFAULT_AUDIO.sample_rate))
    mel = audio_io.melspectrogram(np.asarray(wav16k, np.float32)[shift:]).astype(np.float32)
    return expert_sync_score(expert, faces[start:stop], mel, fps, max_offset=max_offset)


def score_video(expert, video, audio=None, detector="mediapipe", max_offset: int = 15) -> ExpertSyncScore:
    """Own-expert lip-sync score of ``video`` against ``audio`` (any file ffmpeg reads; default: the video's own
    sound track). See :class:`lipsync.scoring.syncnet_color.ExpertSyncScore` for the fields."""
    faces, valid, fps = video_face_crops(video, detector)
    wav = audio_io.load_audio(audio if audio is not None else video)
    return score_faces(expert, faces, valid, wav, fps, max_offset)


class OwnExpertScorer:
    """The engine's ``--score`` with an own expert: crops like the model's input, a dict per stream."""

    label = "own expert"

    def __init__(self, expert):
        self.expert = expert

    def crop(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(n, 128, 128, 3) uint8 crops of frames (n, H, W, 3) at boxes (n, 4)."""
        return crop_faces(frames, np.asarray(boxes, np.int64), FACE_SIZE)

    def score(self, faces: np.ndarray, wav16k: np.ndarray, fps: float) -> Dict[str, float]:
        result = expert_sync_score(self.expert, faces, audio_io.melspectrogram(np.asarray(wav16k, np.float32)),
                                   fps)
        return {"measure": self.label, "offset": result.offset, "confidence": result.confidence,
                "distance": result.distance, "distance_at_0": result.distance_at_0}


def load_scorer(path: Optional[str]) -> OwnExpertScorer:
    """An :class:`OwnExpertScorer` for the expert folder (or ``expert.safetensors``) at ``path``."""
    from lipsync.scoring.syncnet_color import load_own_expert

    return OwnExpertScorer(load_own_expert(path))
