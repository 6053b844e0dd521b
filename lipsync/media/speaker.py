"""Which face gets the mouth in each shot: the same person throughout, chosen by who it is and whether it talks.

    detections of a clip, its shots (lipsync.media.shots), a descriptor per detection (lipsync.media.identity)
      -> shot_tracks      faces linked frame by frame INSIDE each shot (a track never crosses a cut)
      -> group_people     tracks of all shots grouped by appearance: one group per person
      -> the person       the group the user's point falls in (``--face X,Y``), else the one with the largest
                          screen presence (sum of face sides over its frames); a person whose mouth never moves
                          (a photo, a poster, a listener) gives way to one whose mouth does, and among people of
                          similar presence the talk correlation (mouth motion against the clip's own sound,
                          :mod:`lipsync.media.talking`) multiplies the presence by up to 1 + TALK_BONUS
      -> rows             in every shot, that person's tracks; a shot without them keeps no face (untouched)

``face_choice="largest"`` keeps the older rule instead: in every shot, the largest face (for dubbing a scene
where several people speak). A shot shorter than the tracker's minimum piece still gets the chosen person,
because identity, not duration, says who it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from lipsync.errors import NoFaceError
from lipsync.media.boxes import box_area
from lipsync.media.identity import SAME_PERSON, descriptor_distance
from lipsync.media.talking import mouth_activity, mouth_is_still, talk_correlation
from lipsync.media.tracking import Track, continues_chosen, link_tracks, main_face_rows

FACE_CHOICES = ("speaker", "largest")
TALK_BONUS = 0.5  # the talk correlation (clipped to 0..TALK_BONUS) multiplies the presence by 1 + it
STILL_RANGE = 0.25  # people with at least this fraction of the largest presence are checked for a still mouth
MAX_JUMP, MAX_SCALE, MIN_TRACK = 0.5, 1.4, 25  # the tracker's rules (lipsync.media.tracking.main_face_rows)


@dataclass
class ShotTrack:
    """One face linked through part of one shot; ``track.frames`` are frame numbers of the whole clip."""

    shot: int
    track: Track
    descriptor: np.ndarray  # mean appearance descriptor of its detections
    person: int = -1

    @property
    def frames(self) -> np.ndarray:
        return np.asarray(self.track.frames)


def shot_tracks(detections: Sequence[np.ndarray], shots: Sequence[tuple[int, int]],
                descriptors: Sequence[np.ndarray]) -> list[ShotTrack]:
    """Link the faces of every shot separately (the tracker's rules) and describe each track.

    Args:
        detections: one (k, 4+) array per frame.
        shots: [start, stop) frame ranges covering the clip.
        descriptors: one (k, D) array per frame, row for row with ``detections``.
    """
    out = []
    for s, (a, b) in enumerate(shots):
        for track in link_tracks(list(detections[a:b]), MAX_JUMP, MAX_SCALE, MIN_TRACK):
            track.frames = [a + f for f in track.frames]
            rows = np.array([descriptors[f][r] for f, r in zip(track.frames, track.rows)], dtype=np.float64)
            seen = np.isfinite(rows).all(axis=1)
            mean = rows[seen].mean(axis=0) if seen.any() else np.full(rows.shape[1], np.nan)
            out.append(ShotTrack(s, track, mean))
    return out


def group_people(tracks: list[ShotTrack], num_frames: int) -> int:
    """Give every track a ``person`` number; returns the number of people.

    Tracks are taken largest first; each joins the nearest person whose mean descriptor is closer than
    :data:`SAME_PERSON` and who is not already seen in any of its frames (one person is one face per frame),
    else it starts a new person.
    """
    sums: list[np.ndarray] = []
    weights: list[int] = []
    seen: list[np.ndarray] = []
    for t in sorted(tracks, key=lambda t: -t.track.score):
        best, best_d = -1, SAME_PERSON
        for p in range(len(sums)):
            if seen[p][t.frames].any():
                continue
            d = descriptor_distance(sums[p] / weights[p], t.descriptor)
            if d < best_d:
                best, best_d = p, d
        if best < 0:
            sums.append(np.zeros_like(t.descriptor, dtype=np.float64))
            weights.append(0)
            seen.append(np.zeros(num_frames, dtype=bool))
            best = len(sums) - 1
        t.person = best
        if np.isfinite(t.descriptor).all():
            sums[best] = sums[best] + len(t.frames) * t.descriptor
            weights[best] += len(t.frames)
        else:  # a track without a descriptor never takes others in
            sums[best] = np.full_like(sums[best], np.nan)
            weights[best] = max(weights[best], 1)
        seen[best][t.frames] = True
    return len(sums)


def face_at_point(boxes: np.ndarray, point: Sequence[float]) -> Optional[int]:
    """Index of the box (k, 4+) that contains ``point`` (x, y); the smallest one when several do; None."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(len(boxes), -1) if len(boxes) else np.empty((0, 4))
    x, y = float(point[0]), float(point[1])
    inside = np.flatnonzero((boxes[:, 0] <= x) & (x < boxes[:, 2]) & (boxes[:, 1] <= y) & (y < boxes[:, 3]))
    if len(inside) == 0:
        return None
    return int(inside[np.argmin(box_area(boxes[inside, :4]))])


def _point_error(point, frame: int, boxes: np.ndarray) -> NoFaceError:
    listed = "; ".join(f"face {k + 1} at x {int(b[0])}-{int(b[2])}, y {int(b[1])}-{int(b[3])}"
                       for k, b in enumerate(boxes[np.argsort(boxes[:, 0] + boxes[:, 2])]))
    where = f"the faces there: {listed}" if len(boxes) else "no face was found there"
    return NoFaceError(f"the face point {int(point[0])},{int(point[1])} is on no face in frame {frame} ({where}); "
                       "give a point inside the face to lip-sync (the Check image numbers the faces)")


def choose_person(tracks: list[ShotTrack], num_people: int, detections: Sequence[np.ndarray], point=None,
                  point_frame: int = 0, speech: Optional[Callable[[], Optional[np.ndarray]]] = None,
                  patches: Optional[Sequence[np.ndarray]] = None) -> int:
    """The person to lip-sync: the one at ``point`` in frame ``point_frame``, else the largest presence
    (times 1 + talk correlation when ``speech()`` gives the clip's (N,) speech envelope and ``patches`` the
    mouth patches per detection). Raises NoFaceError when the point is on no face."""
    if point is not None:
        boxes = np.asarray(detections[point_frame], dtype=np.float64).reshape(len(detections[point_frame]), -1)
        row = face_at_point(boxes, point)
        for t in tracks if row is not None else ():
            if point_frame in t.track.frames and t.track.rows[t.track.frames.index(point_frame)] == row:
                return t.person
        raise _point_error(point, point_frame, boxes[:, :4])
    presence = np.zeros(num_people)
    for t in tracks:
        presence[t.person] += t.track.score
    score = presence.copy()
    if patches is None:
        return int(np.argmax(score))
    n = len(detections)
    activity = {}
    for p in np.flatnonzero(presence >= STILL_RANGE * presence.max()):
        activity[p] = np.full(n, np.nan)
        for t in (t for t in tracks if t.person == p):
            own = mouth_activity(t.track.frames, [patches[f][r] for f, r in zip(t.track.frames, t.track.rows)], n)
            activity[p] = np.where(np.isfinite(own), own, activity[p])
    # a mouth that never moves (a photo, a poster, a listener) gives way to one that does
    still = {p for p, a in activity.items() if mouth_is_still(a)}
    if still and len(still) < len(activity):
        score[list(still)] = 0.0
    contenders = [p for p in activity if score[p] > 0 and score[p] * (1 + TALK_BONUS) >= score.max()]
    envelope = speech() if (len(contenders) > 1 and speech is not None) else None
    for p in contenders if envelope is not None else ():
        score[p] *= 1 + float(np.clip(talk_correlation(activity[p], envelope), 0, TALK_BONUS))
    return int(np.argmax(score))


def choose_rows(detections: Sequence[np.ndarray], shots: Sequence[tuple[int, int]],
                descriptors: Optional[Sequence[np.ndarray]] = None, face_choice: str = "speaker", point=None,
                point_frame: int = 0, speech: Optional[Callable[[], Optional[np.ndarray]]] = None,
                patches: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
    """Which detection row is the face to lip-sync in each frame, shot by shot.

    Args:
        detections: N arrays (k, 4+) x1, y1, x2, y2[, ...] per frame (faces that may be lip-synced).
        shots: [start, stop) ranges covering frames 0..N.
        descriptors: N arrays (k, D) of appearance descriptors, row for row; None: no identity is known and
            every shot gets its largest face.
        face_choice: "speaker" (one person throughout) or "largest" (the largest face of every shot).
        point: (x, y) pixels in frame ``point_frame``: follow the person whose box contains it (any choice).
        speech: gives the clip's own speech envelope (N,), or None without sound; called only when two
            people compete.
        patches: N arrays (k, 8, 16) mouth patches, row for row (for the talk correlation).
    Returns:
        (N,) int64 row index per frame, -1 where the face is not there.
    Raises:
        NoFaceError: ``point`` is on no face of frame ``point_frame``.
    """
    if face_choice not in FACE_CHOICES:
        raise ValueError(f"face_choice must be one of {', '.join(FACE_CHOICES)}; got {face_choice!r}")
    n = len(detections)
    rows = np.full(n, -1, dtype=np.int64)
    if descriptors is None and point is not None:  # no appearance known: the point's track alone
        descriptors = [np.full((len(d), 1), np.nan) for d in detections]
    if descriptors is None or (face_choice == "largest" and point is None):
        for a, b in shots:
            rows[a:b] = main_face_rows(list(detections[a:b]))
        return rows
    tracks = shot_tracks(detections, shots, descriptors)
    if not tracks:
        return rows
    person = choose_person(tracks, group_people(tracks, n), detections, point, point_frame, speech, patches)
    for s in range(len(shots)):
        mine = sorted((t for t in tracks if t.shot == s and t.person == person), key=lambda t: -t.track.score)
        for k, t in enumerate(mine):
            whole = np.arange(len(t.frames))
            # the shot's largest piece of the person always; further pieces as the tracker's rules allow
            if k == 0 or len(t.frames) >= MIN_TRACK or continues_chosen(t.track, whole, rows, detections,
                                                                        MAX_JUMP, MAX_SCALE):
                free = rows[t.frames] < 0
                rows[t.frames[free]] = np.asarray(t.track.rows)[free]
    return rows


def draw_faces(frame: np.ndarray, boxes: np.ndarray, chosen: Optional[int], note: str) -> np.ndarray:
    """The Check image: every face box numbered 1.. from left to right, the chosen one green (the others
    grey), and ``note`` on top. ``boxes`` (k, 4) in that left-to-right order; returns a new (H, W, 3) uint8."""
    canvas = frame.copy()
    thickness = max(2, frame.shape[0] // 300)
    scale = max(0.6, frame.shape[0] / 600)
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=np.int64).reshape(-1, 4)):
        colour = (0, 255, 0) if k == chosen else (200, 200, 200)
        cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), colour, thickness)
        cv2.putText(canvas, str(k + 1), (int(x1) + 4, int(y1) + int(28 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, colour, thickness)
    if note:
        cv2.putText(canvas, note, (10, int(20 + 14 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale,
                    (255, 255, 0), max(1, thickness // 2))
    return canvas


def frame_choice(boxes: np.ndarray, point=None) -> tuple[np.ndarray, Optional[int], str]:
    """The Check image's choice among the faces of ONE frame.

    Args:
        boxes: (k, 4+) usable face boxes of the frame.
        point: the job's face point (x, y), or None.
    Returns:
        (k, 4) boxes numbered left to right, the index of the face the job starts from (the one at ``point``,
        else the largest; None when the point is on no face), and a note saying so ("" for a lone face
        without a point).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(len(boxes), -1)[:, :4]
    boxes = boxes[np.argsort(boxes[:, 0] + boxes[:, 2], kind="stable")]
    if point is not None:
        chosen = face_at_point(boxes, point)
        if chosen is None:
            return boxes, None, f"no face at {int(point[0])},{int(point[1])}: point inside a face"
        return boxes, chosen, f"face {chosen + 1} of {len(boxes)} is used (chosen)"
    chosen = int(np.argmax(box_area(boxes)))
    if len(boxes) == 1:
        return boxes, chosen, ""
    return boxes, chosen, f"face {chosen + 1} of {len(boxes)} is used (largest); click a face to choose it"
