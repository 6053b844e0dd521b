"""The side-by-side comparison: panels of equal size (stacked when wide), a caption band under each, and an
optional zoomed mouth strip (:func:`comparison_layout`, :func:`side_by_side`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

WIDE_ASPECT = 1.25  # panels wider than this (W / H) are stacked vertically, so each stays big
CAPTION_BACKGROUND = (24, 24, 24)  # the caption band under each panel: dark grey, white text
CAPTION_TEXT = (255, 255, 255)


@dataclass(frozen=True)
class ComparisonLayout:
    """Geometry of a side-by-side comparison (all sizes in pixels).

    Each panel is a cell: the frame (``panel`` = (W, H)), then an optional zoomed mouth strip
    (``zoom_height`` rows), then a caption band (``caption_height`` rows). Cells sit in a row, or in a
    column when ``vertical`` (wide clips).
    """

    count: int
    panel: tuple[int, int]
    caption_height: int
    zoom_height: int
    vertical: bool

    @property
    def cell_height(self) -> int:
        return self.panel[1] + self.zoom_height + self.caption_height

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the whole comparison frame."""
        width, _ = self.panel
        if self.vertical:
            return width, self.count * self.cell_height
        return self.count * width, self.cell_height

    def cell_origin(self, index: int) -> tuple[int, int]:
        """(x, y) of panel ``index``'s top-left corner."""
        if self.vertical:
            return 0, index * self.cell_height
        return index * self.panel[0], 0

    def caption_box(self, index: int) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) of panel ``index``'s caption band."""
        x, y = self.cell_origin(index)
        top = y + self.panel[1] + self.zoom_height
        return x, top, x + self.panel[0], top + self.caption_height


def comparison_layout(frame_size: tuple[int, int], count: int, *, captions: bool = True,
                      mouth_zoom: bool = False, vertical: bool | None = None) -> ComparisonLayout:
    """The layout of ``count`` panels of ``frame_size`` = (W, H) (see :class:`ComparisonLayout`).

    ``vertical`` None: stacked when the clip is wide (W > 1.25 H). The caption band is about 11% of the
    panel height (at least 32 px); the mouth strip is half the panel height.
    """
    width, height = int(frame_size[0]), int(frame_size[1])
    if vertical is None:
        vertical = width > WIDE_ASPECT * height
    caption = 0
    if captions:
        caption = max(32, int(round(0.11 * height)))
        caption += caption % 2
    zoom = 0
    if mouth_zoom:
        zoom = max(16, height // 2)
        zoom += zoom % 2
    return ComparisonLayout(int(count), (width, height), caption, zoom, bool(vertical))


def _fit_panel(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, h, w, 3) -> (n, H, W, 3): resized with its aspect kept, centred on the caption colour."""
    width, height = size
    h, w = frames.shape[1:3]
    if (w, h) == (width, height):
        return frames
    scale = min(width / w, height / h)
    new_w, new_h = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.empty((len(frames), height, width, 3), np.uint8)
    out[:] = CAPTION_BACKGROUND
    x0, y0 = (width - new_w) // 2, (height - new_h) // 2
    for k, frame in enumerate(frames):
        out[k, y0:y0 + new_h, x0:x0 + new_w] = cv2.resize(frame, (new_w, new_h), interpolation=interp)
    return out


def _mouth_strip(frame: np.ndarray, box: np.ndarray, width: int, height: int) -> np.ndarray:
    """The lower half of face ``box`` (x1, y1, x2, y2) in ``frame`` scaled to ``height`` rows, centred in
    ``width`` columns; a plain band when the box is empty (no face)."""
    strip = np.empty((height, width, 3), np.uint8)
    strip[:] = CAPTION_BACKGROUND
    x1, y1, x2, y2 = (int(v) for v in box)
    y1 = y1 + (y2 - y1) // 2
    x1, x2 = max(0, x1), min(frame.shape[1], x2)
    y1, y2 = max(0, y1), min(frame.shape[0], y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return strip
    mouth = frame[y1:y2, x1:x2]
    scale = min(height / mouth.shape[0], width / mouth.shape[1])
    new_w, new_h = max(1, int(round(mouth.shape[1] * scale))), max(1, int(round(mouth.shape[0] * scale)))
    x0, y0 = (width - new_w) // 2, (height - new_h) // 2
    strip[y0:y0 + new_h, x0:x0 + new_w] = cv2.resize(mouth, (new_w, new_h), interpolation=cv2.INTER_CUBIC)
    return strip


def _caption_band(text: str, width: int, height: int) -> np.ndarray:
    """A (height, width, 3) dark band with ``text`` centred in white, about half the band high."""
    band = np.empty((height, width, 3), np.uint8)
    band[:] = CAPTION_BACKGROUND
    if not text:
        return band
    font = cv2.FONT_HERSHEY_SIMPLEX
    (unit_w, unit_h), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = min(0.5 * height / unit_h, 0.9 * width / unit_w)
    thickness = max(1, int(round(scale * 1.6)))
    (text_w, text_h), _ = cv2.getTextSize(text, font, scale, thickness)
    origin = ((width - text_w) // 2, (height + text_h) // 2)
    cv2.putText(band, text, origin, font, scale, CAPTION_TEXT, thickness, cv2.LINE_AA)
    return band


def side_by_side(
    left: np.ndarray | Sequence[np.ndarray],
    right: np.ndarray | None = None,
    labels: Sequence[str | None] | None = ("source", "Diff2Lip"),
    *,
    mouth_boxes: np.ndarray | None = None,
    vertical: bool | None = None,
) -> np.ndarray:
    """Place 2 or 3 frame sequences next to each other (or one above the other), each captioned below.

    Args:
        left: (n, H1, W1, 3) uint8 RGB frames, or a list of 2-3 such arrays (then ``right`` must be None).
        right: (n, H2, W2, 3) uint8 RGB frames when ``left`` is a single array.
        labels: one caption per panel (None or "" for an empty band); None for no caption bands at all.
            Captions sit in a dark band under each panel, outside the picture, so nothing covers them.
        mouth_boxes: optional (n, 4) face boxes x1, y1, x2, y2 in the first panel's pixels: a zoomed strip of
            the lower half of each box is added under every panel (the mouth, where the panels differ).
        vertical: stack the panels top to bottom; None: only for wide clips (W > 1.25 H).

    Returns:
        (n, H_total, W_total, 3) uint8 of ``comparison_layout((W1, H1), ...).size``: every panel is fitted to
        the first panel's size (aspect kept). Single frames (H, W, 3) give a (H_total, W_total, 3) result.
    """
    if isinstance(left, (list, tuple)):
        if right is not None:
            raise ValueError("pass either a list of panels or left and right, not both")
        panels = [np.asarray(p) for p in left]
    else:
        if right is None:
            raise ValueError("side_by_side needs at least two panels")
        panels = [np.asarray(left), np.asarray(right)]
    if not 2 <= len(panels) <= 3:
        raise ValueError(f"side_by_side supports 2 or 3 panels, got {len(panels)}")
    single = panels[0].ndim == 3
    panels = [p[None] if p.ndim == 3 else p for p in panels]
    for p in panels:
        if p.ndim != 4 or p.shape[-1] != 3 or p.dtype != np.uint8:
            raise ValueError(f"each panel must be (n, H, W, 3) uint8 RGB, got {p.shape} {p.dtype}")
    count = len(panels[0])
    if any(len(p) != count for p in panels):
        raise ValueError(f"all panels need the same number of frames, got {[len(p) for p in panels]}")
    captions = labels is not None
    labels = list(labels) if captions else [None] * len(panels)
    if len(labels) != len(panels):
        raise ValueError(f"got {len(labels)} labels for {len(panels)} panels")
    if mouth_boxes is not None:
        mouth_boxes = np.asarray(mouth_boxes).reshape(-1, 4)
        if len(mouth_boxes) != count:
            raise ValueError(f"got {len(mouth_boxes)} mouth boxes for {count} frames")

    height, width = panels[0].shape[1:3]
    layout = comparison_layout((width, height), len(panels), captions=captions,
                               mouth_zoom=mouth_boxes is not None, vertical=vertical)
    out_w, out_h = layout.size
    out = np.empty((count, out_h, out_w, 3), np.uint8)
    for i, (panel, text) in enumerate(zip(panels, labels)):
        x, y = layout.cell_origin(i)
        out[:, y:y + height, x:x + width] = _fit_panel(panel, (width, height))
        if layout.zoom_height:
            top = y + height
            for k in range(count):
                out[k, top:top + layout.zoom_height, x:x + width] = _mouth_strip(
                    out[k, y:y + height, x:x + width], mouth_boxes[k], width, layout.zoom_height)
        if layout.caption_height:
            x1, y1, x2, y2 = layout.caption_box(i)
            out[:, y1:y2, x1:x2] = _caption_band(text or "", width, layout.caption_height)
    return out[0] if single else out
