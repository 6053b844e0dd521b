"""Convert the original Diff2Lip checkpoint (guided-diffusion key layout) into diffusers form.

The released checkpoint is a plain ``torch.save``d state dict (407 MB, fp32). Our model keeps the same
module names, so conversion is a one-to-one copy after every key and shape has been checked.

Command line::

    python -m lipsync.convert --checkpoint checkpoint.pt --output diff2lip-diffusers [--fp16] [--push-to-hub user/repo]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Mapping, Union

import torch

from .checkpoints import StateDict, load_checked_state_dict, read_state_dict, unwrap_state_dict
from .errors import LipSyncError


WHAT = "the Diff2Lip model configuration"
HINT = "Check that it is a Diff2Lip checkpoint, and pass config overrides (e.g. model_channels=32) for non-paper sizes."


def load_original_state_dict(path: Union[str, os.PathLike]) -> StateDict:
    """Read a pickled original checkpoint safely (``weights_only=True``) as a flat state dict."""
    return read_state_dict(path, what="Diff2Lip")


def convert_original_checkpoint(path_or_state_dict, **config_overrides):
    """Return a ``Diff2LipUNetModel`` (fp32, eval) holding the original checkpoint's weights."""
    from .unet_diff2lip import Diff2LipUNetModel

    if isinstance(path_or_state_dict, Mapping):
        state_dict = unwrap_state_dict(path_or_state_dict, what="Diff2Lip")
    else:
        state_dict = load_original_state_dict(path_or_state_dict)
    model = Diff2LipUNetModel(**config_overrides)
    load_checked_state_dict(model, {k: v.float() for k, v in state_dict.items()}, what=WHAT, hint=HINT)
    return model.eval()


def _parse_override(text: str):
    key, _, value = text.partition("=")
    if not key or not _:
        raise argparse.ArgumentTypeError(f"override {text!r} must look like key=value (e.g. model_channels=32)")
    return key, json.loads(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lipsync.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="original Diff2Lip checkpoint (.pt)")
    parser.add_argument("--output", required=True, help="folder for the diffusers pipeline (save_pretrained)")
    parser.add_argument("--fp16", action="store_true", help="also save an fp16 variant (variant='fp16')")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hub model repo")
    parser.add_argument(
        "--config", metavar="KEY=VALUE", type=_parse_override, action="append", default=[],
        help="model config override for non-paper sizes, e.g. --config model_channels=32",
    )
    args = parser.parse_args(argv)

    from .pipeline_diff2lip import Diff2LipPipeline, default_scheduler

    try:
        unet = convert_original_checkpoint(args.checkpoint, **dict(args.config))
        pipe = Diff2LipPipeline(unet=unet, scheduler=default_scheduler())
        pipe.save_pretrained(args.output, safe_serialization=True)
        if args.fp16:
            pipe.to(torch_dtype=torch.float16).save_pretrained(args.output, safe_serialization=True, variant="fp16")
        if args.push_to_hub:
            from huggingface_hub import HfApi

            HfApi().create_repo(args.push_to_hub, exist_ok=True)
            HfApi().upload_folder(folder_path=args.output, repo_id=args.push_to_hub)
    except (LipSyncError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    n_params = sum(p.numel() for p in unet.parameters())
    print(f"converted {n_params:,} parameters -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
