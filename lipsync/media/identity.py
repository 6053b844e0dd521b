"""Who a face is: an appearance descriptor of each detected face, compared across shots.

The descriptor of a face box joins three parts, all cheap and all computed while the clip is decoded:

- **colour**: a hue x saturation histogram (18 x 8 bins, sums to 1) of the box's centre (the middle 60 % of
  its width, 15-90 % of its height: skin, eyes, nose, mouth; little hair or background);
- **layout**: the whole box in grey at 12 x 12 pixels, zero mean and unit length (where the dark and light
  parts of the face lie);
- **tone**: the mean CIE L*a*b* colour of the centre.

:func:`descriptor_distance` takes the largest of the three parts' distances, each divided by its scale
(:data:`SCALES`): two faces count as one person only when colour, layout AND tone agree. Figures on 23
people of the shared clips (opencv boxes, the mean descriptor of each half of a clip, clips decoded at
256 px wide): the two halves of one person's clip are at most 0.77 apart, two different people at least
0.92 (both at the scales below); :data:`SAME_PERSON` sits between. It is an appearance measure, not face
recognition: two people of similar skin tone, framing and light can pass for one, and one person under
very different light for two.
"""

from __future__ import annotations

import cv2
import numpy as np

HUE_BINS, SAT_BINS, LAYOUT = 18, 8, 12
DESCRIPTOR_SIZE = HUE_BINS * SAT_BINS + LAYOUT * LAYOUT + 3
SCALES = (0.15, 0.25, 6.0)  # colour (half L1), layout (1 - cosine), tone (L*a*b* distance)
SAME_PERSON = 0.85  # descriptor_distance below this: the same person


def _clip_box(box: np.ndarray, shape: tuple) -> tuple[int, int, int, int] | None:
    """Integer (x1, y1, x2, y2) inside a frame of ``shape`` (H, W, ...), or None when nothing is left."""
    h, w = shape[:2]
    x1, y1 = int(np.clip(np.floor(box[0]), 0, w)), int(np.clip(np.floor(box[1]), 0, h))
    x2, y2 = int(np.clip(np.ceil(box[2]), 0, w)), int(np.clip(np.ceil(box[3]), 0, h))
    return (x1, y1, x2, y2) if x2 - x1 >= 2 and y2 - y1 >= 2 else None


def face_descriptors(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Appearance descriptors of the faces in one frame.

    Args:
        frame: (H, W, 3) uint8 RGB.
        boxes: (k, 4+) x1, y1, x2, y2 pixels (extra columns are ignored).
    Returns:
        (k, DESCRIPTOR_SIZE) float32; NaN rows for boxes with nothing inside the frame.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(len(boxes), -1) if len(boxes) else np.empty((0, 4))
    out = np.full((len(boxes), DESCRIPTOR_SIZE), np.nan, np.float32)
    for j, box in enumerate(boxes[:, :4]):
        w, h = box[2] - box[0], box[3] - box[1]
        whole = _clip_box(box, frame.shape)
        centre = _clip_box(np.array([box[0] + 0.2 * w, box[1] + 0.15 * h, box[2] - 0.2 * w, box[3] - 0.1 * h]),
                           frame.shape)
        if whole is None or centre is None:
            continue
        step = max(1, int(min(w, h)) // 128)  # every step-th pixel of a large face: the same averages, faster
        x1, y1, x2, y2 = centre
        middle = cv2.resize(np.ascontiguousarray(frame[y1:y2:step, x1:x2:step]), (32, 32), interpolation=cv2.INTER_AREA)
        hist = cv2.calcHist([cv2.cvtColor(middle, cv2.COLOR_RGB2HSV)], [0, 1], None, [HUE_BINS, SAT_BINS],
                            [0, 180, 0, 256]).ravel()
        x1, y1, x2, y2 = whole
        grey = cv2.cvtColor(np.ascontiguousarray(frame[y1:y2:step, x1:x2:step]), cv2.COLOR_RGB2GRAY)
        layout = cv2.resize(grey, (LAYOUT, LAYOUT), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
        layout -= layout.mean()
        tone = cv2.cvtColor(middle, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32).mean(axis=0)
        out[j] = np.concatenate([hist / max(hist.sum(), 1.0), layout / (np.linalg.norm(layout) + 1e-6), tone])
    return out


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> float:
    """How unlike two (DESCRIPTOR_SIZE,) descriptors (or means of them) are: the largest part distance over
    its scale; below :data:`SAME_PERSON` they are one person. inf when either is NaN."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    n_hist = HUE_BINS * SAT_BINS
    colour = 0.5 * np.abs(a[:n_hist] - b[:n_hist]).sum()
    la, lb = a[n_hist:-3], b[n_hist:-3]
    layout = 1.0 - float(la @ lb) / max(float(np.linalg.norm(la) * np.linalg.norm(lb)), 1e-9)
    tone = float(np.linalg.norm(a[-3:] - b[-3:]))
    return float(max(colour / SCALES[0], layout / SCALES[1], tone / SCALES[2]))
