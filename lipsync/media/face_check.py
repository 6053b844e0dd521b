"""Is a detection really a face? :class:`FaceMeshCheck` turns away logos, posters and patterns that a face
detector mistakes for a face, so that no mouth is ever pasted on them.

MediaPipe FaceMesh (bundled with mediapipe 0.10.14, nothing downloaded) looks at a square crop around each
detection. A detection is a face when FaceMesh finds a face there AND that face is the detection:

1. the mesh's bounding box overlaps the detection's box (IoU >= ``min_iou``);
2. the distance between the mesh's eyes is a face-like fraction of the box width (``eye_width``);
3. with a detector that gives keypoints (BlazeFace): the mesh's eyes, nose tip and mouth lie where the
   detector put them, within ``max_keypoint_error`` x the distance between the eyes.

On a logo FaceMesh either finds no face (its own presence test), or a small, misplaced one: on the 70 logo
variants of the calibration, 67 found no face and the other 3 were off by 0.73-0.88 eye distances (mouth) and
IoU 0.10-0.12. On real faces of the shared clips the largest keypoint error was 0.17 and the smallest IoU 0.73.

Detections whose mouth is out of the picture (:func:`lipsync.media.keypoints.mouth_in_frame`) are not checked:
they are kept, and the tracking's mouth check refuses them (a close-up counts as "refused", not "missing").

The check costs about 5-30 ms per detection on a CPU, so it runs on a track's first frame and is then held:
a detection that overlaps a checked one of the previous frame (IoU > 0.5) and looks the same (a 16x16 grey
thumbnail) keeps its verdict, accepted faces for ``hold`` frames, rejected ones for ``hold_rejected`` frames.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from typing import List, Sequence

import cv2
import numpy as np

from lipsync.console import quiet_native_stderr
from lipsync.media.boxes import box_iou
from lipsync.media.keypoints import mouth_in_frame

logger = logging.getLogger(__name__)

# FaceMesh landmark indices (the canonical 468-point mesh)
_EYE_A = (33, 133)  # the eye on the image's left for a frontal face (corners)
_EYE_B = (362, 263)
_NOSE_TIP = (1,)
_MOUTH = (13, 14)  # inner lips, upper and lower


@dataclass
class _Checked:
    """A detection of the previous frame with its verdict."""

    box: np.ndarray  # (4,) x1, y1, x2, y2
    thumb: np.ndarray  # (16, 16) float32 grey crop of the box
    face: bool
    age: int  # frames since the verdict was last computed


class FaceMeshCheck:
    """Accept a detection only if FaceMesh finds a plausible face mesh in it (see the module docstring).

    Args:
        crop_factor: side of the crop FaceMesh sees, in units of the box's longer side.
        crop_pixels: the crop is resampled to this side (FaceMesh's landmark model works at 192 px).
        min_iou: least IoU between the mesh's bounding box and the detection's box.
        eye_width: (low, high) bounds of the mesh's eye distance / box width.
        max_keypoint_error: largest distance between a mesh point and the detector's keypoint, in eye distances.
        hold: frames an accepted verdict is reused for a detection that stays in place and looks the same.
        hold_rejected: the same for a rejected detection.

    Raises:
        ImportError: mediapipe is not installed.
    """

    def __init__(self, crop_factor: float = 1.6, crop_pixels: int = 192, min_iou: float = 0.4,
                 eye_width: tuple = (0.2, 0.7), max_keypoint_error: float = 0.4, hold: int = 25,
                 hold_rejected: int = 5) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protobuf/matplotlib deprecation notices on import
            from mediapipe.python.solutions import face_mesh
        self.crop_factor, self.crop_pixels = crop_factor, crop_pixels
        self.min_iou, self.eye_width, self.max_keypoint_error = min_iou, eye_width, max_keypoint_error
        self.hold, self.hold_rejected = hold, hold_rejected
        self.checks = 0  # FaceMesh runs so far (the cost)
        self._lock = threading.Lock()
        self._previous: List[_Checked] = []
        with quiet_native_stderr():
            self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, min_detection_confidence=0.5)
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))  # TFLite's start-up lines

    def landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """FaceMesh's (468, 2) landmarks in frame pixels on a crop around ``box``, or None when it finds no face.

        Args:
            frame: (H, W, 3) uint8 RGB.
            box: x1, y1, x2, y2 in frame pixels.
        """
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        side = self.crop_factor * max(x2 - x1, y2 - y1, 1.0)
        scale = self.crop_pixels / side
        x0, y0 = (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2
        warp = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        crop = cv2.warpAffine(frame, warp, (self.crop_pixels, self.crop_pixels), flags=interpolation,
                              borderMode=cv2.BORDER_CONSTANT)  # outside the frame: black
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # protobuf's GetPrototype deprecation notice
            result = self._mesh.process(crop)
        self.checks += 1
        if not result.multi_face_landmarks:
            return None
        points = np.array([[p.x, p.y] for p in result.multi_face_landmarks[0].landmark], dtype=np.float64)
        return points * self.crop_pixels / scale + [x0, y0]

    def plausible(self, frame: np.ndarray, row: np.ndarray) -> bool:
        """Whether the detection ``row`` (x1, y1, x2, y2, score[, keypoints]) is a face: FaceMesh finds one that
        fills the box, with face-like proportions, and (with keypoints) eyes, nose and mouth where the detector
        saw them."""
        points = self.landmarks(frame, row)
        if points is None:
            return False
        box = np.asarray(row[:4], dtype=np.float64)
        mesh_box = np.concatenate([points.min(axis=0), points.max(axis=0)])
        if box_iou(mesh_box, box[None])[0] < self.min_iou:
            return False
        parts = np.array([points[list(ids)].mean(axis=0) for ids in (_EYE_A, _EYE_B, _NOSE_TIP, _MOUTH)])
        eyes = np.linalg.norm(parts[0] - parts[1])
        low, high = self.eye_width
        if not low <= eyes / max(box[2] - box[0], 1.0) <= high:
            return False
        if len(row) >= 13 and np.isfinite(row[5:13]).all():  # BlazeFace: right eye, left eye, nose tip, mouth
            keypoints = np.asarray(row[5:13], dtype=np.float64).reshape(4, 2)
            # the mesh's eyes in either order (the detector names them from the person's side)
            error = min(np.linalg.norm(parts[order] - keypoints, axis=1).max()
                        for order in ([0, 1, 2, 3], [1, 0, 2, 3]))
            if error > self.max_keypoint_error * eyes:
                return False
        return True

    def filter(self, frame: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The rows of one frame's detections that are faces (or whose mouth is out of the picture), in order.

        Call it on consecutive frames of a clip: verdicts are carried from one frame to the next (see the
        module docstring). A frame of another clip never inherits a verdict unless it shows the same picture.

        Args:
            frame: (H, W, 3) uint8 RGB.
            rows: (k, 5 + ...) detections in frame pixels.
        Returns:
            (k', 5 + ...) the kept rows.
        """
        rows = np.asarray(rows, dtype=np.float64)
        if len(rows) == 0:
            with self._lock:
                self._previous = []
            return rows
        keep = np.ones(len(rows), dtype=bool)
        checked = ~mouth_in_frame(rows, frame.shape)  # the mouth check refuses these; FaceMesh is not asked
        with self._lock:
            current: List[_Checked] = []
            for i, row in enumerate(rows):
                if checked[i]:
                    continue
                thumb = _thumbnail(frame, row[:4])
                held = self._held(row[:4], thumb)
                if held is None:
                    entry = _Checked(row[:4].copy(), thumb, self.plausible(frame, row), 0)
                else:
                    entry = _Checked(row[:4].copy(), thumb, held.face, held.age + 1)
                current.append(entry)
                keep[i] = entry.face
                if not entry.face and held is None:
                    logger.debug("detection %s is not a face (FaceMesh); ignored", np.round(row[:5], 2).tolist())
            self._previous = current
        return rows[keep]

    def _held(self, box: np.ndarray, thumb: np.ndarray) -> _Checked | None:
        """The previous frame's verdict for this box, if it may be reused."""
        best, best_iou = None, 0.5
        for entry in self._previous:
            iou = box_iou(entry.box, box[None])[0]
            if iou > best_iou:
                best, best_iou = entry, iou
        if best is None or best.age + 1 >= (self.hold if best.face else self.hold_rejected):
            return None
        if np.abs(best.thumb - thumb).mean() > 12.0:  # another picture in the same place (a cut, another clip)
            return None
        return best

    def reset(self) -> None:
        """Forget the previous frame's verdicts."""
        with self._lock:
            self._previous = []


def _thumbnail(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(16, 16) float32 grey thumbnail of the box (clipped to the frame)."""
    h, w = frame.shape[:2]
    x1, y1 = int(np.clip(box[0], 0, w - 1)), int(np.clip(box[1], 0, h - 1))
    x2, y2 = max(int(np.clip(box[2], 0, w)), x1 + 1), max(int(np.clip(box[3], 0, h)), y1 + 1)
    grey = cv2.cvtColor(np.ascontiguousarray(frame[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)


def filter_detections(check: FaceMeshCheck | None, frames: Sequence[np.ndarray],
                      detections: List[np.ndarray]) -> List[np.ndarray]:
    """Apply ``check`` (None: keep everything) to one detection array per frame."""
    if check is None:
        return detections
    return [check.filter(frame, rows) for frame, rows in zip(frames, detections)]
