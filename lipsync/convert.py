"""Convert the original Diff2Lip checkpoint (guided-diffusion key layout) into diffusers form.

The released checkpoint is a plain ``torch.save``d state dict (407 MB, fp32). Our model keeps the same
module names, so conversion is a one-to-one copy after every key and shape has been checked.

Command line::

    python -m lipsync.convert --checkpoint checkpoint.pt --output diff2lip-diffusers [--fp16] [--push-to-hub user/repo]
    python -m lipsync.convert --random-small tiny-diff2lip      # a small random model for trying the tools

Model sizes (channels, res blocks, multipliers, attention) are read off the weights, as ``load_pipeline``
does; ``--config key=value`` overrides them.
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


def load_original_checkpoint(path_or_state_dict, **config_overrides):
    """Like :func:`convert_original_checkpoint`, with the model sizes read off the weights.

    Args:
        path_or_state_dict: an original checkpoint file (pickled ``.pt``/``.pth``/``.ckpt``/``.bin`` or
            ``.safetensors``) or its state dict.
        config_overrides: model config values that win over the inferred ones (e.g. ``num_head_channels``).
    Returns a ``Diff2LipUNetModel`` (fp32, eval). Raises ``CheckpointMismatchError`` listing missing,
    unexpected and wrongly shaped keys when the weights are not Diff2Lip's.
    """
    from .loading import infer_unet_config

    if isinstance(path_or_state_dict, Mapping):
        state_dict = unwrap_state_dict(path_or_state_dict, what="Diff2Lip")
    elif str(path_or_state_dict).endswith(".safetensors"):
        from safetensors.torch import load_file

        state_dict = unwrap_state_dict(load_file(os.fspath(path_or_state_dict)), what="Diff2Lip",
                                       source=str(path_or_state_dict))
    else:
        state_dict = load_original_state_dict(path_or_state_dict)
    try:
        inferred = infer_unet_config(state_dict)
    except (KeyError, IndexError, ZeroDivisionError):  # not Diff2Lip's layout: the key check below says how
        inferred = {}
    return convert_original_checkpoint(state_dict, **{**inferred, **config_overrides})


# the model of `--random-small` (as the tests' small model): 4 levels, attention at 16x16, 3.1 M parameters
RANDOM_SMALL_CONFIG = dict(model_channels=32, channel_mult=(1, 1, 2, 2), num_res_blocks=1,
                           attention_resolutions=(16,), num_head_channels=32)


def random_small_pipeline(seed: int = 0):
    """A ``Diff2LipPipeline`` with a small randomly initialised UNet (``RANDOM_SMALL_CONFIG``), seeded.

    Its output is meaningless (random weights); it exercises the whole tool chain in seconds per frame
    on a CPU. The official initialisation zeroes the output convolutions; every weight is nudged by
    0.02 * N(0, 1) so that the network is not trivially zero.
    """
    from .pipeline_diff2lip import Diff2LipPipeline, default_scheduler
    from .unet_diff2lip import Diff2LipUNetModel

    torch.manual_seed(seed)
    unet = Diff2LipUNetModel(**RANDOM_SMALL_CONFIG)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return Diff2LipPipeline(unet=unet.eval(), scheduler=default_scheduler())


def _parse_override(text: str):
    key, _, value = text.partition("=")
    if not key or not _:
        raise argparse.ArgumentTypeError(f"override {text!r} must look like key=value (e.g. model_channels=32)")
    return key, json.loads(value)


def main(argv=None) -> int:
    """Command line; returns the exit status (0 written, 1 failed, 2 bad arguments)."""
    parser = argparse.ArgumentParser(prog="python -m lipsync.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="original Diff2Lip checkpoint (.pt, or .safetensors)")
    parser.add_argument("--output", help="folder for the diffusers pipeline (save_pretrained)")
    parser.add_argument("--fp16", action="store_true", help="also save an fp16 variant (variant='fp16')")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hub model repo")
    parser.add_argument(
        "--config", metavar="KEY=VALUE", type=_parse_override, action="append", default=[],
        help="model config override (sizes are read off the weights), e.g. --config num_head_channels=32",
    )
    parser.add_argument("--random-small", metavar="OUT",
                        help="write a small model with random weights (3.1 M parameters) to the folder OUT, for "
                             "trying the app, CLI and API without downloading anything; its lips are noise")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-small's weights")
    args = parser.parse_args(argv)
    if args.random_small is None and (args.checkpoint is None or args.output is None):
        parser.error("pass --checkpoint CHECKPOINT --output FOLDER, or --random-small OUT")
    if args.random_small is not None and args.checkpoint is not None:
        parser.error("--random-small makes a model of its own; leave out --checkpoint")
    output = args.random_small if args.random_small is not None else args.output

    from .console import configure_logging, quiet_diffusers
    from .pipeline_diff2lip import Diff2LipPipeline, default_scheduler

    configure_logging()
    try:
        with quiet_diffusers():
            if args.random_small is not None:
                pipe = random_small_pipeline(args.seed)
            else:
                unet = load_original_checkpoint(args.checkpoint, **dict(args.config))
                pipe = Diff2LipPipeline(unet=unet, scheduler=default_scheduler())
            pipe.save_pretrained(output, safe_serialization=True)
            if args.fp16:
                pipe.to(torch_dtype=torch.float16).save_pretrained(output, safe_serialization=True, variant="fp16")
        if args.push_to_hub:
            from huggingface_hub import HfApi

            HfApi().create_repo(args.push_to_hub, exist_ok=True)
            HfApi().upload_folder(folder_path=output, repo_id=args.push_to_hub)
    except (LipSyncError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    n_params = sum(p.numel() for p in pipe.unet.parameters())
    what = "made a random small model" if args.random_small is not None else "converted"
    print(f"{what}: {n_params:,} parameters -> {output}")
    if args.random_small is not None:
        print(f"try it: python -m lipsync --checkpoint {output} --video VIDEO --audio AUDIO --output OUT.mp4")
    return 0


if __name__ == "__main__":
    sys.exit(main())
