"""Whether a face talks: its mouth's motion against the speech envelope of the clip's own sound.

:func:`speech_envelope` and :func:`lagged_correlation` serve both the speaker choice here and the offline
lip-sync measure of ``lipsync.scoring.mouth_motion`` (FaceMesh lip openings). The speaker choice uses a
cheaper mouth signal that needs only the face box: :func:`mouth_patches` keeps a small grey patch of the lower
middle of every detected face while the clip is decoded, and :func:`mouth_activity` is how much that patch
changes from one frame to the next.

Figures on the 23 shared clips that have sound (opencv boxes, first 150 frames): a face against its own
speech peaks at r = 0.13-0.44 over lags -1..3 (median 0.17; 5 clips near 0); against another clip's speech
the median is 0.09 and single pairs reach 0.48. So talking is a weak hint: :mod:`lipsync.media.speaker`
lets it tip the choice between faces of similar screen presence, never overrule a much larger presence.
A mouth that does not move at all is clear evidence, though: talking faces of the shared clips have a median
activity of 0.13-0.22 (unit-spread patches), a frozen face 0.000-0.001 (:data:`STILL_MOUTH` = 0.05). A still
mouth also correlates with the sound by chance (the encoder's noise follows the bit rate, which follows the
talking face): r = 0.23 for a frozen face next to a talking one, so the correlation alone cannot tell them.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import cv2
import numpy as np

SAMPLE_RATE = 16000
MIN_PAIRS = 3  # a lag's correlation needs at least this many frames where both series are measured
MOUTH_SHAPE = (8, 16)  # rows, columns of a mouth patch
STILL_MOUTH = 0.05  # median mouth activity below this: the mouth does not move


def mouth_patches(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Grey patches of the mouth region (rows 60-100 % of the box, the middle half of its width).

    Args:
        frame: (H, W, 3) uint8 RGB.
        boxes: (k, 4+) x1, y1, x2, y2 pixels.
    Returns:
        (k, 8, 16) float32, each zero mean and unit spread (NaN where the region is empty).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(len(boxes), -1) if len(boxes) else np.empty((0, 4))
    out = np.full((len(boxes), *MOUTH_SHAPE), np.nan, np.float32)
    h, w = frame.shape[:2]
    for j, (x1, y1, x2, y2) in enumerate(boxes[:, :4]):
        bw, bh = x2 - x1, y2 - y1
        top, bottom = int(np.clip(y1 + 0.6 * bh, 0, h)), int(np.clip(y2, 0, h))
        left, right = int(np.clip(x1 + 0.25 * bw, 0, w)), int(np.clip(x2 - 0.25 * bw, 0, w))
        if bottom - top < 2 or right - left < 2:
            continue
        grey = cv2.cvtColor(frame[top:bottom, left:right], cv2.COLOR_RGB2GRAY)
        patch = cv2.resize(grey, MOUTH_SHAPE[::-1], interpolation=cv2.INTER_AREA).astype(np.float32)
        out[j] = (patch - patch.mean()) / (patch.std() + 1e-3)
    return out


def mouth_activity(frames: Sequence[int], patches: Sequence[np.ndarray], num_frames: int) -> np.ndarray:
    """(num_frames,) mean absolute change of one face's mouth patch from the previous frame; NaN where the
    face is not seen in both frames. ``frames`` ascending, ``patches`` the (8, 16) patch in each."""
    activity = np.full(int(num_frames), np.nan)
    for k in range(1, len(frames)):
        if frames[k] - frames[k - 1] == 1:
            activity[frames[k]] = float(np.abs(np.float32(patches[k]) - np.float32(patches[k - 1])).mean())
    return activity


def mouth_is_still(activity: np.ndarray, min_pairs: int = 10) -> bool:
    """Whether a face's mouth never moves: the median of its :func:`mouth_activity` is below
    :data:`STILL_MOUTH` (False when fewer than ``min_pairs`` frames are measured: no evidence)."""
    activity = np.asarray(activity, dtype=np.float64)
    seen = activity[np.isfinite(activity)]
    return len(seen) >= min_pairs and float(np.median(seen)) < STILL_MOUTH


def talk_correlation(activity: np.ndarray, envelope: np.ndarray, min_frames: int = 25) -> float:
    """Peak Pearson correlation of mouth activity with the speech envelope at lags -1..3 frames (the mouth
    leads the sound by one frame to follows it by three); 0 when fewer than ``min_frames`` frames have both."""
    _, values = lagged_correlation(activity, envelope, max_lag=3, min_pairs=min_frames)
    values = values[2:]  # lags -1 .. 3
    return float(np.nanmax(values)) if np.isfinite(values).any() else 0.0


def speech_envelope(wav: np.ndarray, fps: int | float | Fraction, num_frames: int, sample_rate: int = SAMPLE_RATE,
                    offset_s: float = 0.0) -> np.ndarray:
    """(num_frames,) RMS of ``wav`` over each video frame's window.

    Frame ``i`` covers seconds ``[i / fps, (i + 1) / fps)`` of the video, i.e. audio seconds shifted by
    ``offset_s`` (the video's start minus the audio's start when both come from one file). A window that is
    cut by either end of the audio uses the samples it has; one wholly outside the audio is NaN.
    """
    wav = np.asarray(wav, dtype=np.float64).reshape(-1)
    fps = Fraction(fps).limit_denominator(1_000_000) if not isinstance(fps, Fraction) else fps
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    offset = Fraction(offset_s).limit_denominator(1_000_000) * sample_rate
    energy = np.concatenate([[0.0], np.cumsum(wav * wav)])
    envelope = np.full(int(num_frames), np.nan)
    for i in range(int(num_frames)):
        start = max(0, math.floor(i * sample_rate / fps + offset))
        stop = min(len(wav), math.floor((i + 1) * sample_rate / fps + offset))
        if stop > start:
            envelope[i] = math.sqrt(max(0.0, energy[stop] - energy[start]) / (stop - start))
    return envelope


def lagged_correlation(opening: np.ndarray, envelope: np.ndarray, max_lag: int = 5,
                       min_pairs: int = MIN_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of ``opening[t]`` with ``envelope[t - lag]`` for lag = -max_lag .. +max_lag.

    Frames where either series is NaN are skipped (per lag). A lag with fewer than ``min_pairs`` measured
    frames, or where either series is constant over them, gets NaN.

    Returns:
        (lags (2 * max_lag + 1,) int, correlations (2 * max_lag + 1,) float64)
    """
    opening = np.asarray(opening, dtype=np.float64).reshape(-1)
    envelope = np.asarray(envelope, dtype=np.float64).reshape(-1)
    if int(max_lag) != max_lag or max_lag < 0:
        raise ValueError(f"max_lag must be a whole number of frames >= 0, got {max_lag}")
    max_lag = int(max_lag)
    n = min(len(opening), len(envelope))
    opening, envelope = opening[:n], envelope[:n]
    lags = np.arange(-max_lag, max_lag + 1)
    values = np.full(len(lags), np.nan)
    for k, lag in enumerate(lags):
        if abs(lag) >= n:
            continue
        a = opening[max(lag, 0): n + min(lag, 0)]   # opening at t
        b = envelope[max(-lag, 0): n - max(lag, 0)]  # envelope at t - lag
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < max(int(min_pairs), 2):
            continue
        a, b = a[ok], b[ok]
        if np.ptp(a) == 0 or np.ptp(b) == 0:  # a still mouth or silence: no correlation to speak of
            continue
        a, b = a - a.mean(), b - b.mean()
        denom = math.sqrt(float(a @ a) * float(b @ b))
        if denom > 0:
            values[k] = float(np.clip(a @ b / denom, -1.0, 1.0))
    return lags, values
