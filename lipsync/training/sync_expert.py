"""The lip-sync expert as a training loss: Wav2Lip's released ``lipsync_expert.pth`` or an expert trained here
(``python -m lipsync.train_syncnet``), frozen. The architecture lives in :mod:`lipsync.scoring.syncnet_color`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from lipsync.checkpoints import load_checked_state_dict, read_state_dict
from lipsync.scoring.syncnet_color import (  # noqa: F401 - the architecture, used through this module too
    OWN_EXPERT_WEIGHTS,
    SYNC_FACE_SIZE,
    SYNC_FRAMES,
    SyncNetColor,
    load_own_expert,
    sync_expert_input,
)
from lipsync.training.weights import WeightsSource, find_weights

SYNC_EXPERT_SOURCE = WeightsSource(
    what="Wav2Lip lip-sync expert (lipsync_expert.pth)",
    flag="--sync-expert",
    env_var="LIPSYNC_SYNC_EXPERT",
    hub_repo="Nekochu/Wav2Lip",
    hub_filename="lipsync_expert.pth",
    elsewhere="the 'Expert Discriminator' link in the README of github.com/Rudrabha/Wav2Lip",
)


def load_sync_expert(path: Optional[os.PathLike | str] = None,
                     device: Optional[torch.device | str] = None) -> SyncNetColor:
    """The lip-sync expert, frozen, in eval mode (BatchNorm uses its running stats).

    Args:
        path: Wav2Lip's released checkpoint (its ``{"state_dict": ...}`` dict or a bare state dict; ``module.``
            prefixes are stripped), or an expert trained here (the folder of ``python -m lipsync.train_syncnet``
            or its ``expert.safetensors``); None -> env ``LIPSYNC_SYNC_EXPERT`` -> Hub ``Nekochu/Wav2Lip``.
        device: where to put it (default CPU).
    Raises WeightsUnavailableError (naming --sync-expert) or CheckpointMismatchError.
    """
    if path is not None and (str(path).endswith(".safetensors") or (Path(path) / OWN_EXPERT_WEIGHTS).is_file()):
        return load_own_expert(path, device)  # an expert trained with python -m lipsync.train_syncnet
    model = SyncNetColor()
    state = read_state_dict(find_weights(SYNC_EXPERT_SOURCE, path), what="the Wav2Lip lip-sync expert")
    load_checked_state_dict(model, state, what="the Wav2Lip lip-sync expert (SyncNet_color)",
                            hint="pass Wav2Lip's lipsync_expert.pth with --sync-expert")
    model.requires_grad_(False)
    return model.to(device or "cpu").eval()
