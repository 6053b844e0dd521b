"""Crop the faces out of the frames and paste the generated ones back::

    frames (N, H, W, 3) uint8 + boxes (N, 4) -> crop_faces -> (N, 128, 128, 3) uint8
    ... pipeline ...
    generated crops -> paste_faces -> a copy of the frames (only the lower half, feathered, by default)

Boxes are ``(x1, y1, x2, y2)`` in pixels of the full frame, x2/y2 exclusive (``frame[y1:y2, x1:x2]``).
"""

from __future__ import annotations

import cv2
import numpy as np


def _int_box(box: np.ndarray, where: str) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (int(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"{where}: box {(x1, y1, x2, y2)} is empty; boxes are (x1, y1, x2, y2) with x2 > x1, y2 > y1")
    return x1, y1, x2, y2


def crop_faces(frames: np.ndarray, boxes: np.ndarray, size: int = 128) -> np.ndarray:
    """Official crop: ``cv2.resize(frame[y1:y2, x1:x2], (size, size))`` (INTER_LINEAR).

    Args:
        frames: (N, H, W, 3) uint8 RGB.
        boxes: (N, 4) x1, y1, x2, y2; truncated to int.
        size: output side in pixels.
    Returns:
        faces (N, size, size, 3) uint8.
    """
    if len(frames) != len(boxes):
        raise ValueError(f"{len(frames)} frames but {len(boxes)} boxes; pass one box per frame")
    faces = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, (frame, box) in enumerate(zip(frames, boxes)):
        x1, y1, x2, y2 = _int_box(box, f"frame {i}")
        faces[i] = cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_LINEAR)
    return faces


def _ramp(distance: np.ndarray, width: int) -> np.ndarray:
    """Smoothstep from 0 to 1 over ``width`` pixels; distance 0 is the first pixel inside."""
    t = np.clip((distance + 0.5) / width, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def mouth_alpha(height: int, width: int, feather: float = 0.1, mask_fraction: float = 0.5) -> np.ndarray:
    """Blend weights of the generated crop inside a box of ``height`` x ``width`` pixels.

    Rows above ``height - int(height * mask_fraction)`` (the upper half for 0.5) get exactly 0.
    Below that line the weight rises with a smoothstep over ``max(1, round(feather * height))``
    rows, and falls the same way toward the bottom edge and over ``max(1, round(feather *
    width))`` columns toward the left and right edges; elsewhere it is exactly 1.

    Returns:
        (height, width) float64 in [0, 1].
    """
    top = height - int(height * mask_fraction)
    fy, fx = max(1, round(feather * height)), max(1, round(feather * width))
    rows = np.arange(height)
    cols = np.arange(width)
    a_rows = np.where(rows >= top, _ramp(rows - top, fy) * _ramp(height - 1 - rows, fy), 0.0)
    a_cols = _ramp(cols, fx) * _ramp(width - 1 - cols, fx)
    return a_rows[:, None] * a_cols[None, :]


def paste_faces(
    frames: np.ndarray,
    boxes: np.ndarray,
    faces: np.ndarray,
    valid: np.ndarray | None = None,
    mode: str = "mouth",
    feather: float = 0.1,
    mask_fraction: float = 0.5,
) -> np.ndarray:
    """Put generated crops back into a copy of the frames.

    mode "box" (official): the whole crop is resized (cv2 INTER_LINEAR) to the box and
    overwrites it.
    mode "mouth" (default): only the generated lower part of the crop is blended in with
    :func:`mouth_alpha` weights (0 on the upper half, smooth ramps of ``feather`` x box
    height / width below the midline and toward the bottom/left/right edges), so the rest of
    the face keeps the source's full resolution. Pixels outside the box and in its upper half
    are exactly the source pixels.

    Args:
        frames: (N, H, W, 3) uint8 RGB; not modified.
        boxes: (N, 4) x1, y1, x2, y2 used for the crops; truncated to int.
        faces: (N, S, S, 3) uint8 generated crops.
        valid: (N,) bool; frames with False are returned untouched. None: all True.
        mode: "mouth" or "box".
        feather: seam width as a fraction of the box size (mouth mode), e.g. 0.1 of a
            200-pixel box is 20 pixels.
        mask_fraction: generated fraction of the crop height, from the bottom (Diff2Lip: 0.5).
    Returns:
        new frames (N, H, W, 3) uint8.
    """
    if mode not in ("mouth", "box"):
        raise ValueError(f"unknown paste mode {mode!r}; use 'mouth' or 'box'")
    n = len(frames)
    if not (len(boxes) == len(faces) == n):
        raise ValueError(f"{n} frames, {len(boxes)} boxes and {len(faces)} faces; pass one of each per frame")
    faces = np.asarray(faces)
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[-1] != 3:
        raise ValueError(f"faces has shape {faces.shape} and dtype {faces.dtype}; expected (N, S, S, 3) uint8")
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(-1)
    out = np.array(frames, dtype=np.uint8, copy=True)
    for i in np.flatnonzero(valid):
        x1, y1, x2, y2 = _int_box(boxes[i], f"frame {i}")
        h, w = y2 - y1, x2 - x1
        generated = cv2.resize(faces[i], (w, h), interpolation=cv2.INTER_LINEAR)
        if mode == "box":
            out[i, y1:y2, x1:x2] = generated
            continue
        top = h - int(h * mask_fraction)
        alpha = mouth_alpha(h, w, feather, mask_fraction)[top:, :, None]
        region = out[i, y1 + top : y2, x1:x2].astype(np.float64)
        blended = region + alpha * (generated[top:].astype(np.float64) - region)
        out[i, y1 + top : y2, x1:x2] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
