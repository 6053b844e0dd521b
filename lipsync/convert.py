"""Convert the original Diff2Lip checkpoint (guided-diffusion key layout) into a diffusers folder.

The reading and key checks live in :mod:`lipsync.model.original`; this is the command.

Command line::

    python -m lipsync.convert --checkpoint checkpoint.pt --output diff2lip-diffusers [--fp16] [--push-to-hub user/repo]
    python -m lipsync.convert --random-small tiny-diff2lip      # a small random model for trying the tools

Model sizes (channels, res blocks, multipliers, attention) are read off the weights, as ``load_pipeline``
does; ``--config key=value`` overrides them.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from lipsync.console import command_name
from lipsync.errors import LipSyncError


def _parse_override(text: str):
    key, _, value = text.partition("=")
    if not key or not _:
        raise argparse.ArgumentTypeError(f"override {text!r} must look like key=value (e.g. model_channels=32)")
    return key, json.loads(value)


def main(argv=None) -> int:
    """Command line; returns the exit status (0 written, 1 failed, 2 bad arguments)."""
    parser = argparse.ArgumentParser(prog=command_name("python -m lipsync.convert"),
                                     description=__doc__.split("\n\n")[0])
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

    from lipsync.console import configure_logging, quiet_diffusers
    from lipsync.model.loading import load_original_checkpoint, random_small_pipeline
    from lipsync.model.pipeline import Diff2LipPipeline, default_scheduler

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
