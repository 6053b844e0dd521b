"""Face detectors: each takes a batch of frames (N, H, W, 3) uint8 RGB and returns one (k, 5) array per frame
(x1, y1, x2, y2 in full-frame pixels, score; the "mediapipe" detector adds 6 keypoints, :data:`KEYPOINT_NAMES`).

    s3fd       S3FD from face-alignment (the paper's detector; weights downloaded on first use)
    mediapipe  BlazeFace, bundled with mediapipe (no download); the fallback when S3FD's weights cannot be had
    opencv     OpenCV's Haar cascade (no download, no torch)

Nothing heavy is imported or built at import time: face_alignment is imported when an :class:`S3FDDetector`
is constructed, mediapipe when a :class:`MediaPipeDetector` is.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import warnings
from typing import Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from lipsync.console import quiet_native_stderr
from lipsync.errors import CheckpointMismatchError, WeightsUnavailableError
from lipsync.media.boxes import box_centre, box_iou
from lipsync.media.keypoints import KEYPOINT_NAMES, MOUTH  # noqa: F401  (re-exported: rows' keypoint layout)


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


def _face_check(verify: bool):
    """A :class:`lipsync.media.face_check.FaceMeshCheck` when ``verify`` (None without mediapipe, or when not asked)."""
    if not verify:
        return None
    try:
        from lipsync.media.face_check import FaceMeshCheck

        return FaceMeshCheck()
    except ImportError:  # S3FD without mediapipe: no check (the mediapipe detector needs the package anyway)
        logging.getLogger(__name__).warning("mediapipe is not installed: detections are not checked by FaceMesh")
        return None


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
        verify: keep only boxes where MediaPipe FaceMesh finds a face (:mod:`lipsync.media.face_check`;
            logos and posters are turned away); skipped when mediapipe is not installed.

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
        verify: bool = True,
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

                from lipsync.hub import require_download

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
        self._check = _face_check(verify)

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
                rows = _to_frame_coords(np.asarray(dets, dtype=np.float64).reshape(-1, 5), sx, sy, frame.shape)
                results.append(rows if self._check is None else self._check.filter(frame, rows))
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
        "run 'pip install scikit-image' or 'pip install --force-reinstall --no-deps \"opencv-contrib-python<5\"', "
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
        verify: keep only faces where MediaPipe FaceMesh finds a face mesh that matches the box and the
            keypoints (:mod:`lipsync.media.face_check`): a logo or a poster gets no mouth.

    Raises:
        WeightsUnavailableError: the mediapipe package (with its bundled models) is not installed.
    """

    name = "mediapipe"
    _FULL_TO_SHORT = np.array([0.049, 0.087, -0.024, 0.018])  # x1, y1, x2, y2 offsets / box width
    _CROP = 2.5  # refinement crop side / face side
    _CROP_PIXELS = 256  # refinement crops are resized to at most this side

    def __init__(self, threshold: float = 0.5, max_size: int = 640, refine: bool = True, verify: bool = True) -> None:
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
        with quiet_native_stderr():
            for model, selection in (("short", 0), ("full", 1)):
                graph = face_detection.FaceDetection(model_selection=selection, min_detection_confidence=threshold)
                graph.process(np.zeros((64, 64, 3), np.uint8))  # the first run prints TFLite's start-up lines
                self._graphs[model] = graph
        self._check = _face_check(verify)

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
        centres = box_centre(dets[:, :4])
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
            centres = box_centre(short[:, :4])
            covered = np.array([((full[:, 0] < x) & (x < full[:, 2]) & (full[:, 1] < y) & (y < full[:, 3])).any()
                                for x, y in centres])
            short = short[~covered]
        cands = np.concatenate([full, short])
        if self.refine:
            refined = [self._refine_one(frame, c) for c in cands]
            cands = np.array([c if r is None else r for c, r in zip(cands, refined)]).reshape(cands.shape)
        keep: list[int] = []
        for i in np.argsort(-cands[:, 4], kind="stable"):  # one box per face
            if not keep or box_iou(cands[i, :4], cands[keep, :4]).max() <= 0.5:
                keep.append(int(i))
        return cands[keep]

    def detect(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Detect faces and their six keypoints.

        Args:
            frames: (N, H, W, 3) uint8 RGB.
        Returns:
            N float64 arrays (k, 17): x1, y1, x2, y2 (full-frame pixels, clipped to the frame),
            score in [0, 1], then x, y of each of :data:`KEYPOINT_NAMES` (full-frame pixels, may
            lie outside the frame); rows sorted by descending score. With ``verify``, rows that FaceMesh does not
            take for a face are left out (call it on consecutive frames: verdicts are reused along a track).
        """
        results = []
        for frame in _as_frame_list(frames):
            with self._lock:
                dets = _landmark_rows_to_frame(self._detect_one(frame), 1.0, 1.0, frame.shape)
            results.append(dets if self._check is None else self._check.filter(frame, dets))
        return results


DETECTORS: dict[str, type] = {"s3fd": S3FDDetector, "opencv": OpenCVDetector, "mediapipe": MediaPipeDetector}


_fallback_announced = False


def get_detector(name: str = "s3fd", device: str = "cpu", fallback: bool = True, **kwargs) -> FaceDetector:
    """Build a detector by name.

    When "s3fd" is asked for without a local weights file and its weights can be neither found in the
    torch hub cache nor downloaded now, the "mediapipe" detector is returned instead (if the mediapipe
    package is installed), with one warning on the ``lipsync.media.detectors`` logger the first time.

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
