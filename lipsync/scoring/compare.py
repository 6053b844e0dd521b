"""Comparison with Wav2Lip, and SyncNet lip-sync scores (LSE-D / LSE-C) for every stream of a job.

The engine walks the output timeline in chunks; for each chunk this module gives it

* the Wav2Lip frames: :class:`Wav2LipRunner` runs the generator the way Wav2Lip's ``inference.py`` does
  (the detected box grown by Wav2Lip's pads (0, 10, 0, 0) and clipped, a 96×96 crop, the unmasked frame as
  its own reference, the whole 96×96 result resized into the box), or :class:`Wav2LipVideoReader` reads a
  Wav2Lip result the user already has;
* the SyncNet crops: :class:`SyncCropCollector` keeps 224×224 face-track crops of each stream (source,
  Wav2Lip, Diff2Lip) for the first ``score_seconds`` of the output, then scores each against the driving
  audio with :class:`lipsync.scoring.syncnet.SyncScorer`.

Memory: the crops are kept, 224 × 224 × 3 bytes (147 kB) per frame and stream: about 220 MB per stream and
minute of 25 fps video, so at most ``score_seconds`` (default 60 s) of the output is scored.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional, Sequence

import cv2
import numpy as np

from lipsync.errors import LipSyncError
from lipsync.media import audio as audio_io
from lipsync.media.crop import crop_faces, paste_faces
from lipsync.media.probe import as_fraction, probe_video
from lipsync.media.reader import iter_frames
from lipsync.media.tracking import pad_boxes

SCORE_SECONDS = 60.0  # default length of output scored by SyncNet
STREAMS = ("source", "wav2lip", "diffusion")  # keys of JobReport.scores
STREAM_LABELS = {"source": "source (before)", "wav2lip": "Wav2Lip", "diffusion": "Diff2Lip"}
WAV2LIP_AUDIO_OFFSET = 1  # Wav2Lip starts window i at mel column int(80·i/fps): one frame later than Diff2Lip's


# ----------------------------------------------------------------------------------------------------
# Wav2Lip frames
# ----------------------------------------------------------------------------------------------------


def wav2lip_boxes(boxes: np.ndarray, frame_shape: Sequence[int]) -> np.ndarray:
    """The detected boxes grown by Wav2Lip's pads (top 0, bottom 10, left 0, right 0) and clipped to the frame.

    Args:
        boxes: (N, 4) x1, y1, x2, y2 pixels (the engine's Diff2Lip boxes).
        frame_shape: (H, W, 3) or (N, H, W, 3).
    Returns (N, 4) int64.
    """
    from lipsync.scoring.wav2lip import WAV2LIP_PADS

    return pad_boxes(np.asarray(boxes), WAV2LIP_PADS, tuple(frame_shape)).astype(np.int64)


def wav2lip_mels(mel: np.ndarray, fps, num_frames: int, audio_offset: int = 0) -> np.ndarray:
    """Mel windows of ``mel`` (80, T) with Wav2Lip's own alignment: (num_frames, 80, 16) float32.

    Window i starts at mel column floor(80·(i + audio_offset)/fps) — ``audio_offset`` + 1 in the terms of
    :func:`lipsync.media.audio.mel_windows`, whose default is Diff2Lip's one-frame-late alignment.
    """
    return audio_io.mel_windows(mel, fps, num_frames=num_frames, audio_offset=int(audio_offset) + WAV2LIP_AUDIO_OFFSET)


class Wav2LipRunner:
    """Wav2Lip frames along an output timeline.

    Args:
        model: a :class:`lipsync.scoring.wav2lip.Wav2LipModel` in eval mode.
        boxes: (M, 4) x1, y1, x2, y2 of every output frame (the detected boxes, before Wav2Lip's pads).
        valid: (M,) bool; frames with False pass through unchanged.
        mels: (M, 80, 16) mel windows (see :func:`wav2lip_mels`).
        frame_shape: (H, W, 3) of the frames.
        batch_size: frames per forward pass.
    """

    def __init__(self, model, boxes: np.ndarray, valid: np.ndarray, mels: np.ndarray, frame_shape: Sequence[int],
                 batch_size: Optional[int] = None):
        from lipsync.scoring.wav2lip import WAV2LIP_BATCH_SIZE

        if not len(boxes) == len(valid) == len(mels):
            raise ValueError(f"{len(boxes)} boxes, {len(valid)} valid flags and {len(mels)} mel windows; "
                             "pass one of each per output frame")
        self.model = model
        self.boxes = wav2lip_boxes(boxes, frame_shape)
        nonempty = (self.boxes[:, 2] > self.boxes[:, 0]) & (self.boxes[:, 3] > self.boxes[:, 1])
        self.valid = np.asarray(valid, dtype=bool) & nonempty
        self.mels = mels
        self.batch_size = int(batch_size or WAV2LIP_BATCH_SIZE)

    def frames(self, start: int, frames: np.ndarray) -> np.ndarray:
        """Wav2Lip result of output frames [start, start + n): (n, H, W, 3) uint8 RGB from (n, H, W, 3) source."""
        from lipsync.scoring.wav2lip import WAV2LIP_FACE_SIZE, wav2lip_infer

        stop = start + len(frames)
        boxes, valid = self.boxes[start:stop], self.valid[start:stop]
        generated = np.zeros((len(frames), WAV2LIP_FACE_SIZE, WAV2LIP_FACE_SIZE, 3), np.uint8)
        if valid.any():
            faces96 = crop_faces(frames[valid], boxes[valid], WAV2LIP_FACE_SIZE)  # (n_valid, 96, 96, 3)
            generated[valid] = wav2lip_infer(self.model, faces96, self.mels[start:stop][valid], self.batch_size)
        return paste_faces(frames, boxes, generated, valid, mode="box")


class Wav2LipVideoReader:
    """A Wav2Lip result the user already has, read along the output timeline.

    Output frame k shows the frame of ``path`` at time k / fps (ffmpeg converts its rate to ``fps``), resized to
    ``size``; past its end the last frame repeats. Decoding is sequential, one chunk in memory.

    Raises InvalidMediaError / NoVideoStreamError when ``path`` is not a video.
    """

    def __init__(self, path, size: Sequence[int], fps):
        self.path = Path(path)
        info = probe_video(self.path)
        self.width, self.height = int(size[0]), int(size[1])
        self._info = dataclasses.replace(info, fps=as_fraction(fps))
        self._chunks: Optional[Iterator[np.ndarray]] = None
        self._buffer = np.zeros((0, self.height, self.width, 3), np.uint8)
        self._last: Optional[np.ndarray] = None
        self._position = 0
        self._finished = False

    def _resize(self, chunk: np.ndarray) -> np.ndarray:
        if chunk.shape[1:3] == (self.height, self.width):
            return chunk
        return np.stack([cv2.resize(f, (self.width, self.height), interpolation=cv2.INTER_AREA) for f in chunk])

    def frames(self, start: int, frames: np.ndarray) -> np.ndarray:
        """The next ``len(frames)`` frames (``start`` must continue the previous call): (n, H, W, 3) uint8 RGB."""
        if start != self._position:
            raise ValueError(f"{self.path.name} is read sequentially; expected frame {self._position}, got {start}")
        n = len(frames)
        if self._chunks is None and not self._finished:
            self._chunks = iter_frames(self.path, 32, self._info)
        parts, have = [self._buffer], len(self._buffer)
        while have < n and not self._finished:
            chunk = next(self._chunks, None)
            if chunk is None:  # its end: from here on the last frame repeats
                self.close()
                self._finished = True
                break
            chunk = self._resize(chunk)
            parts.append(chunk)
            have += len(chunk)
        out = np.concatenate(parts)
        if len(out):
            self._last = out[-1:]
        if len(out) < n:
            out = np.concatenate([out, np.repeat(self._last, n - len(out), axis=0)])
        self._buffer = out[n:]
        self._position += n
        return out[:n]

    def close(self) -> None:
        if self._chunks is not None:
            self._chunks.close()
        self._chunks = None


# ----------------------------------------------------------------------------------------------------
# Lip-sync scores
# ----------------------------------------------------------------------------------------------------


class SyncCropCollector:
    """SyncNet face-track crops of several streams, collected chunk by chunk along the output timeline.

    Args:
        boxes: (M, 4) x1, y1, x2, y2 of every output frame (frames without a face already hold the nearest
            valid box, as :func:`lipsync.media.tracking.fill_missing` leaves them).
        fps: output frame rate.
        score_seconds: only the first ``score_seconds`` of the output are kept and scored (memory: ~147 kB per
            frame and stream).
    The boxes are smoothed once over the whole scored track (:func:`lipsync.scoring.syncnet.smooth_face_track`), so the
    chunks are cropped with ``smooth=False`` and match a one-shot crop of the whole track.
    """

    def __init__(self, boxes: np.ndarray, fps, score_seconds: float = SCORE_SECONDS, crop=None):
        from lipsync.scoring.syncnet import smooth_face_track

        if not score_seconds > 0:
            raise ValueError(f"score_seconds must be positive, got {score_seconds}")
        self.fps = float(fps)
        self.num_frames = min(len(boxes), max(1, int(round(score_seconds * self.fps))))
        boxes = np.asarray(boxes, dtype=np.float64)[: self.num_frames]
        self.crop = crop  # crop(frames, boxes): a scorer's own crops (an own expert: the engine's face crops)
        self.boxes = boxes if crop is not None else smooth_face_track(boxes)
        self.crops: Dict[str, list] = {}

    def add(self, start: int, streams: Mapping[str, Optional[np.ndarray]]) -> None:
        """Crop output frames [start, start + n) of each stream ({name: (n, H, W, 3) uint8 RGB or None})."""
        from lipsync.scoring.syncnet import crop_syncnet_faces

        stop = min(self.num_frames, start + max((len(f) for f in streams.values() if f is not None), default=0))
        if stop <= start:
            return
        for name, frames in streams.items():
            if frames is not None and self.crop is not None:
                self.crops.setdefault(name, []).append(self.crop(frames[: stop - start], self.boxes[start:stop]))
            elif frames is not None:
                crops = crop_syncnet_faces(frames[: stop - start], self.boxes[start:stop], smooth=False)
                self.crops.setdefault(name, []).append(crops)  # (n, 224, 224, 3)

    def score(self, scorer, wav16k: np.ndarray, sample_rate: int = 16000) -> Dict[str, Dict[str, float]]:
        """LSE-D / LSE-C / offset of every collected stream against ``wav16k`` (the driving audio, 16 kHz).

        Returns {stream: {"lse_d", "lse_c", "offset", "frames", "seconds"}} in :data:`STREAMS` order.
        """
        scores = {}
        for name in sorted(self.crops, key=lambda k: STREAMS.index(k) if k in STREAMS else len(STREAMS)):
            faces = np.concatenate(self.crops[name])  # (n, 224, 224, 3)
            seconds = len(faces) / self.fps
            wav = np.asarray(wav16k)[: int(np.ceil(seconds * sample_rate))]
            result = scorer.score(faces, wav, fps=self.fps)
            if isinstance(result, dict):  # an own expert's figures, labelled as such
                scores[name] = {**result, "frames": int(len(faces)), "seconds": round(seconds, 3)}
                continue
            scores[name] = {"lse_d": float(result.lse_d), "lse_c": float(result.lse_c), "offset": int(result.offset),
                            "frames": int(len(faces)), "seconds": round(seconds, 3)}
        return scores


def check_scorable(num_frames: int, fps, score_seconds: float = SCORE_SECONDS) -> None:
    """Raise LipSyncError when the scored part of the output is too short for SyncNet (6 frames at 25 fps)."""
    seconds = min(num_frames / float(fps), score_seconds)
    if round(seconds * 25) < 6:
        raise LipSyncError(f"the output is {seconds:.2f} s long; lip-sync scoring needs at least 0.24 s of video; "
                           "use longer audio or turn scoring off")


def scores_markdown(scores: Mapping[str, Mapping[str, float]]) -> str:
    """A small Markdown table of LSE-D (lower is better) and LSE-C (higher is better) per stream, or of the own
    expert's offset, confidence and distance at offset 0 when it scored."""
    if not scores:
        return ""
    seconds = max(s.get("seconds", 0.0) for s in scores.values())
    if any(s.get("measure") == "own expert" for s in scores.values()):
        rows = [f"| {STREAM_LABELS.get(name, name)} | {int(s['offset'])} | {s['confidence']:.3f} | "
                f"{s['distance_at_0']:.3f} |" for name, s in scores.items()]
        return ("| video | offset (frames) | confidence ↑ | distance at offset 0 ↓ |\n|---|---|---|---|\n"
                + "\n".join(rows) + f"\n\nOwn lip-sync expert against the driving audio, first {seconds:.1f} s of the "
                "output. Not LSE-C/LSE-D: an expert trained by this project, not comparable to published figures.")
    rows = [f"| {STREAM_LABELS.get(name, name)} | {s['lse_d']:.3f} | {s['lse_c']:.3f} | {int(s['offset'])} |"
            for name, s in scores.items()]
    return ("| video | LSE-D ↓ | LSE-C ↑ | offset (frames) |\n|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\nSyncNet against the driving audio, first {seconds:.1f} s of the output.")
