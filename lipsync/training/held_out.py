"""Held-out frames of a prepared dataset with their right and their wrong mel windows: the input of the audio
dependence checks (:mod:`lipsync.scoring.audio_dependence`; ``python -m lipsync.evaluate --audio-dependence``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

WRONG_AUDIO = {  # the wrong sets of audio_dependence_frames
    "other_frames": "audio of other frames of the same clip",
    "other_clip": "audio of another clip",
    "silence": "silence",
}
MIN_FRAME_GAP = 10  # "other frames" are at least this many frames away (0.4 s at 25 fps)


@dataclass
class HeldOutFrames:
    """Held-out frames with their right and wrong mel windows (see :func:`audio_dependence_frames`).

    faces, references: uint8 (K, 128, 128, 3) crops and identity references; mels: float32 (K, 80, 16) in
    [-4, 4], each frame's own window; wrong: name -> (K, 80, 16) windows of :data:`WRONG_AUDIO` (a set that
    cannot be built, e.g. "other_clip" of a one-clip split, is absent and explained in ``notes``); clips: (K,)
    clip ids; frames: (K,) frame numbers in their clips; frame_gaps: (K,) distance in frames of each frame's
    "other_frames" window (>= :data:`MIN_FRAME_GAP` unless a note says otherwise).
    """

    faces: np.ndarray
    references: np.ndarray
    mels: np.ndarray
    wrong: dict
    clips: list
    frames: np.ndarray
    frame_gaps: np.ndarray
    notes: list


def silence_mel_window(fps: float = 25) -> np.ndarray:
    """The (80, 16) mel window of one second of silent audio (the front end's floor value everywhere)."""
    from lipsync.media import audio as audio_io

    rate = audio_io.DEFAULT_AUDIO.sample_rate
    return audio_io.mel_windows(audio_io.melspectrogram(np.zeros(rate, np.float32)), fps, num_frames=1)[0]


def audio_dependence_frames(data, split: str = "val", count: int = 30, min_gap: int = MIN_FRAME_GAP,
                            seed: int = 0) -> HeldOutFrames:
    """``count`` evenly spaced held-out frames of a dataset made by ``python -m lipsync.prepare``, with their mel
    windows and the wrong ones.

    Frame k is the middle frame of an evenly spaced 5-frame window of ``split`` (its reference: the dataset's,
    a frame of the same clip outside the window, fixed by ``seed``). Wrong windows: "other_frames" the window of
    the nearest frame of the same clip at least ``min_gap`` frames away (later if there is one, else earlier);
    "other_clip" the window of an evenly spaced frame of the other clips of the split; "silence"
    :func:`silence_mel_window`. Raises ``lipsync.training.data.DatasetError`` for a missing or empty dataset.
    """
    from lipsync.training.data import Diff2LipDataset

    dataset = Diff2LipDataset(data, split=split, image_size=128, seed=seed)
    mid = dataset.num_frames // 2
    windows = np.array([dataset.window(i) for i in range(len(dataset))]).reshape(-1, 2)  # (W, 2): clip, start
    picks = np.linspace(0, len(dataset) - 1, min(int(count), len(dataset))).round().astype(int)
    samples = [dataset[int(i)] for i in picks]
    notes, gaps, other_frames, other_clip = [], [], [], []
    for k, i in enumerate(picks):
        clip, start = windows[i]
        same = np.flatnonzero(windows[:, 0] == clip)
        distance = windows[same, 1] - start
        far = same[np.abs(distance) >= min_gap]
        if len(far):  # the nearest window at least min_gap away, later first
            j = int(min(far, key=lambda r: (abs(windows[r, 1] - start), windows[r, 1] < start)))
        else:
            j = int(same[np.argmax(np.abs(distance))])
        gaps.append(int(abs(windows[j, 1] - start)))
        other_frames.append(dataset[j]["mels"][mid].numpy())
        others = np.flatnonzero(windows[:, 0] != clip)
        if len(others):
            j = int(others[round(k * (len(others) - 1) / max(1, len(picks) - 1))])  # spread over the other clips
            other_clip.append(dataset[j]["mels"][mid].numpy())
    if min(gaps) < min_gap:
        notes.append(f"other_frames: some clips are too short for windows {min_gap} frames apart; the closest "
                     f"wrong window is {min(gaps)} frames away")
    wrong = {"other_frames": np.stack(other_frames)}
    if len(other_clip) == len(picks):
        wrong["other_clip"] = np.stack(other_clip)
    else:
        notes.append(f"other_clip: split {split!r} has only one clip with frames other than these; not measured")
    fps = Fraction(dataset.records[int(windows[picks[0], 0])]["fps"])
    wrong["silence"] = np.repeat(silence_mel_window(fps)[None], len(picks), axis=0)

    def to_u8(images):  # (K, 3, S, S) in [-1, 1] -> (K, S, S, 3) uint8
        array = (np.stack([t.numpy() for t in images]) + 1) * 127.5
        return array.round().clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)

    return HeldOutFrames(faces=to_u8([s["faces"][mid] for s in samples]),
                         references=to_u8([s["reference"] for s in samples]),
                         mels=np.stack([s["mels"][mid].numpy() for s in samples]), wrong=wrong,
                         clips=[dataset.records[int(s["clip"])]["id"] for s in samples],
                         frames=np.array([int(s["start"]) + mid for s in samples]), frame_gaps=np.array(gaps),
                         notes=notes)
