"""In-sync and off-sync pairs for training a lip-sync expert, from a dataset made by ``python -m lipsync.prepare``.

Wav2Lip's recipe: a pair is the lower halves of 5 consecutive face crops and one 0.2 s mel segment (16 columns).
Positive: the segment those 5 frames start (``sync_column``). Negative: the segment of a window of the same clip
at least ``min_offset`` frames away (the same voice and room, only the timing is wrong), or of another clip.
Most negatives come from the same clip: with other clips' audio a network can tell pairs apart by who speaks
(voice against face) instead of by timing, which does not carry over to new people. Clips are never split: a
dataset's "val" split (or another dataset) holds the validation clips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from lipsync.scoring.syncnet_color import SYNC_COLUMNS, SYNC_FRAMES, faces_to_expert_input, sync_column
from lipsync.training.data import DatasetError, open_clip, read_dataset_manifest, sample_starts

MIN_OFFSET = 5  # frames: a same-clip negative is at least this far from the in-sync segment


class SyncPairs(torch.utils.data.Dataset):
    """Pairs of (5 lower halves, 0.2 s mel) labelled 1 (in sync) or 0 (off sync).

    Args:
        root: dataset folder made by ``python -m lipsync.prepare``.
        split: "train" or "val".
        seed: with the index and :meth:`set_epoch`, fixes the label and the negative of every pair.
        augment: random horizontal flips and brightness/contrast changes of the faces (training only).
        same_clip_negatives: fraction of negatives taken from the same clip (the rest from other clips).

    ``pairs[i]`` is deterministic for a given (seed, epoch, i); window i is in sync when i + epoch is even, so
    labels are balanced and every window is seen in and off sync over two epochs::

        faces  (15, 48, 96) float32 in [0, 1]   lower halves of frames start..start+4, BGR, stacked on channels
        mel    (1, 80, 16) float32              the segment (in sync, or from elsewhere)
        label  float32                          1.0 in sync, 0.0 off sync
        clip, start, audio_clip, audio_start    where the faces and the segment come from
    """

    def __init__(self, root, split: str = "train", seed: int = 0, augment: bool = False,
                 same_clip_negatives: float = 0.9):
        self.root = Path(root)
        self.split = split
        self.seed = int(seed)
        self.epoch = 0
        self.augment = bool(augment)
        self.same_clip_negatives = float(same_clip_negatives)
        self.records = read_dataset_manifest(self.root)["clips"]
        self.starts: Dict[int, np.ndarray] = {}
        for c, record in enumerate(self.records):
            if record.get("split", "train") == split:
                starts = sample_starts(record, SYNC_FRAMES)
                if len(starts):
                    self.starts[c] = starts
        self.index = np.array([(c, int(s)) for c, starts in self.starts.items() for s in starts], np.int64)
        if not len(self.index):
            raise DatasetError(f"no clips with {SYNC_FRAMES} consecutive face frames in split {split!r} of "
                               f"{self.root}; prepare clips into it with python -m lipsync.prepare")
        self._clips: Dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Other labels, negatives and augmentations in another epoch (the windows stay the same)."""
        self.epoch = int(epoch)

    def clip_ids(self) -> List[str]:
        """Ids of the clips in this split."""
        return [self.records[c]["id"] for c in self.starts]

    def _arrays(self, clip: int):
        if clip not in self._clips:
            self._clips[clip] = open_clip(self.root, self.records[clip])
        return self._clips[clip]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_clips"] = {}  # memory maps are reopened in each DataLoader worker
        return state

    def _negative(self, rng: np.random.Generator, clip: int, start: int):
        """(clip, start) of an off-sync segment for the window (clip, start)."""
        same = self.starts[clip][np.abs(self.starts[clip] - start) >= MIN_OFFSET]
        others = [c for c in self.starts if c != clip]
        if len(same) and (not others or rng.random() < self.same_clip_negatives):
            return clip, int(same[rng.integers(len(same))])
        if not others:
            raise DatasetError(f"clip {self.records[clip]['id']} is too short for an off-sync pair and it is the "
                               "only clip of its split; add clips")
        other = others[rng.integers(len(others))]
        return other, int(self.starts[other][rng.integers(len(self.starts[other]))])

    def segment(self, clip: int, start: int) -> np.ndarray:
        """(1, 80, 16) float32: the mel segment that a window starting at frame ``start`` of ``clip`` starts."""
        arrays = self._arrays(clip)
        c = sync_column(start, arrays.fps)
        return np.ascontiguousarray(np.asarray(arrays.mel[:, c:c + SYNC_COLUMNS], np.float32)[None])

    def faces(self, clip: int, start: int) -> np.ndarray:
        """(5, 128, 128, 3) uint8 RGB crops of frames start..start+4."""
        return np.asarray(self._arrays(clip).faces[start:start + SYNC_FRAMES])

    def __getitem__(self, i: int) -> dict:
        i = int(i) % len(self)
        clip, start = (int(v) for v in self.index[i])
        rng = np.random.default_rng([self.seed, self.epoch, i])
        positive = (i + self.epoch) % 2 == 0
        audio_clip, audio_start = (clip, start) if positive else self._negative(rng, clip, start)
        faces = self.faces(clip, start)
        if self.augment:
            faces = faces.astype(np.float32)
            if rng.random() < 0.5:
                faces = faces[:, :, ::-1]
            faces = faces * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)
            faces = np.clip(faces, 0, 255).round().astype(np.uint8)
        return {
            "faces": faces_to_expert_input(faces[None])[0],
            "mel": torch.from_numpy(self.segment(audio_clip, audio_start)),
            "label": torch.tensor(1.0 if positive else 0.0),
            "clip": clip, "start": start, "audio_clip": audio_clip, "audio_start": audio_start,
        }
