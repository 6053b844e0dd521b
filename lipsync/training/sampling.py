"""Position-addressable data order and per-sample randomness: what makes training runs reproducible.

Every sample a run consumes has a *global sample index* ``g`` = 0, 1, 2, ... in the order the run
consumes them. Optimiser step ``s`` (0-based) uses ``g`` in ``[s * G, (s + 1) * G)`` where
``G = batch_size * num_processes * grad_accum`` is the global batch; micro-step ``a`` of process ``p``
takes ``B = batch_size`` consecutive indices starting at ``s * G + (a * num_processes + p) * B``.

* Which dataset item ``g`` is: epoch ``g // len(dataset)`` is a permutation drawn from ``(seed, epoch)``.
* Each sample's timesteps and noises come from a generator seeded by ``(seed, g, s)``.

So the global batch of a step (its items and its noise) does not depend on how it is split across
processes or accumulation steps, and a run resumed at step ``s`` consumes exactly what the
uninterrupted run would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch


def mixed_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class GlobalOrder:
    """Maps a global sample index to a dataset index: a fresh seeded permutation per epoch."""

    def __init__(self, num_items: int, seed: int):
        if num_items <= 0:
            raise ValueError("the dataset has no samples")
        self.num_items = int(num_items)
        self.seed = int(seed)
        self._perms: Dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """The item order of ``epoch`` (int64 array of length ``num_items``)."""
        perm = self._perms.get(epoch)
        if perm is None:
            rng = np.random.Generator(np.random.PCG64(mixed_seed(self.seed, 0x0DA7A, epoch)))
            perm = rng.permutation(self.num_items)
            self._perms = {epoch: perm}  # one epoch cached: consumption is sequential
        return perm

    def item(self, g: int) -> int:
        """Dataset index of global sample ``g``."""
        epoch, pos = divmod(int(g), self.num_items)
        return int(self.permutation(epoch)[pos])


@dataclass(frozen=True)
class BatchLayout:
    """How a global batch is split: ``batch_size`` per process and micro-step."""

    batch_size: int
    num_processes: int = 1
    grad_accum: int = 1

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_processes * self.grad_accum

    def indices(self, step: int, micro_step: int, rank: int) -> List[int]:
        """Global sample indices of (step, micro-step, process)."""
        start = step * self.global_batch + (micro_step * self.num_processes + rank) * self.batch_size
        return list(range(start, start + self.batch_size))


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields ``[(g, dataset_index), ...]`` batches for this process from ``start_step`` to ``end_step``.

    Use with :class:`IndexedDataset` as a ``DataLoader`` ``batch_sampler``.
    """

    def __init__(self, order: GlobalOrder, layout: BatchLayout, rank: int, start_step: int, end_step: int):
        self.order, self.layout, self.rank = order, layout, int(rank)
        self.start_step, self.end_step = int(start_step), int(end_step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step) * self.layout.grad_accum

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        for step in range(self.start_step, self.end_step):
            for micro in range(self.layout.grad_accum):
                yield [(g, self.order.item(g)) for g in self.layout.indices(step, micro, self.rank)]


@dataclass(frozen=True)
class NoiseSpec:
    """What :func:`draw_noise` needs to draw a training sample's timesteps and noises where it is loaded."""

    seed: int
    global_batch: int  # global sample g belongs to optimiser step g // global_batch
    num_frames: int
    image_size: int
    num_timesteps: int
    channels: int = 3


class IndexedDataset(torch.utils.data.Dataset):
    """Wraps a dataset so that item ``(g, i)`` is ``dataset[i]`` plus ``"index": g`` (the dataset's
    ``set_epoch``, when it has one, is called with g's epoch first).

    With ``noise`` it also holds the sample's ``t`` (F,), ``noise`` and ``cond_noise`` (F, C, S, S) of
    :func:`draw_noise` for its step: drawn by the loader's workers, off the training loop.
    """

    def __init__(self, dataset, noise: Optional[NoiseSpec] = None):
        self.dataset = dataset
        self.noise = noise

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        g, i = key
        if hasattr(self.dataset, "set_epoch"):  # e.g. the reference frame drawn per epoch: a function of g
            self.dataset.set_epoch(int(g) // len(self.dataset))
        sample = dict(self.dataset[i])
        sample["index"] = int(g)
        if self.noise is not None:
            n = self.noise
            sample["t"], sample["noise"], sample["cond_noise"] = draw_noise(
                n.seed, [g], int(g) // n.global_batch, n.num_frames, n.image_size, n.num_timesteps, n.channels)
        return sample


def draw_noise(seed: int, indices, step: int, num_frames: int, image_size: int, num_timesteps: int,
               channels: int = 3) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample timesteps and noises, each sample from a generator seeded by ``(seed, g, step)``.

    Args:
        indices: the global sample indices ``g`` of the batch (length B).
        step: the optimiser step (-1 for the fixed validation draw).
    Returns:
        ``t`` (B * num_frames,) int64 in [0, num_timesteps): one timestep per frame;
        ``noise`` (B * num_frames, C, S, S): the diffusion noise of ``q_sample``;
        ``cond_noise`` (B * num_frames, C, S, S): the noise filling the masked frame's lower half.
    """
    ts, noises, conds = [], [], []
    for g in indices:
        gen = torch.Generator().manual_seed(mixed_seed(seed, int(g), int(step) & 0xFFFFFFFF))
        ts.append(torch.randint(0, num_timesteps, (num_frames,), generator=gen))
        noises.append(torch.randn((num_frames, channels, image_size, image_size), generator=gen))
        conds.append(torch.randn((num_frames, channels, image_size, image_size), generator=gen))
    return torch.cat(ts), torch.cat(noises), torch.cat(conds)


def audio_dropout_rows(seed: int, indices, step: int, p: float) -> torch.Tensor:
    """(B,) bool: the samples of the batch trained with the null audio, each with probability ``p``, drawn from
    its own stream of ``(seed, g, step)`` (independent of the noise; the same on resume and on any process)."""
    if p <= 0:
        return torch.zeros(len(indices), dtype=torch.bool)
    draws = [np.random.default_rng([int(seed), 0xA0D10, int(g), int(step) & 0xFFFFFFFF]).random() for g in indices]
    return torch.tensor(draws) < p


def apply_audio_dropout(mels: torch.Tensor, seed: int, indices, step: int, p: float) -> torch.Tensor:
    """Audio dropout: the mel windows (B, F, 80, 16) with those of the samples :func:`audio_dropout_rows` picks
    replaced by the null audio (the mel of silence, ``lipsync.model.unet.NULL_AUDIO_VALUE``)."""
    if p <= 0:
        return mels
    from lipsync.model.unet import NULL_AUDIO_VALUE

    drop = audio_dropout_rows(seed, indices, step, p).to(mels.device)[:, None, None, None]
    return torch.where(drop, torch.full_like(mels, NULL_AUDIO_VALUE), mels)
