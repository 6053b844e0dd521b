"""Fast paths for the UNet: precision choice, memory layout, and ``torch.compile`` (cached).

* ``fast_bf16_cpu()``: whether this CPU runs bf16 natively (AMX or AVX512-BF16), detected at run time.
* ``default_dtype(device)``: bf16 where it is fast (such CPUs, GPUs with bf16), else fp16 on older GPUs
  and fp32 on other CPUs. fp32 stays the paper-exact reference path.
* ``prepare_unet(unet)``: channels_last weights for bf16 on the CPU, so oneDNN reads them in its layout.
* ``compile_pipeline(pipe)``: ``torch.compile`` of the UNet (inductor, with freezing on the CPU: weights
  are constant-folded and prepacked once). Compiling happens on the first call; later jobs in the same
  process reuse the compiled code, and the inductor's on-disk cache shortens compiles in new processes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# Measured on a 2-core Sapphire Rapids (shared): first compile of the paper-size UNet ~4 min, the tiny
# fixture model ~1 min; a warm on-disk cache cuts this to a fraction. Used for the up-front message.
COMPILE_SECONDS_PER_GFLOP_CPU = 1.5
COMPILE_SECONDS_MIN = 40.0


def fast_bf16_cpu() -> bool:
    """True when the CPU has AMX tiles or AVX512-BF16 (bf16 matmuls/convs run natively and fast)."""
    cpu = getattr(torch._C, "_cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(cpu, probe, None)
        if check is not None:
            try:
                if check():
                    return True
            except RuntimeError:  # pragma: no cover - probe unsupported on this build
                pass
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def default_dtype(device: str) -> torch.dtype:
    """bf16 on GPUs that support it and on CPUs with AMX/AVX512-BF16; fp16 on other GPUs; fp32 otherwise."""
    if str(device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if fast_bf16_cpu() else torch.float32


def prepare_unet(unet: torch.nn.Module) -> torch.nn.Module:
    """Lay the UNet's 4-D weights out channels_last when it runs bf16 on the CPU (oneDNN's native layout).

    Values are unchanged; fp32 models are left exactly as they are (the paper-exact path). Returns ``unet``.
    """
    param = next(unet.parameters(), None)
    if param is not None and param.device.type == "cpu" and param.dtype == torch.bfloat16:
        unet.to(memory_format=torch.channels_last)
    return unet


def inductor_cache_dir() -> Path:
    """Where the inductor keeps compiled kernels across processes ($TORCHINDUCTOR_CACHE_DIR or ~/.cache)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "lipsync" / "inductor")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def expected_compile_seconds(unet: torch.nn.Module) -> float:
    """Rough first-compile time on a small CPU, from the model's size (GFLOP per frame and step)."""
    channels = int(getattr(unet.config, "model_channels", 128))
    blocks = int(getattr(unet.config, "num_res_blocks", 2))
    gflop = 157.0 * (channels / 128) ** 2 * (blocks + 1) / 3  # the paper model is 157 GFLOP per frame
    return max(COMPILE_SECONDS_MIN, COMPILE_SECONDS_PER_GFLOP_CPU * gflop)


def is_compiled(pipe) -> bool:
    """Whether ``compile_pipeline`` has been applied to ``pipe``."""
    return getattr(pipe, "compiled_unet", None) is not None


def compile_pipeline(pipe, notify=None):
    """Make ``pipe`` denoise through ``torch.compile(pipe.unet)``; idempotent (a second call does nothing).

    On the CPU the inductor freezes the weights (constant folding, oneDNN weight prepacking). The compile
    itself runs on the first denoising call; ``notify(message)`` (default: the log) is told how long it is
    expected to take. Batches are padded to the pipeline's batch size so one graph serves every batch.
    Returns ``pipe``.
    """
    if is_compiled(pipe):
        return pipe
    inductor_cache_dir()
    unet = pipe.unet
    device = unet.device.type
    if device == "cpu":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    seconds = expected_compile_seconds(unet) if device == "cpu" else 60.0
    message = (f"compiling the model with torch.compile (once per process; about {seconds / 60:.0f} min on a "
               f"small CPU the first time, less with a warm cache in {inductor_cache_dir()})")
    (notify or logger.warning)(message)
    pipe.compiled_unet = torch.compile(unet, dynamic=False)
    pipe.compile_notice = message
    return pipe

