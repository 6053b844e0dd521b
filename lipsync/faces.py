"""Face detection, one-face tracking, box smoothing, cropping and paste-back.

Data flow (Diff2Lip's ``generate.py`` order)::

    frames (N, H, W, 3) uint8 RGB
      -> detector.detect          one (k, 5) array per frame: x1, y1, x2, y2, score
      -> select_main_face         (N, 4) boxes of ONE face + found mask (tracks by centre and scale)
      -> mouth_in_frame           with keypoints: frames whose mouth is out of the picture are refused
      -> fill_missing             short gaps interpolated, valid mask
      -> pad_boxes                (top, bottom, left, right) pixels, clipped to the frame
      -> smooth_boxes             official forward-looking mean, integer truncation
      -> crop_faces               (N, 128, 128, 3) uint8
      ... pipeline ...
      -> paste_faces              generated crops back into a copy of the frames

Boxes are always ``(x1, y1, x2, y2)`` in pixels of the full frame, x2/y2 exclusive
(``frame[y1:y2, x1:x2]``). Nothing heavy is imported or built at import time:
face_alignment is imported when an :class:`S3FDDetector` is constructed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from .errors import CheckpointMismatchError, NoFaceError, WeightsUnavailableError

__all__ = [
    "DETECTORS",
    "FaceConfig",
    "FaceDetector",
    "KEYPOINT_NAMES",
    "MediaPipeDetector",
    "OpenCVDetector",
    "S3FDDetector",
    "boxes_from_detections",
    "crop_faces",
    "face_boxes",
    "fill_missing",
    "get_detector",
    "main_face_rows",
    "mouth_alpha",
    "mouth_in_frame",
    "pad_boxes",
    "paste_faces",
    "select_main_face",
    "smooth_boxes",
]


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


# --------------------------------------------------------------------------------------
# Detectors
# --------------------------------------------------------------------------------------


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in a batch of frames."""

    def detect(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Args: frames (N, H, W, 3) uint8 RGB.
        Returns: N float arrays of shape (k, 5): x1, y1, x2, y2 (full-frame pixels), score;
        k may be 0. Rows are sorted by descending score."""
        ...


def _as_frame_list(frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """Check that frames are (H, W, 3) uint8 images and return them as a list."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        raise ValueError(
            f"frames has shape {frames.shape}; pass a batch (N, H, W, 3), e.g. frames[None] "
            "for a single image"
        )
    out = list(frames)
    for frame in out:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"a frame has shape {frame.shape} and dtype {frame.dtype}; frames must be "
                "(H, W, 3) uint8 RGB"
            )
    return out


def _downscale(frame: np.ndarray, max_size: int) -> tuple[np.ndarray, float, float]:
    """Shrink ``frame`` so that its longer side is <= max_size (never enlarge).

    Returns the image and the factors (sx, sy) that map its pixel coordinates back to the
    original frame (x_full = x_small * sx).
    """
    h, w = frame.shape[:2]
    scale = min(1.0, max_size / max(h, w))
    if scale >= 1.0:
        return frame, 1.0, 1.0
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return small, w / new_w, h / new_h


def _to_frame_coords(dets: np.ndarray, sx: float, sy: float, shape: tuple[int, ...]) -> np.ndarray:
    """Scale (k, 5) detections from a downscaled image back to the frame and clip them."""
    dets = np.asarray(dets, dtype=np.float64).reshape(-1, 5).copy()
    dets[:, [0, 2]] = np.clip(dets[:, [0, 2]] * sx, 0, shape[1])
    dets[:, [1, 3]] = np.clip(dets[:, [1, 3]] * sy, 0, shape[0])
    dets = dets[(dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1])]
    return dets[np.argsort(-dets[:, 4], kind="stable")]


class S3FDDetector:
    """face_alignment's S3FD detector (the one Wav2Lip and Diff2Lip use), run in batches.

    Args:
        device: "cpu", "cuda", "cuda:N" or "mps".
        path_to_detector: a local ``s3fd-619a316812.pth`` (a plain state dict of
            ``face_alignment.detection.sfd.net_s3fd.s3fd``). None downloads it once into the
            torch hub cache (``$TORCH_HOME/hub/checkpoints``).
        batch_size: frames per forward pass.
        max_size: frames are downscaled so that their longer side is <= max_size before
            detection; boxes are scaled back to full-frame pixels.
        threshold: minimum score in [0, 1] of a kept box (face_alignment's default 0.5).

    Raises:
        WeightsUnavailableError: the weights cannot be downloaded or read.
        CheckpointMismatchError: ``path_to_detector`` is not an S3FD state dict.
    """

    name = "s3fd"

    def __init__(
        self,
        device: str = "cpu",
        path_to_detector: str | os.PathLike | None = None,
        batch_size: int = 8,
        max_size: int = 640,
        threshold: float = 0.5,
    ) -> None:
        if not any(kind in str(device) for kind in ("cpu", "cuda", "mps")):
            raise ValueError(f"device {device!r} is not supported by S3FD; use 'cpu', 'cuda' or 'mps'")
        if batch_size < 1 or max_size < 32:
            raise ValueError(f"batch_size must be >= 1 and max_size >= 32 (got {batch_size}, {max_size})")
        try:
            from face_alignment.detection.sfd.sfd_detector import SFDDetector
        except ImportError as exc:
            raise WeightsUnavailableError(
                f"the S3FD face detector needs the face-alignment package ({exc}); "
                "run 'pip install face-alignment', or choose the 'opencv' detector"
            ) from exc

        self.device = str(device)
        self.batch_size = batch_size
        self.max_size = max_size
        path = None if path_to_detector is None else os.fspath(path_to_detector)
        try:
            if path is None:  # a quick check, not a download that hangs or retries when offline
                from face_alignment.detection.sfd.sfd_detector import models_urls

                from .hub import require_download

                require_download(models_urls["s3fd"])
            self._detector = SFDDetector(self.device, path_to_detector=path, filter_threshold=threshold)
        except OSError as exc:  # urllib's URLError and socket timeouts are OSErrors
            if path is None:
                reason = getattr(exc, "reason", None) or exc
                raise WeightsUnavailableError(
                    f"could not download the S3FD face-detector weights ({reason}); "
                    "connect to the internet once, or choose the 'opencv' detector"
                ) from exc
            raise WeightsUnavailableError(
                f"could not read the S3FD weights file {path} ({exc}); check the path, or pass "
                "path_to_detector=None to download the weights, or choose the 'opencv' detector"
            ) from exc
        except (RuntimeError, pickle.UnpicklingError, KeyError) as exc:
            if path is None:
                raise
            raise CheckpointMismatchError(
                f"{path} is not an S3FD state dict ({str(exc).splitlines()[0]}); pass face-alignment's "
                "s3fd-619a316812.pth, or path_to_detector=None to download it"
            ) from exc

    def detect(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Detect faces.

        Args:
            frames: (N, H, W, 3) uint8 RGB, all of the same size.
        Returns:
            N float64 arrays (k, 5): x1, y1, x2, y2 in full-frame pixels, score in [0, 1].
        """
        import torch

        frames = _as_frame_list(frames)
        results: list[np.ndarray] = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            smalls, scales = [], []
            for frame in batch:
                small, sx, sy = _downscale(frame, self.max_size)
                smalls.append(small)
                scales.append((sx, sy))
            tensor = torch.from_numpy(np.stack(smalls)).permute(0, 3, 1, 2).float()  # (B, 3, h, w) RGB 0..255
            per_frame = self._detector.detect_from_batch(tensor)
            for dets, (sx, sy), frame in zip(per_frame, scales, batch):
                rows = np.asarray(dets, dtype=np.float64).reshape(-1, 5)
                results.append(_to_frame_coords(rows, sx, sy, frame.shape))
        return results


def _find_cascade() -> tuple[str, object]:
    """Return (backend, classifier) for the download-free frontal-face cascade.

    OpenCV 4.x wheels ship ``haarcascade_frontalface_default.xml`` in ``cv2.data.haarcascades``
    and have ``cv2.CascadeClassifier``. OpenCV 5 moved cascades out of the main wheel (no
    ``CascadeClassifier``, an empty ``cv2/data``); there we evaluate OpenCV's own
    ``lbpcascade_frontalface_opencv.xml``, which scikit-image (a dependency of face-alignment)
    bundles, with ``skimage.feature.Cascade``.
    """
    haar_dir = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if hasattr(cv2, "CascadeClassifier") and haar_dir:
        xml = os.path.join(haar_dir, "haarcascade_frontalface_default.xml")
        if os.path.isfile(xml):
            classifier = cv2.CascadeClassifier(xml)
            if not classifier.empty():
                return "cv2", classifier
    try:
        import skimage.data
        from skimage.feature import Cascade
    except ImportError:
        pass
    else:
        xml = os.path.join(os.path.dirname(skimage.data.__file__), "lbpcascade_frontalface_opencv.xml")
        if os.path.isfile(xml):
            return "skimage", Cascade(xml)
    raise WeightsUnavailableError(
        f"no bundled OpenCV face cascade was found (OpenCV {cv2.__version__} has no "
        "haarcascade_frontalface_default.xml and scikit-image is missing); "
        "run 'pip install scikit-image' or 'pip install \"opencv-python-headless<5\"', "
        "or choose the 's3fd' detector"
    )


def _merge_nested(rects: np.ndarray, counts: np.ndarray, overlap: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Merge cascade rectangles (k, 4) x, y, w, h whose intersection covers >= ``overlap``
    of the smaller one (a face found at two scales or positions). Each group becomes the mean
    of its members of at least half the largest member's area; counts are summed."""
    k = len(rects)
    parent = list(range(k))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    x1, y1 = rects[:, 0], rects[:, 1]
    x2, y2 = x1 + rects[:, 2], y1 + rects[:, 3]
    area = rects[:, 2] * rects[:, 3]
    for i in range(k):
        for j in range(i + 1, k):
            iw = min(x2[i], x2[j]) - max(x1[i], x1[j])
            ih = min(y2[i], y2[j]) - max(y1[i], y1[j])
            if iw > 0 and ih > 0 and iw * ih >= overlap * min(area[i], area[j]):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(k):
        groups.setdefault(root(i), []).append(i)
    merged, scores = [], []
    for members in groups.values():
        members = np.array(members)
        # a hit nested inside a much larger one is a part of that face (eye, mouth): drop it
        big = members[area[members] >= 0.5 * area[members].max()]
        merged.append(rects[big].mean(axis=0))
        scores.append(counts[members].sum())
    return np.array(merged, dtype=np.float64).reshape(-1, 4), np.array(scores, dtype=np.float64)


class OpenCVDetector:
    """Download-free frontal-face detector built on OpenCV's bundled cascade models.

    Backend: ``cv2.CascadeClassifier`` with ``haarcascade_frontalface_default.xml`` where the
    installed OpenCV ships it (4.x); otherwise OpenCV's ``lbpcascade_frontalface_opencv.xml``
    evaluated by scikit-image (OpenCV 5 dropped the cascades from its wheel).

    Box mapping: a cascade box is a square (x, y, w, h) from the forehead or hairline to about
    the chin; S3FD boxes start lower (eyebrows) and end below the chin. The square is mapped to
    ``(x, y + top*h, x + w, y + bottom*h)`` with (top, bottom) = (0.10, 1.05) for the Haar
    cascade (its squares are large and already reach the chin) and (0.05, 1.15) for the
    tighter LBP cascade, so that the chin is inside the box; the engine's pads come on top.
    These factors were set by eye on the three shared talking-head clips.

    Args:
        min_size_frac: smallest face side searched, as a fraction of the shorter frame side.
        scale_factor: step between search scales (> 1; smaller finds more, runs slower).
        min_neighbors: overlapping raw hits a face needs (higher rejects more false positives).
        max_size: frames are downscaled so that their longer side is <= max_size.

    Scores are the cascade's neighbour counts (cv2 backend) or the number of merged hits
    (scikit-image backend); they are >= 1 and only meaningful for ranking within a frame.
    """

    name = "opencv"
    _MAPPING = {"cv2": (0.10, 1.05), "skimage": (0.05, 1.15)}  # (top, bottom) x square side

    def __init__(
        self,
        min_size_frac: float = 0.1,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        max_size: int = 640,
    ) -> None:
        if not 0 < min_size_frac < 1 or scale_factor <= 1 or max_size < 32:
            raise ValueError(
                "need 0 < min_size_frac < 1, scale_factor > 1 and max_size >= 32 "
                f"(got {min_size_frac}, {scale_factor}, {max_size})"
            )
        self.min_size_frac = min_size_frac
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.max_size = max_size
        self.backend, self._cascade = _find_cascade()

    def _rects(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw cascade rectangles (k, 4) x, y, w, h and their counts on a grey image."""
        h, w = gray.shape
        side = max(8, int(self.min_size_frac * min(h, w)))
        if self.backend == "cv2":
            rects, counts = self._cascade.detectMultiScale2(
                gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(side, side)
            )
            rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
            counts = np.asarray(counts, dtype=np.float64).reshape(-1)
        else:
            hits = self._cascade.detect_multi_scale(
                img=gray,
                scale_factor=self.scale_factor,
                step_ratio=1,
                min_size=(side, side),
                max_size=(min(h, w), min(h, w)),
                min_neighbor_number=self.min_neighbors,
            )
            rects = np.array([[d["c"], d["r"], d["width"], d["height"]] for d in hits], dtype=np.float64)
            rects = rects.reshape(-1, 4)
            counts = np.ones(len(rects))
        return _merge_nested(rects, counts)

    def detect(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Detect frontal faces.

        Args:
            frames: (N, H, W, 3) uint8 RGB.
        Returns:
            N float64 arrays (k, 5): x1, y1, x2, y2 in full-frame pixels (S3FD-like, see the
            class docstring), score >= 1.
        """
        results = []
        for frame in _as_frame_list(frames):
            small, sx, sy = _downscale(frame, self.max_size)
            gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
            rects, scores = self._rects(gray)
            x, y, w, h = rects.T
            top, bottom = self._MAPPING[self.backend]
            dets = np.stack([x, y + top * h, x + w, y + bottom * h, scores], axis=1)
            results.append(_to_frame_coords(dets, sx, sy, frame.shape))
        return results


def _landmark_rows_to_frame(dets: np.ndarray, sx: float, sy: float, shape: tuple[int, ...]) -> np.ndarray:
    """Scale (k, 5 + 2m) detections with keypoints from a downscaled image back to the frame.

    Boxes are clipped to the frame (empty ones dropped); keypoints are scaled but not clipped.
    Rows are sorted by descending score.
    """
    dets = np.array(dets, dtype=np.float64, copy=True)
    xs = [0, 2] + list(range(5, dets.shape[1], 2))
    ys = [1, 3] + list(range(6, dets.shape[1], 2))
    dets[:, xs] *= sx
    dets[:, ys] *= sy
    dets[:, [0, 2]] = np.clip(dets[:, [0, 2]], 0, shape[1])
    dets[:, [1, 3]] = np.clip(dets[:, [1, 3]], 0, shape[0])
    dets = dets[(dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1])]
    return dets[np.argsort(-dets[:, 4], kind="stable")]



KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")
"""Names of the keypoints that follow x1, y1, x2, y2, score in a detection row of a detector with
landmarks: keypoint j is at columns (5 + 2j, 6 + 2j), in full-frame pixels (not clipped to the frame)."""
MOUTH = KEYPOINT_NAMES.index("mouth")


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence what native code writes to file descriptor 2 (TFLite's and absl's start-up lines)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class MediaPipeDetector:
    """MediaPipe's BlazeFace face detectors with six landmarks; the models ship inside the
    ``mediapipe`` wheel (0.10.14), so nothing is downloaded at run time.

    Per frame:

    1. Both BlazeFace models look at the whole frame (downscaled to ``max_size``): the full-range
       one (faces from about 5 % of the frame width up; crowds, faces far away) and the short-range
       one (large faces; the full-range model misses some faces that fill half the frame). A
       short-range face is a separate candidate only where no full-range face lies on its centre.
       The short-range model alone misplaces small faces, which is why both run.
    2. Each candidate is refined: the short-range model runs again on a square crop of the
       full-resolution frame, 2.5 x the face's side, centred on it (the scale that model is made
       for). Its face whose centre lies inside the candidate's box replaces the candidate. So every
       face gets the short-range model's framing and keypoints, whatever its size.
    3. Refined faces that overlap (IoU > 0.5) are one face; the higher score is kept.

    A candidate that cannot be refined keeps its own box; full-range boxes are then mapped to the
    short-range framing by the median offsets measured on 12 shared clips (x1 + 0.049, y1 + 0.087,
    x2 - 0.024, y2 + 0.018 of the box width). BlazeFace boxes span the forehead to just below the
    chin, like S3FD's.

    Each detection row is (x1, y1, x2, y2, score, then x, y of each of :data:`KEYPOINT_NAMES`):
    eyes, nose tip, mouth centre and ear tragions, in full-frame pixels; keypoints of a face that
    leaves the frame lie outside it (the box is clipped, the keypoints are not).

    Args:
        threshold: minimum BlazeFace score in [0, 1] of a kept face.
        max_size: frames are downscaled (INTER_AREA) so that their longer side is <= max_size for
            step 1 (the models work on 128 and 192 px inputs anyway).
        refine: run step 2 (False: about half the time, boxes jitter a little more).

    Raises:
        WeightsUnavailableError: the mediapipe package (with its bundled models) is not installed.
    """

    name = "mediapipe"
    _FULL_TO_SHORT = np.array([0.049, 0.087, -0.024, 0.018])  # x1, y1, x2, y2 offsets / box width
    _CROP = 2.5  # refinement crop side / face side
    _CROP_PIXELS = 256  # refinement crops are resized to at most this side

    def __init__(self, threshold: float = 0.5, max_size: int = 640, refine: bool = True) -> None:
        if not 0 < threshold < 1 or max_size < 32:
            raise ValueError(f"need 0 < threshold < 1 and max_size >= 32 (got {threshold}, {max_size})")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # protobuf/matplotlib deprecation notices on import
                from mediapipe.python.solutions import face_detection
        except ImportError as exc:
            raise WeightsUnavailableError(
                f"the 'mediapipe' face detector needs the mediapipe package ({exc}); "
                "run 'pip install mediapipe==0.10.14', or choose the 'opencv' detector"
            ) from exc
        self.threshold = threshold
        self.max_size = max_size
        self.refine = refine
        self._lock = threading.Lock()  # a MediaPipe graph handles one image at a time
        self._graphs = {}
        with _quiet_native_stderr():
            for model, selection in (("short", 0), ("full", 1)):
                graph = face_detection.FaceDetection(model_selection=selection, min_detection_confidence=threshold)
                graph.process(np.zeros((64, 64, 3), np.uint8))  # the first run prints TFLite's start-up lines
                self._graphs[model] = graph

    def _run(self, model: str, image: np.ndarray) -> np.ndarray:
        """(k, 17) detections of one model on one (h, w, 3) RGB image, in that image's pixels."""
        h, w = image.shape[:2]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # protobuf's GetPrototype deprecation notice
            result = self._graphs[model].process(np.ascontiguousarray(image))
        width = 5 + 2 * len(KEYPOINT_NAMES)
        rows = []
        for face in result.detections or []:
            data = face.location_data
            box = data.relative_bounding_box
            x1, y1 = box.xmin * w, box.ymin * h
            row = [x1, y1, x1 + box.width * w, y1 + box.height * h, float(face.score[0])]
            for point in list(data.relative_keypoints)[: len(KEYPOINT_NAMES)]:
                row += [point.x * w, point.y * h]
            rows.append(row + [np.nan] * (width - len(row)))
        return np.array(rows, dtype=np.float64).reshape(-1, width)

    def _refine_one(self, frame: np.ndarray, cand: np.ndarray) -> np.ndarray | None:
        """The short-range model's face on a crop around ``cand`` (frame pixels), or None."""
        h, w = frame.shape[:2]
        side = self._CROP * np.sqrt(max((cand[2] - cand[0]) * (cand[3] - cand[1]), 1.0))
        cx, cy = (cand[0] + cand[2]) / 2, (cand[1] + cand[3]) / 2
        x0, y0, s = int(round(cx - side / 2)), int(round(cy - side / 2)), max(int(round(side)), 8)
        crop = np.zeros((s, s, 3), np.uint8)  # outside the frame: black, the face stays centred
        fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
        if fx1 <= fx0 or fy1 <= fy0:
            return None
        crop[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] = frame[fy0:fy1, fx0:fx1]
        scale = 1.0
        if s > self._CROP_PIXELS:
            scale = s / self._CROP_PIXELS
            crop = cv2.resize(crop, (self._CROP_PIXELS, self._CROP_PIXELS), interpolation=cv2.INTER_AREA)
        dets = self._run("short", crop)
        if not len(dets):
            return None
        dets[:, [0, 2, *range(5, dets.shape[1], 2)]] = dets[:, [0, 2, *range(5, dets.shape[1], 2)]] * scale + x0
        dets[:, [1, 3, *range(6, dets.shape[1], 2)]] = dets[:, [1, 3, *range(6, dets.shape[1], 2)]] * scale + y0
        centres = _centre(dets[:, :4])
        inside = ((centres[:, 0] > cand[0]) & (centres[:, 0] < cand[2])
                  & (centres[:, 1] > cand[1]) & (centres[:, 1] < cand[3]))
        if not inside.any():
            return None
        dist = np.linalg.norm(centres - [cx, cy], axis=1)
        return dets[int(np.argmin(np.where(inside, dist, np.inf)))]

    def _detect_one(self, frame: np.ndarray) -> np.ndarray:
        """(k, 17) detections of one full-resolution frame, in its pixels, unclipped and unsorted."""
        small, sx, sy = _downscale(frame, self.max_size)
        scale = np.ones(5 + 2 * len(KEYPOINT_NAMES))
        scale[[0, 2, *range(5, len(scale), 2)]] = sx
        scale[[1, 3, *range(6, len(scale), 2)]] = sy
        full = self._run("full", small) * scale
        short = self._run("short", small) * scale
        if len(full):  # full-range framing -> short-range framing, for faces that cannot be refined
            full[:, :4] += self._FULL_TO_SHORT * (full[:, 2] - full[:, 0])[:, None]
        if len(full) and len(short):  # a short-range face with a full-range face on its centre is that face
            centres = _centre(short[:, :4])
            covered = np.array([((full[:, 0] < x) & (x < full[:, 2]) & (full[:, 1] < y) & (y < full[:, 3])).any()
                                for x, y in centres])
            short = short[~covered]
        cands = np.concatenate([full, short])
        if self.refine:
            refined = [self._refine_one(frame, c) for c in cands]
            cands = np.array([c if r is None else r for c, r in zip(cands, refined)]).reshape(cands.shape)
        keep: list[int] = []
        for i in np.argsort(-cands[:, 4], kind="stable"):  # one box per face
            if not keep or _iou(cands[i, :4], cands[keep, :4]).max() <= 0.5:
                keep.append(int(i))
        return cands[keep]

    def detect(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Detect faces and their six keypoints.

        Args:
            frames: (N, H, W, 3) uint8 RGB.
        Returns:
            N float64 arrays (k, 17): x1, y1, x2, y2 (full-frame pixels, clipped to the frame),
            score in [0, 1], then x, y of each of :data:`KEYPOINT_NAMES` (full-frame pixels, may
            lie outside the frame); rows sorted by descending score.
        """
        results = []
        for frame in _as_frame_list(frames):
            with self._lock:
                dets = self._detect_one(frame)
            results.append(_landmark_rows_to_frame(dets, 1.0, 1.0, frame.shape))
        return results


DETECTORS: dict[str, type] = {"s3fd": S3FDDetector, "opencv": OpenCVDetector, "mediapipe": MediaPipeDetector}


_fallback_announced = False


def get_detector(name: str = "s3fd", device: str = "cpu", fallback: bool = True, **kwargs) -> FaceDetector:
    """Build a detector by name.

    When "s3fd" is asked for without a local weights file and its weights can be neither found in the
    torch hub cache nor downloaded now, the "mediapipe" detector is returned instead (if the mediapipe
    package is installed), with one warning on the ``lipsync.faces`` logger the first time.

    Args:
        name: a key of :data:`DETECTORS` ("s3fd": accurate, downloads weights once;
            "mediapipe": BlazeFace with six keypoints, models bundled in the mediapipe wheel, no
            download; "opencv": download-free cascade, frontal faces only).
        device: torch device for "s3fd"; ignored by the others.
        fallback: False raises S3FD's WeightsUnavailableError instead of falling back.
        **kwargs: passed to the detector's constructor.
    Raises:
        WeightsUnavailableError: the detector cannot be built (and no fallback applies).
    """
    global _fallback_announced
    key = name.strip().lower()
    if key not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")
    if key != "s3fd":
        return DETECTORS[key](**kwargs)
    try:
        return S3FDDetector(device=device, **kwargs)
    except WeightsUnavailableError as exc:
        if not fallback or kwargs.get("path_to_detector") is not None:
            raise
        try:
            detector = MediaPipeDetector()
        except WeightsUnavailableError:
            raise exc from None
        if not _fallback_announced:
            _fallback_announced = True
            reason = str(exc).split(";")[0]
            logging.getLogger(__name__).warning(
                "%s; using the 'mediapipe' face detector instead (bundled, no download)", reason
            )
        return detector


# --------------------------------------------------------------------------------------
# Tracking one face, filling gaps, smoothing
# --------------------------------------------------------------------------------------


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    return inter / np.maximum(_area(box) + _area(boxes) - inter, 1e-9)


def _side(boxes: np.ndarray) -> np.ndarray:
    """Geometric-mean side sqrt(w * h) of (..., 4) boxes: the face's scale."""
    return np.sqrt(np.maximum(_area(boxes), 1e-9))


def _centre(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., :2] + boxes[..., 2:4]) / 2


@dataclass
class _Track:
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
        return float(_side(np.array(self.boxes)).sum())


def _matches(pred: np.ndarray, cand: np.ndarray, gap: int, max_jump: float, max_scale: float) -> np.ndarray:
    """Cost of explaining each candidate box (k, 4) by a track predicted at ``pred`` after ``gap``
    frames; inf where the centre moved more than ``max_jump`` x the face side (x sqrt(gap)) or the
    side changed by more than a factor ``max_scale`` (** sqrt(gap))."""
    side = _side(pred)
    slack = np.sqrt(max(gap, 1))
    dist = np.linalg.norm(_centre(cand) - _centre(pred), axis=-1) / side
    log_scale = np.abs(np.log(_side(cand) / side))
    ok = (dist <= max_jump * slack) & (log_scale <= np.log(max_scale) * slack)
    return np.where(ok, dist + log_scale - _iou(pred, cand), np.inf)


def _track_faces(
    detections: Sequence[np.ndarray], max_jump: float, max_scale: float, keep_alive: int
) -> list[_Track]:
    """Link per-frame detections into tracks by centre and scale continuity (greedy, lowest cost
    first); a track survives ``keep_alive`` frames without a match."""
    tracks: list[_Track] = []
    active: list[_Track] = []
    for i, dets in enumerate(detections):
        rows = np.asarray(dets, dtype=np.float64).reshape(len(dets), -1) if len(dets) else np.empty((0, 5))
        cand = rows[:, :4]
        ok_rows = np.flatnonzero(np.isfinite(cand).all(axis=1) & (_area(cand) > 0))
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
                track = _Track([i], [cand[j]], [int(j)])
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
    tracks = sorted(_track_faces(detections, max_jump, max_scale, reacquire_after), key=lambda t: -t.score)
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
            if rank > 0 and short_lived and not _continues_chosen(track, part, chosen, detections, max_jump, max_scale):
                continue  # short-lived and unrelated to the main face: a false box or a passer-by
            first, last = frames[part[0]], frames[part[-1]]
            claimed[first : last + 1] = True
            chosen[frames[part]] = np.array(track.rows)[part]
    return chosen


def _continues_chosen(
    track: _Track, part: np.ndarray, chosen: np.ndarray, detections, max_jump: float, max_scale: float
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


def boxes_from_detections(
    detections: Sequence[np.ndarray], frame_shape: tuple, config: FaceConfig | None = None, source: str = "the video"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Track, check the mouth, fill, pad and smooth per-frame detections (gathered chunk by chunk,
    so frames need not be kept).

    Where the detector gives keypoints, faces whose mouth is not inside the frame
    (:func:`mouth_in_frame`) are set aside first; the main face comes from :func:`main_face_rows` on
    the rest. Frames where only such faces were found are refused: they are not lip-synced, and gaps
    that contain them are not interpolated.

    Args:
        detections: one (k, 5) or (k, 5 + 2m) array per frame, as :meth:`FaceDetector.detect` returns.
        frame_shape: (N, H, W, 3) or (H, W, 3) of the frames, for clipping padded boxes.
    Returns:
        boxes (N, 4) int64, valid (N,) bool (frames to lip-sync), found (N,) bool (the main face was
        detected there; valid & ~found are interpolated frames), refused (N,) bool (no main face there,
        but a face whose mouth is out of the picture was detected: a close-up or a face leaving the frame).
    Raises:
        NoFaceError: no frame has a usable face.
    """
    config = config or FaceConfig()
    n = len(detections)
    usable, mouth_out = [], np.zeros(n, dtype=bool)
    for i, dets in enumerate(detections):
        dets = np.asarray(dets, dtype=np.float64)
        dets = dets.reshape(len(dets), -1) if dets.size else np.empty((0, 5))
        keep = mouth_in_frame(dets, tuple(frame_shape))
        usable.append(dets[keep])
        mouth_out[i] = not keep.all()
    rows = main_face_rows(usable)  # faces without a visible mouth never compete for the main face
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
    boxes, valid = fill_missing(boxes, found, max_gap=config.max_gap, source=source)
    for start, stop in _runs(~found):  # never bridge a gap across refused frames
        if refused[start:stop].any():
            valid[start:stop] = False
    boxes = pad_boxes(boxes, config.pads, tuple(frame_shape))
    boxes = smooth_boxes(boxes, config.smooth_window, valid=valid, official=True)
    bad = valid & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    return boxes, valid & ~bad, found, refused


# --------------------------------------------------------------------------------------
# Crop and paste back
# --------------------------------------------------------------------------------------


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
