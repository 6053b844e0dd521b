"""From detections to the boxes of ONE face per frame (Diff2Lip's ``generate.py`` order)::

    detections (one (k, 5) array per frame)
      -> select_main_face         (N, 4) boxes of ONE face + found mask (tracks by centre and scale)
      -> mouth_in_frame           with keypoints: frames whose mouth is out of the picture are refused
      -> fill_missing             short gaps interpolated, valid mask
      -> pad_boxes                (top, bottom, left, right) pixels, clipped to the frame
      -> smooth_boxes             official forward-looking mean, integer truncation

:func:`boxes_from_detections` runs these steps, shot by shot when given the clip's cuts (lipsync.media.shots):
nothing is tracked, interpolated or smoothed across a cut, and lipsync.media.speaker may choose the face
instead of the main-face rule. Boxes are always ``(x1, y1, x2, y2)`` in pixels of the full frame, x2/y2
exclusive (``frame[y1:y2, x1:x2]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from lipsync.errors import NoFaceError
from lipsync.media.boxes import box_area, box_centre, box_iou, box_side
from lipsync.media.detectors import FaceDetector
from lipsync.media.keypoints import mouth_in_frame  # the mouth check, shared with face_check


@dataclass
class FaceConfig:
    """Constants of the face stage.

    Attributes:
        face_size: side of the square crops the model sees (Diff2Lip: 128).
        pads: (top, bottom, left, right) pixels added to every detected box. Diff2Lip's
            ``generate.py`` default and ``inference_single_video.sh`` both use (0, 0, 0, 0);
            Wav2Lip uses (0, 10, 0, 0) to make sure the chin is inside the box.
        smooth_window: frames averaged by :func:`smooth_boxes` (official: 5).
        max_gap: longest run of frames without a face that :func:`fill_missing` bridges.
        mask_fraction: generated fraction of the crop height, counted from the bottom
            (Diff2Lip's ``face_hide_percentage``: 0.5, i.e. rows >= 64 of 128).
        detector: name in :data:`DETECTORS`.
    """

    face_size: int = 128
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    smooth_window: int = 5
    max_gap: int = 12
    mask_fraction: float = 0.5
    detector: str = "s3fd"


@dataclass
class Track:
    """Detections of one face over time: frame numbers and (x1, y1, x2, y2) boxes, with the
    index of the chosen row in each frame's detection array."""

    frames: list[int]
    boxes: list[np.ndarray]
    rows: list[int]

    def predict(self, frame: int) -> np.ndarray:
        """Box expected at ``frame``: the last box moved (and scaled) at the track's recent velocity."""
        last = self.boxes[-1]
        if len(self.frames) < 2:
            return last
        k = max(0, len(self.frames) - 5)
        velocity = (last - self.boxes[k]) / (self.frames[-1] - self.frames[k])
        return last + velocity * min(frame - self.frames[-1], 5)

    @property
    def score(self) -> float:
        """Sum of the face's side over its frames: large AND long-lived faces score high."""
        return float(box_side(np.array(self.boxes)).sum())


def _matches(pred: np.ndarray, cand: np.ndarray, gap: int, max_jump: float, max_scale: float) -> np.ndarray:
    """Cost of explaining each candidate box (k, 4) by a track predicted at ``pred`` after ``gap``
    frames; inf where the centre moved more than ``max_jump`` x the face side (x sqrt(gap)) or the
    side changed by more than a factor ``max_scale`` (** sqrt(gap))."""
    side = box_side(pred)
    slack = np.sqrt(max(gap, 1))
    dist = np.linalg.norm(box_centre(cand) - box_centre(pred), axis=-1) / side
    log_scale = np.abs(np.log(box_side(cand) / side))
    ok = (dist <= max_jump * slack) & (log_scale <= np.log(max_scale) * slack)
    return np.where(ok, dist + log_scale - box_iou(pred, cand), np.inf)


def link_tracks(
    detections: Sequence[np.ndarray], max_jump: float, max_scale: float, keep_alive: int
) -> list[Track]:
    """Link per-frame detections into tracks by centre and scale continuity (greedy, lowest cost
    first); a track survives ``keep_alive`` frames without a match."""
    tracks: list[Track] = []
    active: list[Track] = []
    for i, dets in enumerate(detections):
        rows = np.asarray(dets, dtype=np.float64).reshape(len(dets), -1) if len(dets) else np.empty((0, 5))
        cand = rows[:, :4]
        ok_rows = np.flatnonzero(np.isfinite(cand).all(axis=1) & (box_area(cand) > 0))
        active = [t for t in active if i - t.frames[-1] <= keep_alive]
        pairs = []
        for t_idx, track in enumerate(active):
            costs = _matches(track.predict(i), cand[ok_rows], i - track.frames[-1], max_jump, max_scale)
            pairs += [(c, t_idx, j) for j, c in zip(ok_rows, costs) if np.isfinite(c)]
        used_tracks, used_rows = set(), set()
        for _, t_idx, j in sorted(pairs):
            if t_idx in used_tracks or j in used_rows:
                continue
            used_tracks.add(t_idx)
            used_rows.add(j)
            active[t_idx].frames.append(i)
            active[t_idx].boxes.append(cand[j])
            active[t_idx].rows.append(int(j))
        for j in ok_rows:
            if j not in used_rows:
                track = Track([i], [cand[j]], [int(j)])
                tracks.append(track)
                active.append(track)
    return tracks


def main_face_rows(
    detections: Sequence[np.ndarray], max_jump: float = 0.5, reacquire_after: int = 25, max_scale: float = 1.4
) -> np.ndarray:
    """Which detection row is the main face in each frame (see :func:`select_main_face`).

    Returns:
        (N,) int64: the row index into ``detections[i]``, or -1 where the main face is not there.
    """
    n = len(detections)
    tracks = sorted(link_tracks(detections, max_jump, max_scale, reacquire_after), key=lambda t: -t.score)
    chosen = np.full(n, -1, dtype=np.int64)
    claimed = np.zeros(n, dtype=bool)  # frames inside the span of a chosen track
    for rank, track in enumerate(tracks):
        frames = np.array(track.frames)
        free = ~claimed[frames]
        # the parts of this track outside chosen spans, split where a chosen span cuts them
        breaks = np.flatnonzero(np.diff(free.astype(np.int8)) != 0) + 1
        for part in np.split(np.arange(len(frames)), breaks):
            if len(part) == 0 or not free[part[0]]:
                continue
            short_lived = len(part) < reacquire_after
            if rank > 0 and short_lived and not continues_chosen(track, part, chosen, detections, max_jump, max_scale):
                continue  # short-lived and unrelated to the main face: a false box or a passer-by
            first, last = frames[part[0]], frames[part[-1]]
            claimed[first : last + 1] = True
            chosen[frames[part]] = np.array(track.rows)[part]
    return chosen


def continues_chosen(
    track: Track, part: np.ndarray, chosen: np.ndarray, detections, max_jump: float, max_scale: float
) -> bool:
    """Whether this piece of a track picks up where a chosen face left off (or is picked up by one)."""
    frames = np.array(track.frames)[part]
    boxes = np.array(track.boxes)[part]
    picked = np.flatnonzero(chosen >= 0)
    before, after = picked[picked < frames[0]], picked[picked > frames[-1]]
    for near, own, frame in ((before, boxes[0], frames[0]), (after, boxes[-1], frames[-1])):
        if len(near) == 0:
            continue
        j = near[-1] if near is before else near[0]
        box = np.asarray(detections[j], dtype=np.float64).reshape(len(detections[j]), -1)[chosen[j], :4]
        if np.isfinite(_matches(box, own[None], abs(frame - j), max_jump, max_scale)[0]):
            return True
    return False


def select_main_face(
    detections: Sequence[np.ndarray], max_jump: float = 0.5, reacquire_after: int = 25, max_scale: float = 1.4
) -> tuple[np.ndarray, np.ndarray]:
    """Follow ONE face through the video.

    1. Detections are linked into tracks, frame by frame: a track predicts its next box from its
       recent motion (position and scale, so a face walking toward the camera is followed), and
       takes the candidate with the lowest cost (centre distance / side + |log scale change| - IoU)
       among those whose centre is within ``max_jump`` x the face side of the prediction and whose
       side changed by less than a factor ``max_scale`` (both loosened by sqrt(frames since the
       track's last box)). A track survives ``reacquire_after`` frames without a match.
    2. The main face is the track with the largest sum of sides over its frames: large and present
       through most of the clip, not whichever face comes first.
    3. Other tracks fill the frames outside the chosen tracks' time spans (a cut to another shot),
       but only pieces that last ``reacquire_after`` frames or continue a chosen face in place and
       size. Short-lived boxes that jump in size or position (a chest, a hand, a passer-by) are
       thus never part of the track; their frames count as "main face not found".

    Args:
        detections: N arrays (k, 4+) of x1, y1, x2, y2[, score, ...] per frame; k may be 0.
        max_jump: allowed centre jump between consecutive boxes, in units of the face side.
        reacquire_after: frames a track may miss before it ends; also the shortest piece of another
            face that may take over.
        max_scale: allowed factor of side change between consecutive boxes (> 1).
    Returns:
        boxes: (N, 4) float64; NaN where no face was chosen.
        found: (N,) bool.
    """
    rows = main_face_rows(detections, max_jump, reacquire_after, max_scale)
    boxes = np.full((len(detections), 4), np.nan)
    for i in np.flatnonzero(rows >= 0):
        boxes[i] = np.asarray(detections[i], dtype=np.float64).reshape(len(detections[i]), -1)[rows[i], :4]
    return boxes, rows >= 0


def fill_missing(
    boxes: np.ndarray, found: np.ndarray, max_gap: int = 12, source: str = "the video"
) -> tuple[np.ndarray, np.ndarray]:
    """Bridge short detection gaps.

    Runs of at most ``max_gap`` missing frames that have a found frame on both sides are
    linearly interpolated. Longer gaps and leading/trailing missing frames stay invalid: the
    engine passes them through unchanged. So that every frame still has a usable box, invalid
    frames get the nearest valid box as a placeholder.

    Args:
        boxes: (N, 4) float x1, y1, x2, y2; rows where ``found`` is False are ignored.
        found: (N,) bool.
        max_gap: longest gap (in frames) that is interpolated; 0 disables it.
        source: name of the video, for the error message.
    Returns:
        boxes: (N, 4) float64, finite everywhere.
        valid: (N,) bool, True on found and interpolated frames.
    Raises:
        NoFaceError: no frame has a face.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    found = np.asarray(found, dtype=bool).reshape(-1)
    if len(found) != len(boxes):
        raise ValueError(f"boxes has {len(boxes)} rows but found has {len(found)} entries")
    idx = np.flatnonzero(found)
    if len(idx) == 0:
        raise NoFaceError(
            f"no face was found in any frame of {source}; use a clip where the face is visible "
            "and frontal, or try the other detector"
        )
    out = boxes.copy()
    valid = found.copy()
    for a, b in zip(idx[:-1], idx[1:]):
        gap = b - a - 1
        if 0 < gap <= max_gap:
            t = (np.arange(a + 1, b) - a)[:, None] / (b - a)
            out[a + 1 : b] = (1 - t) * boxes[a] + t * boxes[b]
            valid[a + 1 : b] = True
    # placeholders for invalid frames: the nearest valid box (earlier one on ties)
    vidx = np.flatnonzero(valid)
    for i in np.flatnonzero(~valid):
        j = np.searchsorted(vidx, i)
        left = vidx[j - 1] if j > 0 else None
        right = vidx[j] if j < len(vidx) else None
        near = left if right is None or (left is not None and i - left <= right - i) else right
        out[i] = out[near]
    return out, valid


def _runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges of consecutive True values."""
    edges = np.diff(np.concatenate([[0], valid.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def smooth_boxes(
    boxes: np.ndarray, window: int = 5, valid: np.ndarray | None = None, official: bool = True
) -> np.ndarray:
    """Temporal smoothing of boxes, applied separately to every run of valid frames.

    ``official=True`` reproduces Diff2Lip/Wav2Lip ``get_smoothened_boxes`` on integer boxes:
    sequentially, box i becomes the mean of boxes i..i+window-1 (forward-looking); the last
    window-1 boxes use the final ``window`` boxes, some of which were already smoothed; every
    mean is written back into the int array (truncation). Runs shorter than ``window`` use the
    whole run (the official slice would start at a negative index and wrap around).

    ``official=False`` is a centred moving average in float (no lag, no truncation; the
    window shrinks at run ends).

    Args:
        boxes: (N, 4) x1, y1, x2, y2 pixels (official mode truncates them to int first).
        window: frames per mean, >= 1.
        valid: (N,) bool; invalid frames are returned unchanged and split the runs.
    Returns:
        (N, 4) int64 (official) or float64 boxes; a new array.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1 (got {window})")
    boxes = np.asarray(boxes).reshape(-1, 4)
    n = len(boxes)
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(-1)
    if official:
        out = boxes.astype(np.int64)  # copy; truncation like the detector's int boxes
        for start, stop in _runs(valid):
            run = out[start:stop]  # view: the means are written back in place, as in the original
            m = len(run)
            for i in range(m):
                win = run[max(m - window, 0) :] if i + window > m else run[i : i + window]
                run[i] = np.mean(win, axis=0)
        return out
    out = boxes.astype(np.float64)
    src = out.copy()
    half = window // 2
    for start, stop in _runs(valid):
        for i in range(start, stop):
            lo, hi = max(start, i - half), min(stop, i - half + window)
            out[i] = src[lo:hi].mean(axis=0)
    return out


def pad_boxes(
    boxes: np.ndarray, pads: Sequence[int] = (0, 0, 0, 0), frame_shape: Sequence[int] = ()
) -> np.ndarray:
    """Grow boxes by (top, bottom, left, right) pixels and clip them to the frame.

    Args:
        boxes: (N, 4) or (4,) x1, y1, x2, y2 pixels.
        pads: (top, bottom, left, right) pixels; Diff2Lip uses (0, 0, 0, 0), Wav2Lip (0, 10, 0, 0).
        frame_shape: (H, W), (H, W, 3) or (N, H, W, 3) of the frames.
    Returns:
        boxes of the same shape and dtype (float results are not rounded).
    """
    if len(frame_shape) < 2:
        raise ValueError("frame_shape must give the frame height and width, e.g. frames.shape")
    h, w = (frame_shape[-3], frame_shape[-2]) if len(frame_shape) >= 3 else (frame_shape[0], frame_shape[1])
    top, bottom, left, right = pads
    boxes = np.asarray(boxes)
    out = boxes.copy()
    out[..., 0] = np.clip(boxes[..., 0] - left, 0, w)
    out[..., 1] = np.clip(boxes[..., 1] - top, 0, h)
    out[..., 2] = np.clip(boxes[..., 2] + right, 0, w)
    out[..., 3] = np.clip(boxes[..., 3] + bottom, 0, h)
    return out


def face_boxes(
    frames: np.ndarray, detector: FaceDetector, config: FaceConfig | None = None, source: str = "the video"
) -> tuple[np.ndarray, np.ndarray]:
    """Detect, track, fill, pad and smooth: the face boxes the engine crops with.

    Args:
        frames: (N, H, W, 3) uint8 RGB.
        detector: any :class:`FaceDetector`.
        config: pads, smooth_window and max_gap are used.
        source: name of the video, for error messages.
    Returns:
        boxes: (N, 4) int64 x1, y1, x2, y2 (placeholders on invalid frames).
        valid: (N,) bool; frames to lip-sync.
    Raises:
        NoFaceError: no frame has a face.
    """
    boxes, valid, _, _ = boxes_from_detections(detector.detect(frames), np.shape(frames), config, source)
    return boxes, valid


def boxes_from_detections(
    detections: Sequence[np.ndarray], frame_shape: tuple, config: FaceConfig | None = None, source: str = "the video",
    shots: Sequence[tuple[int, int]] | None = None, choose: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Track, check the mouth, fill, pad and smooth per-frame detections (gathered chunk by chunk,
    so frames need not be kept).

    Where the detector gives keypoints, faces whose mouth is not inside the frame
    (:func:`mouth_in_frame`) are set aside first; the main face comes from :func:`main_face_rows` on
    the rest. Frames where only such faces were found are refused: they are not lip-synced, and gaps
    that contain them are not interpolated.

    With ``shots`` (lipsync.media.shots), every shot is its own clip for the main face, the gap filling
    and the smoothing: no box is interpolated, smoothed or carried across a cut.

    Args:
        detections: one (k, 5) or (k, 5 + 2m) array per frame, as :meth:`FaceDetector.detect` returns.
        frame_shape: (N, H, W, 3) or (H, W, 3) of the frames, for clipping padded boxes.
        shots: [start, stop) frame ranges covering the clip; None: one shot.
        choose: ``choose(usable, keeps) -> (N,) rows``, the face to follow instead of each shot's main face
            (lipsync.media.speaker.choose_rows); ``usable[i]`` are the detections of frame i whose mouth is in
            the picture, ``keeps[i]`` the (k,) bool mask that picked them from ``detections[i]``.
    Returns:
        boxes (N, 4) int64, valid (N,) bool (frames to lip-sync), found (N,) bool (the main face was
        detected there; valid & ~found are interpolated frames), refused (N,) bool (no main face there,
        but a face whose mouth is out of the picture was detected: a close-up or a face leaving the frame).
    Raises:
        NoFaceError: no frame has a usable face.
    """
    config = config or FaceConfig()
    n = len(detections)
    shots = list(shots) if shots else [(0, n)]
    usable, keeps, mouth_out = [], [], np.zeros(n, dtype=bool)
    for i, dets in enumerate(detections):
        dets = np.asarray(dets, dtype=np.float64)
        dets = dets.reshape(len(dets), -1) if dets.size else np.empty((0, 5))
        keep = mouth_in_frame(dets, tuple(frame_shape))
        usable.append(dets[keep])
        keeps.append(keep)
        mouth_out[i] = not keep.all()
    # faces without a visible mouth never compete for the main face
    if choose is not None:
        rows = np.asarray(choose(usable, keeps), dtype=np.int64)
    else:
        rows = np.concatenate([main_face_rows(usable[a:b]) for a, b in shots]) if n else np.zeros(0, np.int64)
    boxes = np.full((n, 4), np.nan)
    for i in np.flatnonzero(rows >= 0):
        boxes[i] = usable[i][rows[i], :4]
    found = rows >= 0
    refused = mouth_out & ~found
    if refused.any() and not found.any():
        raise NoFaceError(
            f"the mouth is outside the picture in every frame of {source} where a face was found "
            f"({int(refused.sum())} frames); use a clip where the whole mouth is visible"
        )
    filled, _ = fill_missing(boxes, found, max_gap=config.max_gap, source=source)  # placeholders everywhere
    valid = np.zeros(n, dtype=bool)
    for a, b in shots:  # gaps are bridged inside a shot only
        if found[a:b].any():
            filled[a:b], valid[a:b] = fill_missing(boxes[a:b], found[a:b], max_gap=config.max_gap, source=source)
    for start, stop in _runs(~found):  # never bridge a gap across refused frames
        if refused[start:stop].any():
            valid[start:stop] = False
    boxes = pad_boxes(filled, config.pads, tuple(frame_shape))
    boxes = np.concatenate([smooth_boxes(boxes[a:b], config.smooth_window, valid=valid[a:b], official=True)
                            for a, b in shots])
    bad = valid & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    return boxes, valid & ~bad, found, refused
