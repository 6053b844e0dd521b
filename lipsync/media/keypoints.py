"""Face keypoints of a detection row (:data:`KEYPOINT_NAMES`) and the mouth check on them (:func:`mouth_in_frame`):
shared by the detectors, the FaceMesh check and the tracking, so none of them imports another."""

from __future__ import annotations

from typing import Sequence

import numpy as np

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")
"""Names of the keypoints that follow x1, y1, x2, y2, score in a detection row of a detector with
landmarks: keypoint j is at columns (5 + 2j, 6 + 2j), in full-frame pixels (not clipped to the frame)."""
MOUTH = KEYPOINT_NAMES.index("mouth")


def mouth_in_frame(rows: np.ndarray, frame_shape: Sequence[int], below: float = 0.3, side: float = 0.4) -> np.ndarray:
    """Whether the mouth of each detection, lips included, lies inside the frame.

    Uses the keypoints of a detector with landmarks (:data:`KEYPOINT_NAMES` after the 5 box
    columns). With d the distance from the midpoint of the eyes to the mouth centre (about a third
    of the face height), the mouth counts as in the frame when the points ``below`` x d under the
    mouth centre (lower lip) and ``side`` x d to either side (mouth corners) are all inside the
    frame. Rows without keypoints (S3FD, OpenCV) are always True.

    Args:
        rows: (k, 5 + 2m) detections in full-frame pixels.
        frame_shape: (H, W), (H, W, 3) or (N, H, W, 3).
        below, side: margins in units of the eye-to-mouth distance.
    Returns:
        (k,) bool.
    """
    rows = np.asarray(rows, dtype=np.float64)
    rows = rows.reshape(len(rows), -1) if rows.size else np.empty((0, 5))
    h, w = (frame_shape[-3], frame_shape[-2]) if len(frame_shape) >= 3 else (frame_shape[0], frame_shape[1])
    ok = np.ones(len(rows), dtype=bool)
    if rows.shape[1] < 5 + 2 * len(KEYPOINT_NAMES):
        return ok
    eyes = (rows[:, 5:7] + rows[:, 7:9]) / 2
    mouth = rows[:, 5 + 2 * MOUTH : 7 + 2 * MOUTH]
    known = np.isfinite(eyes).all(axis=1) & np.isfinite(mouth).all(axis=1)
    d = np.linalg.norm(mouth - eyes, axis=1)
    inside = (
        (mouth[:, 0] - side * d >= 0) & (mouth[:, 0] + side * d <= w)
        & (mouth[:, 1] >= 0) & (mouth[:, 1] + below * d <= h)
    )
    return np.where(known, inside, ok)
