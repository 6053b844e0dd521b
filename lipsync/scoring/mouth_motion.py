"""A lip-sync check that needs no trained weights: does the mouth open and close with the speech?

Per video frame, MediaPipe FaceMesh (bundled with the ``mediapipe`` wheel, nothing downloaded) gives 468
landmarks; the **mouth opening** is the mean distance between the upper and lower inner lip at five points
across the mouth (:data:`MOUTH_PAIRS`), divided by the distance between the outer eye corners (so it does not
depend on the face's size in the frame). It is NaN in a frame where no face mesh is found.

The **speech envelope** is the RMS of the 16 kHz mono speech over each frame's window: frame ``i`` covers
``[i / fps, (i + 1) / fps)`` seconds of the audio (sample 0 of the audio at frame 0 of the video; when the
speech is the video's own track, the streams' start times are honoured). It is NaN for frames past the end
of the audio.

The two series are compared by their **normalised cross-correlation** (Pearson's r over the frames where both
are measured) at lags ``-max_lag .. +max_lag`` frames. At lag ``L`` the opening at frame ``t`` is paired with
the envelope at frame ``t - L``: a positive lag means the mouth follows the audio, a negative one that it
leads. :func:`mouth_motion_sync` reports the peak correlation and its lag (:class:`MouthMotionSync`).

What it means: a mouth that opens when the voice is loud gives a positive peak near lag 0 (real talking
clips with their own speech: r = 0.2-0.4 at lags -1 .. +4). It is a coarse check: loudness is not the shape
of a word (closed-mouth sounds such as /m/ are loud), and on clips of a few seconds a video against unrelated
speech also reaches r = 0.2-0.3 at some lag by chance, usually at the edge of the lag range. Compare a video
with its own speech against the same video with other speech, and look at where the peak lies, rather than
reading one number in isolation.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from lipsync.console import quiet_native_stderr
from lipsync.errors import LipSyncError, NoFaceError
from lipsync.media.talking import MIN_PAIRS, lagged_correlation, speech_envelope  # noqa: F401 (public here too)

SAMPLE_RATE = 16000
# (upper inner lip, lower inner lip) FaceMesh landmark pairs, from the mouth's centre outwards on both sides
MOUTH_PAIRS = ((13, 14), (82, 87), (312, 317), (81, 178), (311, 402))
EYE_CORNERS = (33, 263)  # the outer eye corners: the face size the opening is divided by


# ----------------------------------------------------------------------------------------------------------
# Mouth opening per frame


class MouthTracker:
    """MediaPipe FaceMesh (legacy ``solutions`` API) measuring the mouth opening of one face per frame.

    Args:
        video: True for consecutive frames of one clip (FaceMesh tracks the face from frame to frame, steadier
            and faster); False to detect the face afresh in every frame (unrelated still images).
        min_confidence: FaceMesh's detection and tracking confidence.

    Use as a context manager, or call :meth:`close`, to free the graph.
    """

    def __init__(self, video: bool = True, min_confidence: float = 0.5) -> None:
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError as exc:  # pragma: no cover - mediapipe is a dependency
            raise LipSyncError(f"mediapipe is not installed ({exc}); pip install mediapipe==0.10.14") from exc
        with quiet_native_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self._mesh = face_mesh.FaceMesh(static_image_mode=not video, max_num_faces=1,
                                            min_detection_confidence=min_confidence,
                                            min_tracking_confidence=min_confidence)
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))  # the first run prints TFLite's start-up lines

    def landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        """(468, 2) landmark positions in pixels (x, y) of the face in one (H, W, 3) uint8 RGB frame, or None."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"a frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # protobuf's GetPrototype deprecation notice
            result = self._mesh.process(np.ascontiguousarray(frame))
        if not result.multi_face_landmarks:
            return None
        h, w = frame.shape[:2]
        points = np.array([(p.x, p.y) for p in result.multi_face_landmarks[0].landmark], dtype=np.float64)
        return points * np.array([w, h], dtype=np.float64)

    def opening(self, frame: np.ndarray) -> float:
        """The mouth opening of one frame (inner-lip gap / eye-corner distance); NaN where no face is found."""
        points = self.landmarks(frame)
        return math.nan if points is None else opening_from_landmarks(points)

    def openings(self, frames: np.ndarray) -> np.ndarray:
        """(N,) float64 mouth openings of (N, H, W, 3) uint8 RGB frames (or one (H, W, 3) frame)."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        return np.array([self.opening(frame) for frame in frames], dtype=np.float64)

    def close(self) -> None:
        mesh, self._mesh = getattr(self, "_mesh", None), None
        if mesh is not None:
            mesh.close()

    def __enter__(self) -> "MouthTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def opening_from_landmarks(points: np.ndarray) -> float:
    """Mean inner-lip gap over :data:`MOUTH_PAIRS` divided by the outer eye-corner distance, from (468, 2+)
    FaceMesh landmarks in pixels; NaN for a degenerate face (eye corners on top of each other)."""
    points = np.asarray(points, dtype=np.float64)[:, :2]
    upper = points[[u for u, _ in MOUTH_PAIRS]]
    lower = points[[lo for _, lo in MOUTH_PAIRS]]
    gap = float(np.linalg.norm(upper - lower, axis=1).mean())
    size = float(np.linalg.norm(points[EYE_CORNERS[0]] - points[EYE_CORNERS[1]]))
    return gap / size if size > 1e-6 else math.nan


def mouth_openings(frames: np.ndarray | Iterable[np.ndarray], tracker: MouthTracker | None = None) -> np.ndarray:
    """(N,) mouth openings of consecutive frames: an (N, H, W, 3) uint8 RGB array or an iterable of such
    chunks (e.g. :func:`lipsync.media.reader.iter_frames`); NaN where no face mesh is found."""
    own = tracker is None
    tracker = tracker or MouthTracker(video=True)
    try:
        if isinstance(frames, np.ndarray):
            return tracker.openings(frames)
        parts = [tracker.openings(chunk) for chunk in frames]
        return np.concatenate(parts) if parts else np.zeros(0, np.float64)
    finally:
        if own:
            tracker.close()


def video_openings(video_path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, Fraction]:
    """(openings (N,), fps) of a video file, decoded at its constant frame rate (at most ``max_frames``).

    Raises:
        InvalidMediaError / NoVideoStreamError: the file is not a video ffmpeg can decode.
        NoFaceError: no face mesh was found in any frame.
    """
    from lipsync.media.probe import probe_video
    from lipsync.media.reader import iter_frames

    video_path = Path(video_path)
    if max_frames is not None and int(max_frames) < 1:
        raise ValueError(f"max_frames must be a positive number of frames or None, got {max_frames}")
    info = probe_video(video_path)
    openings = mouth_openings(iter_frames(video_path, info=info, count=max_frames))
    if not np.isfinite(openings).any():
        raise NoFaceError(
            f"no face was found in any of the {len(openings)} frames of {video_path.name}; the mouth-motion check "
            "needs a clip with one visible, roughly frontal face"
        )
    return openings, info.fps


# ----------------------------------------------------------------------------------------------------------
# Speech envelope


# speech_envelope (RMS of the speech over each frame's window) lives in lipsync.media.talking


# ----------------------------------------------------------------------------------------------------------
# Correlation


# lagged_correlation (Pearson r at lags -max_lag..max_lag) lives in lipsync.media.talking


@dataclass
class MouthMotionSync:
    """The mouth-motion check of one video against one speech track.

    Attributes:
        peak_correlation: the highest correlation over the lags (NaN when no lag could be measured: a mouth
            that never moves, silent audio, or too few frames).
        peak_lag: its lag in frames (positive: the mouth follows the audio); None when peak_correlation is NaN.
        correlations: the correlation at each lag, lag -> r (NaN where not measurable).
        confidence: peak_correlation minus the median over the lags (like SyncNet's LSE-C: how much the peak
            stands out; about 0 when no lag is special).
        frames_measured: frames with both a face mesh and audio (the frames the lag-0 correlation uses).
        frames_with_face: frames where a face mesh was found.
        num_frames: frames decoded.
        fps: the video's frame rate.
    """

    peak_correlation: float
    peak_lag: int | None
    correlations: dict[int, float]
    confidence: float
    frames_measured: int
    frames_with_face: int
    num_frames: int
    fps: float
    video: str = ""
    audio: str = ""
    openings: np.ndarray | None = field(default=None, repr=False)
    envelope: np.ndarray | None = field(default=None, repr=False)

    @property
    def max_lag(self) -> int:
        return max((abs(lag) for lag in self.correlations), default=0)

    def as_dict(self) -> dict:
        """JSON-ready summary (NaN written as None; the per-frame series left out)."""
        def num(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) else round(float(x), 6)

        return {
            "video": self.video,
            "audio": self.audio,
            "peak_correlation": num(self.peak_correlation),
            "peak_lag": self.peak_lag,
            "confidence": num(self.confidence),
            "correlations": {str(lag): num(r) for lag, r in sorted(self.correlations.items())},
            "frames_measured": self.frames_measured,
            "frames_with_face": self.frames_with_face,
            "num_frames": self.num_frames,
            "fps": round(float(self.fps), 6),
        }

    def summary(self) -> str:
        """One line: the peak, its lag, how many frames were measured."""
        if self.peak_lag is None:
            peak = "no measurable correlation"
        else:
            side = "mouth follows audio" if self.peak_lag > 0 else "mouth leads audio" if self.peak_lag < 0 else "in step"
            peak = (f"peak r={self.peak_correlation:+.3f} at lag {self.peak_lag:+d} frames ({side}), "
                    f"confidence {self.confidence:+.3f}")
        return f"mouth-motion sync: {peak}; {self.frames_measured}/{self.num_frames} frames measured"


def sync_from_series(openings: np.ndarray, envelope: np.ndarray, fps: int | float | Fraction, max_lag: int = 5,
                     video: str = "", audio: str = "") -> MouthMotionSync:
    """The :class:`MouthMotionSync` of a per-frame opening series against a per-frame envelope."""
    openings = np.asarray(openings, dtype=np.float64).reshape(-1)
    envelope = np.asarray(envelope, dtype=np.float64).reshape(-1)
    lags, values = lagged_correlation(openings, envelope, max_lag)
    n = min(len(openings), len(envelope))
    measured = int((np.isfinite(openings[:n]) & np.isfinite(envelope[:n])).sum())
    if np.isfinite(values).any():
        k = int(np.nanargmax(values))
        peak, peak_lag = float(values[k]), int(lags[k])
        confidence = peak - float(np.nanmedian(values))
    else:
        peak, peak_lag, confidence = math.nan, None, math.nan
    return MouthMotionSync(
        peak_correlation=peak, peak_lag=peak_lag, correlations={int(l): float(v) for l, v in zip(lags, values)},
        confidence=confidence, frames_measured=measured, frames_with_face=int(np.isfinite(openings).sum()),
        num_frames=len(openings), fps=float(fps), video=video, audio=audio, openings=openings, envelope=envelope,
    )


def _own_track_offset(video_path: Path, audio_path: Path) -> float:
    """Video start minus audio start in seconds when the speech is the video file's own track, else 0."""
    try:
        same = video_path.resolve() == audio_path.resolve()
    except OSError:
        return 0.0
    if not same:
        return 0.0
    from lipsync.media.probe import probe_video

    info = probe_video(video_path)
    return 0.0 if info.audio_start is None else float(info.video_start - info.audio_start)


def mouth_motion_sync(video_path: str | Path, audio_path: str | Path, max_lag: int = 5,
                      max_frames: int | None = None) -> MouthMotionSync:
    """Check a video's mouth motion against any speech track (its own, or another clip's).

    Args:
        video_path: a video with one face (any ffmpeg-readable format; decoded at its constant frame rate).
        audio_path: an audio file, or a video whose audio track is used (e.g. ``video_path`` itself).
        max_lag: lags -max_lag .. +max_lag frames are tried.
        max_frames: read at most this many frames from the start of the video.

    Raises:
        InvalidMediaError / NoVideoStreamError: the video cannot be decoded.
        NoAudioError: the audio file has no audio track.
        NoFaceError: no face mesh was found in any frame.
    """
    from lipsync.media.audio import load_audio

    video_path, audio_path = Path(video_path), Path(audio_path)
    if int(max_lag) != max_lag or max_lag < 0:
        raise ValueError(f"max_lag must be a whole number of frames >= 0, got {max_lag}")
    wav = load_audio(audio_path, SAMPLE_RATE)  # checks the audio before the slower face pass
    openings, fps = video_openings(video_path, max_frames)
    envelope = speech_envelope(wav, fps, len(openings), SAMPLE_RATE, _own_track_offset(video_path, audio_path))
    return sync_from_series(openings, envelope, fps, max_lag, video=str(video_path), audio=str(audio_path))
