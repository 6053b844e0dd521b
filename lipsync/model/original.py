"""The original Diff2Lip checkpoint (guided-diffusion key layout): reading it and reading the model sizes off it.

The released checkpoint is a plain ``torch.save``d state dict (407 MB, fp32). Our UNet keeps the same module
names, so conversion is a one-to-one copy after every key and shape has been checked
(``Diff2LipUNetModel.from_original_checkpoint``; ``lipsync.model.loading.load_original_checkpoint`` infers the
sizes first). This module only reads state dicts: it never builds the model.
"""

from __future__ import annotations

import os
import re
from typing import Mapping, Union

from lipsync.checkpoints import StateDict, read_state_dict, unwrap_state_dict

WHAT = "the Diff2Lip model configuration"
HINT = "Check that it is a Diff2Lip checkpoint, and pass config overrides (e.g. model_channels=32) for non-paper sizes."


def load_original_state_dict(path: Union[str, os.PathLike]) -> StateDict:
    """Read a pickled original checkpoint safely (``weights_only=True``) as a flat state dict."""
    return read_state_dict(path, what="Diff2Lip")


def original_state_dict(path_or_state_dict) -> StateDict:
    """The flat state dict of an original checkpoint: a file (pickled ``.pt``/``.pth``/``.ckpt``/``.bin`` or
    ``.safetensors``) or an already loaded dict (wrappers such as ``{"state_dict": ...}`` are unwrapped)."""
    if isinstance(path_or_state_dict, Mapping):
        return unwrap_state_dict(path_or_state_dict, what="Diff2Lip")
    if str(path_or_state_dict).endswith(".safetensors"):
        from safetensors.torch import load_file

        return unwrap_state_dict(load_file(os.fspath(path_or_state_dict)), what="Diff2Lip",
                                 source=str(path_or_state_dict))
    return load_original_state_dict(path_or_state_dict)


def infer_unet_config(state_dict, image_size: int = 128) -> dict:
    """Model sizes read off an original state dict: channels, res blocks per level, channel multipliers.

    Attention resolutions are read off which encoder blocks hold attention (for ``image_size`` crops).
    Head width is not stored in the weights; ``min(64, model_channels)`` fits the paper (64) and the
    tiny test model (32). Pass ``num_head_channels=`` to override.
    """
    model_channels = state_dict["input_blocks.0.0.weight"].shape[0]
    # decoder block i starts with a ResBlock of width model_channels * (its level's multiplier); every
    # level but the last ends with an up-sampling ResBlock (a second ResBlock in the same block)
    widths, n_up = [], 0
    while f"output_blocks.{len(widths)}.0.in_layers.2.weight" in state_dict:
        i = len(widths)
        widths.append(state_dict[f"output_blocks.{i}.0.in_layers.2.weight"].shape[0] // model_channels)
        n_up += any(re.match(rf"output_blocks\.{i}\.[1-9]\.in_layers\.", k) for k in state_dict)
    n_levels = n_up + 1
    per_level = len(widths) // n_levels  # num_res_blocks + 1
    channel_mult = [widths[level * per_level] for level in range(n_levels)][::-1]
    num_res_blocks = per_level - 1
    # attention: encoder ResBlocks followed by an attention layer, walked in construction order
    attention, block, ds = [], 1, 1
    for level in range(n_levels):
        for _ in range(num_res_blocks):
            if f"input_blocks.{block}.1.qkv.weight" in state_dict:
                attention.append(image_size // ds)
            block += 1
        if level != n_levels - 1:
            block, ds = block + 1, ds * 2
    return {
        "attention_resolutions": tuple(sorted(set(attention), reverse=True)),
        "model_channels": model_channels,
        "num_res_blocks": num_res_blocks,
        "channel_mult": tuple(channel_mult),
        "num_head_channels": min(64, model_channels),
    }
