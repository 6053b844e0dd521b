"""Hard cuts: where one shot ends and the next begins, found while the frames are decoded.

Every frame is shrunk to a 32 x 32 colour thumbnail; its **change** is the mean absolute difference from the
previous frame's thumbnail (0..255; frame 0 has change 0). A cut is a lone spike in the change::

    change[i] >= min_change and change[i] >= ratio x median(change of the `window` frames on each side)
    or change[i] >= strong_change and change[i] >= strong_ratio x that median

Figures on the shared clips, thumbnails of frames decoded at 192-256 px: talking heads without cuts change
by at most 12.4 per frame (a head turning), and never spike above 4.7 x their neighbours' median; a cut
between two different clips changes by 54-58, a jump to a 1.26 x zoom of the same picture by 14, a shift of
the picture by a fifth of its size by 45. Only hard cuts are found: fades and dissolves spread their change
over many frames and are not cuts here.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

THUMB = 32  # thumbnail side in pixels


@dataclass(frozen=True)
class CutConfig:
    """Thresholds of :func:`find_cuts` (changes on the 0..255 scale of a 32 x 32 thumbnail)."""

    min_change: float = 8.0
    ratio: float = 6.0
    strong_change: float = 30.0
    strong_ratio: float = 3.0
    window: int = 6
    floor: float = 1.0  # the neighbours' median counts as at least this (a still picture has change ~0)


def thumbnails(frames: np.ndarray) -> np.ndarray:
    """(n, 32, 32, 3) float32 thumbnails of (n, H, W, 3) uint8 frames: every s-th pixel (s = shorter side // 256,
    at least 1), then an area average."""
    step = max(1, min(frames.shape[1:3]) // 256)
    return np.stack([cv2.resize(np.ascontiguousarray(f[::step, ::step]), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
                     for f in frames]).astype(np.float32)


class ChangeMeter:
    """Frame-to-frame change of a clip that arrives in chunks: ``add(chunk)`` for every chunk, in order."""

    def __init__(self) -> None:
        self._last: np.ndarray | None = None
        self.changes: list[float] = []

    def add(self, frames: np.ndarray) -> None:
        """Measure (n, H, W, 3) uint8 frames that follow the frames added before."""
        if len(frames) == 0:
            return
        thumbs = thumbnails(frames)
        previous = thumbs[:1] if self._last is None else self._last[None]
        steps = np.abs(np.diff(np.concatenate([previous, thumbs]), axis=0)).mean(axis=(1, 2, 3))
        self.changes.extend(float(s) for s in steps)
        self._last = thumbs[-1]


def find_cuts(changes: np.ndarray, config: CutConfig = CutConfig()) -> np.ndarray:
    """Frames where a new shot starts (never 0).

    Args:
        changes: (N,) frame-to-frame change (:class:`ChangeMeter`), change[0] unused.
        config: thresholds.
    Returns:
        (K,) int64 frame indices, ascending.
    """
    changes = np.asarray(changes, dtype=np.float64).reshape(-1)
    cuts = []
    for i in range(1, len(changes)):
        near = np.concatenate([changes[max(1, i - config.window):i], changes[i + 1:i + 1 + config.window]])
        base = max(float(np.median(near)) if len(near) else 0.0, config.floor)
        c = changes[i]
        if (c >= config.min_change and c >= config.ratio * base) or (
                c >= config.strong_change and c >= config.strong_ratio * base):
            cuts.append(i)
    return np.array(cuts, dtype=np.int64)


def shot_bounds(cuts: np.ndarray, num_frames: int) -> list[tuple[int, int]]:
    """[start, stop) frame ranges of the shots of a clip of ``num_frames`` frames cut at ``cuts``."""
    edges = [0] + [int(c) for c in cuts if 0 < c < num_frames] + [int(num_frames)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
