"""Geometry of face boxes, always ``(x1, y1, x2, y2)`` in full-frame pixels, x2/y2 exclusive."""

from __future__ import annotations

import numpy as np


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of (..., 4) boxes (x1, y1, x2, y2); 0 for empty ones."""
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box (4,) with each of (k, 4) boxes."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    return inter / np.maximum(box_area(box) + box_area(boxes) - inter, 1e-9)


def box_side(boxes: np.ndarray) -> np.ndarray:
    """Geometric-mean side sqrt(w * h) of (..., 4) boxes: the face's scale."""
    return np.sqrt(np.maximum(box_area(boxes), 1e-9))


def box_centre(boxes: np.ndarray) -> np.ndarray:
    """(x, y) centres of (..., 4) boxes."""
    return (boxes[..., :2] + boxes[..., 2:4]) / 2
