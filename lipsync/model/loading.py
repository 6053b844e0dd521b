"""``load_pipeline``: turn whatever the user points at into a ready ``Diff2LipPipeline``.

Sources, in the order they are tried:
    * a folder saved with ``save_pretrained`` (a pipeline with ``model_index.json``, or a UNet folder), or a
      training checkpoint ``RUN/checkpoints/step_N`` of ``python -m lipsync.train`` (its EMA weights);
    * an original checkpoint file (``.pt``/``.pth``/``.ckpt``/``.bin``/``.safetensors``), converted in memory;
    * a Hub repo in diffusers layout (``user/name``);
    * nothing: ``$LIPSYNC_CHECKPOINT`` if set, else the paper checkpoint on the Hub
      (``ameerazam08/diff2lip``, ``checkpoints/checkpoint.pt``), cached by huggingface_hub.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Optional, Union

import torch

from lipsync.console import quiet_diffusers
from lipsync.errors import WeightsUnavailableError
from lipsync.model.original import infer_unet_config, original_state_dict

logger = logging.getLogger(__name__)

PAPER_REPO = "ameerazam08/diff2lip"
PAPER_FILE = "checkpoints/checkpoint.pt"
CHECKPOINT_ENV = "LIPSYNC_CHECKPOINT"
CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".safetensors"}
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def default_device() -> str:
    """The GPU when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(device: str, dtype: Union[None, str, torch.dtype], unet=None) -> torch.dtype:
    """The precision to run in. ``None``/"auto": bf16 on GPUs with bf16, fp16 on older GPUs; on a CPU bf16 only
    where ``unet`` is measured faster in bf16 (``acceleration.default_dtype``), else fp32. "fp32" is the
    paper-exact reference path. fp16 is GPU-only (a CPU falls back to fp32); bf16 runs on both."""
    from lipsync.model.acceleration import default_dtype

    if isinstance(dtype, str):
        names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
                 "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "auto": None}
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; use auto, fp32, fp16 or bf16")
        dtype = names[dtype]
    on_gpu = str(device).startswith("cuda")
    if dtype is None:
        return default_dtype(device, unet)
    if dtype == torch.float16 and not on_gpu:
        logger.warning("%s is only supported on the GPU; using float32 on %s", dtype, device)
        return torch.float32
    return dtype


def load_original_checkpoint(path_or_state_dict, **config_overrides):
    """A ``Diff2LipUNetModel`` (fp32, eval) holding an original checkpoint's weights, with the model sizes read
    off the weights (``lipsync.model.original.infer_unet_config``).

    Args:
        path_or_state_dict: an original checkpoint file (pickled ``.pt``/``.pth``/``.ckpt``/``.bin`` or
            ``.safetensors``) or its state dict.
        config_overrides: model config values that win over the inferred ones (e.g. ``num_head_channels``).
    Raises ``CheckpointMismatchError`` listing missing, unexpected and wrongly shaped keys when the weights are
    not Diff2Lip's.
    """
    from lipsync.model.unet import Diff2LipUNetModel

    state_dict = original_state_dict(path_or_state_dict)
    try:
        inferred = infer_unet_config(state_dict)
    except (KeyError, IndexError, ZeroDivisionError):  # not Diff2Lip's layout: the key check says how
        inferred = {}
    return Diff2LipUNetModel.from_original_checkpoint(state_dict, **{**inferred, **config_overrides})


# the model of `--random-small` (as the tests' small model): 4 levels, attention at 16x16, 3.1 M parameters
RANDOM_SMALL_CONFIG = dict(model_channels=32, channel_mult=(1, 1, 2, 2), num_res_blocks=1,
                           attention_resolutions=(16,), num_head_channels=32)


def random_small_pipeline(seed: int = 0):
    """A ``Diff2LipPipeline`` with a small randomly initialised UNet (``RANDOM_SMALL_CONFIG``), seeded.

    Its output is meaningless (random weights); it exercises the whole tool chain in seconds per frame
    on a CPU. The official initialisation zeroes the output convolutions; every weight is nudged by
    0.02 * N(0, 1) so that the network is not trivially zero.
    """
    from lipsync.model.unet import Diff2LipUNetModel

    torch.manual_seed(seed)
    unet = Diff2LipUNetModel(**RANDOM_SMALL_CONFIG)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return _pipeline_from_unet(unet.eval())


def _pipeline_from_unet(unet):
    from lipsync.model.pipeline import Diff2LipPipeline, default_scheduler

    return Diff2LipPipeline(unet=unet, scheduler=default_scheduler())


def _paper_checkpoint(download: bool = True) -> Optional[Path]:
    from lipsync.hub import hub_file

    return hub_file(PAPER_REPO, PAPER_FILE, what="the Diff2Lip weights", download=download,
                    remedy=f"Download the file on a machine with internet access and pass its path with "
                           f"--checkpoint PATH, or set {CHECKPOINT_ENV}=PATH.")


def saved_unet_config(source: Optional[Union[str, os.PathLike]] = None) -> dict:
    """The UNet config of a saved model folder (a pipeline folder, a UNet folder or a training checkpoint), read
    without loading any weights; {} for original checkpoints, Hub repos and the paper default (no audio dropout)."""
    import json

    source = source if source is not None else os.environ.get(CHECKPOINT_ENV)
    if source is None or not Path(source).expanduser().is_dir():
        return {}
    folder = Path(source).expanduser()
    for config in (folder / "unet" / "config.json", folder / "ema" / "config.json", folder / "config.json"):
        if config.is_file():
            try:
                return json.loads(config.read_text())
            except (OSError, ValueError):
                return {}
    return {}


def check_weights(source: Optional[Union[str, os.PathLike]] = None) -> None:
    """Raise ``WeightsUnavailableError`` within seconds when ``load_pipeline(source)`` cannot get its weights.

    Only the default source (no ``source`` and no ``$LIPSYNC_CHECKPOINT``: the paper checkpoint) is checked
    here: it must be in the local Hub cache or the Hub must answer. Other sources are checked when loaded.
    Imports nothing heavy, so a command line can refuse before reading media or importing diffusers.
    """
    if source is None and not os.environ.get(CHECKPOINT_ENV):
        _paper_checkpoint(download=False)


def load_pipeline(source: Optional[Union[str, os.PathLike]] = None, device: Optional[str] = None,
                  dtype: Union[None, str, torch.dtype] = None, **config_overrides):
    """Return a ``Diff2LipPipeline`` on ``device`` (default: GPU if available) in ``dtype`` (default
    ``resolve_dtype``'s: bf16 where fast, else fp32 on the CPU; pass "fp32" for the paper-exact path).

    ``source``: a converted folder, an original checkpoint file, a Hub repo id in diffusers layout, or
    ``None`` for ``$LIPSYNC_CHECKPOINT`` / the paper checkpoint on the Hub. ``config_overrides`` apply to
    original checkpoints of non-paper sizes. Raises ``WeightsUnavailableError`` when nothing can be loaded.
    """
    from lipsync.model.pipeline import Diff2LipPipeline

    device = device or default_device()
    on_cpu_auto = (dtype is None or dtype == "auto") and not str(device).startswith("cuda")
    dtype = torch.float32 if on_cpu_auto else resolve_dtype(device, dtype)  # CPU + auto: decided once loaded
    if source is None:
        source = os.environ.get(CHECKPOINT_ENV) or None
    if source is None:
        pipe = _pipeline_from_unet(load_original_checkpoint(_paper_checkpoint(), **config_overrides))
    else:
        path = Path(source).expanduser()
        if path.is_dir() and (path / "training_state.json").is_file() and (path / "ema").is_dir():
            path = path / "ema"  # a training checkpoint (python -m lipsync.train): its EMA weights
        if path.is_dir():
            if (path / "model_index.json").is_file():
                with quiet_diffusers():
                    pipe = Diff2LipPipeline.from_pretrained(path)
            elif (path / "config.json").is_file():
                from lipsync.model.unet import Diff2LipUNetModel

                with quiet_diffusers():
                    pipe = _pipeline_from_unet(Diff2LipUNetModel.from_pretrained(path))
            else:
                raise WeightsUnavailableError(
                    f"{path} is a folder without model_index.json or config.json; point to a folder made by "
                    "`python -m lipsync.convert` (save_pretrained) or to Diff2Lip's checkpoint.pt"
                )
        elif path.is_file():
            if path.suffix not in CHECKPOINT_SUFFIXES:
                raise WeightsUnavailableError(
                    f"{path} is not a checkpoint (expected one of {sorted(CHECKPOINT_SUFFIXES)}); "
                    "pass Diff2Lip's checkpoint.pt or a converted folder"
                )
            pipe = _pipeline_from_unet(load_original_checkpoint(path, **config_overrides))
        elif _REPO_ID.match(str(source)):
            from lipsync.hub import hub_reachable

            try:  # from the local cache only when the Hub does not answer a quick check
                with quiet_diffusers():
                    pipe = Diff2LipPipeline.from_pretrained(str(source), local_files_only=not hub_reachable())
            except Exception as exc:  # offline, missing repo, missing files
                raise WeightsUnavailableError(
                    f"could not load the Hub repo '{source}' ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); check the name and your connection, "
                    f"or download it and pass the local folder (--checkpoint PATH or {CHECKPOINT_ENV}=PATH)"
                ) from exc
        else:
            raise WeightsUnavailableError(
                f"checkpoint '{source}' was not found: it is neither an existing file or folder nor a Hub repo "
                "id (user/name); check the path"
            )
    pipe.unet.eval()
    with quiet_diffusers():  # diffusers warns about "modules to keep in float32: []" on every cast
        pipe = pipe.to(device, dtype)
    if on_cpu_auto:  # bf16 only where this model is measured faster on this CPU (timed once, cached)
        dtype = resolve_dtype(device, None, unet=pipe.unet)
        if dtype != torch.float32:
            with quiet_diffusers():
                pipe = pipe.to(device, dtype)
    from lipsync.model.acceleration import prepare_unet

    prepare_unet(pipe.unet)  # bf16 on the CPU: channels_last weights
    return pipe
