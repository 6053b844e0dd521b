"""Reading pickled checkpoints safely and checking them against a model: one place for every network
(Diff2Lip, Wav2Lip, SyncNet)."""

from __future__ import annotations

import os
import pickle
from typing import Dict, List, Mapping

import torch
from torch import nn

from lipsync.errors import CheckpointMismatchError

StateDict = Dict[str, torch.Tensor]
MAX_LISTED = 8
WRAPPER_KEYS = ("state_dict", "model", "ema")  # training checkpoints nest the weights under one of these


def unwrap_state_dict(obj, *, what: str, source: str = "the checkpoint") -> StateDict:
    """A bare state dict, or one nested under ``state_dict``/``model``/``ema`` -> flat name -> tensor dict,
    with a leading ``module.`` (nn.DataParallel) stripped from every key."""
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointMismatchError(
            f"{source} is not a state dict for {what} (expected a name -> tensor dict, optionally under "
            "'state_dict'); pass the original released checkpoint file"
        )
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def read_state_dict(path: str | os.PathLike, *, what: str) -> StateDict:
    """``torch.load(path, weights_only=True)`` on the CPU, unwrapped as :func:`unwrap_state_dict` does."""
    if not os.path.isfile(path):
        raise CheckpointMismatchError(f"checkpoint {path} does not exist; pass the path of the {what} weights")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):  # a real pickle, but with Python objects besides tensors
            raise CheckpointMismatchError(
                f"{path} holds Python objects other than tensors, so it cannot be loaded safely "
                f"(weights_only=True) for {what}; re-save it as a plain state dict "
                "(torch.save(model.state_dict(), path))"
            ) from exc
        raise CheckpointMismatchError(
            f"{path} could not be read as a PyTorch checkpoint for {what}; download the file again"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointMismatchError(
            f"{path} could not be read as a PyTorch checkpoint for {what} ({reason}); download the file again"
        ) from exc
    return unwrap_state_dict(obj, what=what, source=str(path))


def _few(items: List[str]) -> str:
    return ", ".join(items[:MAX_LISTED]) + (f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str, hint: str = "") -> None:
    """Raise ``CheckpointMismatchError`` naming every missing, unexpected or wrongly shaped key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_few(unexpected)}")
    if wrong_shape:
        parts.append(f"{len(wrong_shape)} shape mismatches: {_few(wrong_shape)}")
    if parts:
        raise CheckpointMismatchError(
            f"the checkpoint does not match {what}: " + "; ".join(parts) + (f". {hint}" if hint else "")
        )


def load_checked_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str,
                            hint: str = "") -> None:
    """:func:`check_state_dict`, then a strict ``load_state_dict``."""
    check_state_dict(model, state_dict, what=what, hint=hint)
    model.load_state_dict(state_dict, strict=True)
