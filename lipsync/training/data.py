"""Training samples from a dataset folder made by ``python -m lipsync.prepare`` (format: lipsync/prepare.py).

A sample follows the paper: 5 consecutive frames of one clip, their 5 inference mel windows, the 0.2 s of
audio (and its mel) those frames start, for SyncNet, and one reference frame of the same clip from outside
the 5-frame window. Shard members are memory-mapped (uncompressed ``.npy`` inside the tar), so a dataset of
any size opens instantly and DataLoader workers share the page cache.
"""

from __future__ import annotations

import json
import os
import tarfile
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import torch

from lipsync.errors import LipSyncError
from lipsync.media import audio as audio_io
from lipsync.scoring.syncnet_color import sync_column

__all__ = ["DatasetError", "Diff2LipDataset", "ClipArrays", "open_clip", "load_validation_clips", "sample_starts"]

SYNC_COLUMNS = audio_io.DEFAULT_AUDIO.mel_step_size  # 16 mel columns = 0.2 s (Wav2Lip SyncNet input)
SYNC_SAMPLES = SYNC_COLUMNS * audio_io.DEFAULT_AUDIO.hop_size  # 3200 samples at 16 kHz


class DatasetError(LipSyncError):
    """A dataset folder is missing, empty or corrupt."""


PREPARE_HINT = "run python -m lipsync.prepare --videos VIDEOS --output {root} first"


# ----------------------------------------------------------------------------------------------------------
# Reading shards


def _npy_view(path: Path, offset: int) -> np.ndarray:
    """Memory-map the .npy stored at byte ``offset`` of ``path`` (read-only)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        data_offset = handle.tell()
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=data_offset, shape=shape, order="F" if fortran else "C")


class ClipArrays:
    """The arrays of one prepared clip, memory-mapped from its shard.

    Attributes:
        faces (N, 128, 128, 3) uint8 RGB (a :class:`lipsync.training.jpeg_faces.JpegFaces` that decodes on access
        for shards prepared with ``--faces jpeg``); boxes (N, 4) int64; valid, found (N,) bool; audio (S,) float32 16 kHz;
        mel (80, T) float32; record: the clip's manifest entry; fps: Fraction.
    """

    def __init__(self, shard: Path, record: dict):
        self.shard = Path(shard)
        self.record = record
        self.fps = Fraction(record["fps"])
        key = record["key"]
        try:
            with tarfile.open(self.shard, "r:") as tar:
                members = {m.name: m for m in tar.getmembers()}
        except (OSError, tarfile.TarError) as exc:
            raise DatasetError(f"the shard {self.shard} cannot be read ({exc}); delete it and its clip from "
                               "manifest.json, or run python -m lipsync.prepare again into a new folder") from exc
        arrays = {}
        jpeg = record.get("faces_format") == "jpeg"  # python -m lipsync.prepare --faces jpeg
        names = ("faces_jpeg", "faces_jpeg_offsets") if jpeg else ("faces",)
        for name in (*names, "boxes", "valid", "found", "audio", "mel"):
            member = members.get(f"{key}.{name}.npy")
            if member is None:
                raise DatasetError(f"the shard {self.shard} has no {key}.{name}.npy; it is not a complete "
                                   "lipsync.prepare shard; run python -m lipsync.prepare again into a new folder")
            arrays[name] = _npy_view(self.shard, member.offset_data)
        if jpeg:
            from lipsync.training.jpeg_faces import JpegFaces

            arrays["faces"] = JpegFaces(arrays["faces_jpeg"], arrays["faces_jpeg_offsets"])
        self.faces, self.boxes = arrays["faces"], arrays["boxes"]
        self.valid, self.found = arrays["valid"], arrays["found"]
        self.audio, self.mel = arrays["audio"], arrays["mel"]

    @property
    def num_frames(self) -> int:
        """N, the clip's frame count."""
        return len(self.faces)


def open_clip(root: str | Path, record: dict) -> ClipArrays:
    """Memory-map the clip of manifest entry ``record`` of the dataset at ``root``."""
    return ClipArrays(Path(root) / record["shard"], record)


def read_dataset_manifest(root: str | Path) -> dict:
    """``root/manifest.json`` of a prepared dataset, checked; raises DatasetError with the remedy."""
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
        raise DatasetError(f"{root} is not a prepared dataset (no manifest.json); "
                           + PREPARE_HINT.format(root=root))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is corrupt ({exc}); " + PREPARE_HINT.format(root=root)) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != "diff2lip-dataset" \
            or not isinstance(manifest.get("clips"), list):
        raise DatasetError(f"{path} is not a Diff2Lip dataset manifest; " + PREPARE_HINT.format(root=root))
    for clip in manifest["clips"]:
        missing = [k for k in ("id", "shard", "key", "frames", "fps", "valid_runs", "mel_columns") if k not in clip]
        if missing:
            raise DatasetError(f"{path} is corrupt: clip {clip.get('id', '?')} lacks {', '.join(missing)}; "
                               + PREPARE_HINT.format(root=root))
    return manifest


# ----------------------------------------------------------------------------------------------------------
# Windows


def usable_frames(record: dict) -> np.ndarray:
    """(N,) bool: frames that may belong to a training window.

    A frame is usable when the engine would lip-sync it (a face, found or interpolated) and its inference mel
    window lies fully inside the audio (no clamping at the end: ``audio.num_windows``).
    """
    n = int(record["frames"])
    valid = _valid_mask(record)
    fps = Fraction(record["fps"])
    valid[min(n, audio_io.num_windows(int(record["mel_columns"]), fps)):] = False
    return valid


def sample_starts(record: dict, num_frames: int = 5) -> np.ndarray:
    """First frames of every window of ``num_frames`` consecutive usable frames whose SyncNet segment
    (16 mel columns from the first frame's time) fits in the audio, and whose clip has a usable reference
    frame outside the window. (W,) int64."""
    usable = usable_frames(record)
    n = len(usable)
    if n < num_frames:
        return np.zeros(0, np.int64)
    counts = np.convolve(usable.astype(np.int64), np.ones(num_frames, np.int64), mode="valid")  # (n - k + 1,)
    starts = np.flatnonzero(counts == num_frames)
    valid_total = _valid_mask(record).sum()
    if valid_total <= num_frames:  # no reference outside the window
        return np.zeros(0, np.int64)
    fps = Fraction(record["fps"])
    columns = int(record["mel_columns"])
    sync_ok = np.array([sync_column(int(s), fps) + SYNC_COLUMNS <= columns for s in starts], bool)
    return starts[sync_ok].astype(np.int64) if len(starts) else starts.astype(np.int64)


def _valid_mask(record: dict) -> np.ndarray:
    valid = np.zeros(int(record["frames"]), bool)
    for a, b in record["valid_runs"]:
        valid[a:b] = True
    return valid


# ----------------------------------------------------------------------------------------------------------
# The dataset


class Diff2LipDataset(torch.utils.data.Dataset):
    """Windows of ``num_frames`` consecutive face frames of the clips of one split.

    Args:
        root: dataset folder made by ``python -m lipsync.prepare``.
        split: "train" or "val" (clips are split by clip, never by frame).
        num_frames: consecutive frames per sample (the paper: 5).
        image_size: side S of the returned faces; crops are resized from 128 with cv2.INTER_AREA when S != 128.
        seed: with the index (and :meth:`set_epoch`), fixes the reference frame choice.
        reference_min_distance: the reference is at least this many frames from the window (0 or 1: anywhere
            outside it, the paper's rule); a window of a clip with no valid frame that far takes one of the
            farthest valid frames instead (:meth:`reference_index`).

    ``dataset[i]`` is deterministic for a given (seed, epoch, i)::

        faces     (num_frames, 3, S, S) float32 in [-1, 1]   consecutive frames start .. start + num_frames - 1
        reference (3, S, S) float32 in [-1, 1]               a valid frame of the clip outside that window
                                                             (>= reference_min_distance frames from it)
        mels      (num_frames, 80, 16) float32 in [-4, 4]    lipsync.media.audio.mel_windows(mel, fps)[start + j]
        sync_mel  (1, 80, 16) float32 in [-4, 4]             mel columns [c, c + 16), c = floor(80 * start / fps)
        audio     (3200,) float32                            samples [200 c, 200 c + 3200), zero-padded at the end
        clip, start: int                                     manifest index of the clip, first frame
    """

    def __init__(self, root, split: str = "train", num_frames: int = 5, image_size: int = 128, seed: int = 0,
                 reference_min_distance: int = 0):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if num_frames < 1 or image_size < 8:
            raise ValueError(f"num_frames must be >= 1 and image_size >= 8, got {num_frames}, {image_size}")
        if int(reference_min_distance) < 0:
            raise ValueError(f"reference_min_distance must be >= 0, got {reference_min_distance}")
        self.reference_min_distance = int(reference_min_distance)
        self.root = Path(root)
        self.split = split
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.epoch = 0
        self.manifest = read_dataset_manifest(self.root)
        self.records = self.manifest["clips"]
        index: List[Tuple[int, int]] = []
        self._valid_frames: Dict[int, np.ndarray] = {}
        for c, record in enumerate(self.records):
            if record.get("split", "train") != split:
                continue
            starts = sample_starts(record, self.num_frames)
            if len(starts):
                index.extend((c, int(s)) for s in starts)
                self._valid_frames[c] = np.flatnonzero(_valid_mask(record))
        if not index:
            raise DatasetError(
                f"no clips with {self.num_frames} consecutive face frames in split {split!r} of {self.root}; run "
                f"python -m lipsync.prepare --videos VIDEOS --output {self.root} (with --val-fraction or --val-clips "
                "for a validation split) / check the videos")
        self._index = np.asarray(index, dtype=np.int64)  # (W, 2): clip, start
        self._clips: Dict[int, ClipArrays] = {}
        self._starts: Dict[int, np.ndarray] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        """Number of windows of ``num_frames`` consecutive usable frames in the split."""
        return len(self._index)

    def set_epoch(self, epoch: int) -> None:
        """Draw other reference frames in another epoch (the windows stay the same)."""
        self.epoch = int(epoch)

    def clip_arrays(self, clip: int) -> ClipArrays:
        """Memory-mapped arrays of manifest clip ``clip`` (opened once per process)."""
        if os.getpid() != self._pid:  # a DataLoader worker: open its own maps
            self._clips, self._pid = {}, os.getpid()
        if clip not in self._clips:
            arrays = open_clip(self.root, self.records[clip])
            if arrays.num_frames != int(self.records[clip]["frames"]):
                raise DatasetError(f"{arrays.shard} holds {arrays.num_frames} frames but manifest.json says "
                                   f"{self.records[clip]['frames']}; the dataset is corrupt, prepare it again")
            self._clips[clip] = arrays
        return self._clips[clip]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_clips"] = {}  # memory maps are reopened in each worker
        return state

    def window(self, i: int) -> Tuple[int, int]:
        """(clip, start) of sample ``i``."""
        clip, start = self._index[i]
        return int(clip), int(start)

    def reference_index(self, i: int) -> int:
        """The frame used as the reference of sample ``i``: a valid frame outside its window, at least
        ``reference_min_distance`` frames from it (distance 1: the frame next to the window), drawn from
        ``(seed, epoch, i)``. When the clip has no valid frame that far, one of its farthest valid frames."""
        clip, start = self.window(i)
        frames = self._valid_frames[clip]
        distance = np.maximum(start - frames, frames - (start + self.num_frames - 1))  # (V,) <= 0 inside the window
        outside = frames[distance >= max(1, self.reference_min_distance)]
        if len(outside) == 0:  # a short clip: the farthest frames (sample_starts guarantees one outside the window)
            outside = frames[distance == distance.max()]
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        return int(outside[rng.integers(len(outside))])

    def _to_tensor(self, faces: np.ndarray) -> torch.Tensor:
        """(n, 128, 128, 3) uint8 -> (n, 3, S, S) float32 in [-1, 1] (the pipeline's u8 / 255 * 2 - 1)."""
        faces = np.asarray(faces)
        if self.image_size != faces.shape[1]:
            size = (self.image_size, self.image_size)
            faces = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in faces])
        tensor = torch.from_numpy(np.array(faces, dtype=np.uint8)).permute(0, 3, 1, 2).float()  # a copy: maps are read-only
        return tensor / 255.0 * 2 - 1

    def _mel_starts(self, clip: int, arrays: ClipArrays) -> np.ndarray:
        """(N,) first mel column of every frame's inference window (lipsync.media.audio.window_starts), cached."""
        if clip not in self._starts:
            self._starts[clip] = audio_io.window_starts(arrays.num_frames, arrays.fps, mel_columns=arrays.mel.shape[1])
        return self._starts[clip]

    def __getitem__(self, i: int) -> dict:
        """Sample ``i`` (see the class docstring for its keys, shapes and ranges)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} of {len(self)}")
        i = int(i) % len(self)
        clip, start = self.window(i)
        arrays = self.clip_arrays(clip)
        k = self.num_frames
        ref = self.reference_index(i)
        faces = self._to_tensor(arrays.faces[start:start + k])  # (k, 3, S, S)
        reference = self._to_tensor(arrays.faces[ref:ref + 1])[0]  # (3, S, S)
        starts = self._mel_starts(clip, arrays)[start:start + k]  # (k,) first mel column of each frame's window
        cols = starts[:, None] + np.arange(SYNC_COLUMNS)[None, :]
        mels = np.ascontiguousarray(np.asarray(arrays.mel)[:, cols].transpose(1, 0, 2), np.float32)  # (k, 80, 16)
        c = sync_column(start, arrays.fps)
        sync_mel = np.asarray(arrays.mel[:, c:c + SYNC_COLUMNS], np.float32)[None]  # (1, 80, 16)
        a = c * audio_io.DEFAULT_AUDIO.hop_size
        audio = np.zeros(SYNC_SAMPLES, np.float32)
        piece = np.asarray(arrays.audio[a:a + SYNC_SAMPLES], np.float32)
        audio[:len(piece)] = piece
        return {
            "faces": faces,
            "reference": reference,
            "mels": torch.from_numpy(mels),
            "sync_mel": torch.from_numpy(np.ascontiguousarray(sync_mel)),
            "audio": torch.from_numpy(audio),
            "clip": clip,
            "start": start,
        }


# ----------------------------------------------------------------------------------------------------------
# Validation clips for the trainer's grid


def load_validation_clips(root, split: str = "val", max_clips: int = 4, frames_per_clip: int = 1,
                          image_size: int = 128, seed: int = 0) -> List[dict]:
    """A few fixed validation samples for a source | generated grid.

    Takes up to ``max_clips`` clips of ``split`` and ``frames_per_clip`` evenly spaced windows of each; returns
    the corresponding ``Diff2LipDataset`` samples (same keys, plus "id": the clip id). Deterministic.
    """
    dataset = Diff2LipDataset(root, split=split, image_size=image_size, seed=seed)
    clips = list(dict.fromkeys(int(c) for c in dataset._index[:, 0]))[:max_clips]
    samples = []
    for clip in clips:
        rows = np.flatnonzero(dataset._index[:, 0] == clip)
        picks = rows[np.linspace(0, len(rows) - 1, num=min(frames_per_clip, len(rows))).round().astype(int)]
        for row in picks:
            sample = dataset[int(row)]
            sample["id"] = dataset.records[clip]["id"]
            samples.append(sample)
    return samples
