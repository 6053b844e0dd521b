"""Fast paths for the UNet: precision choice, memory layout, and ``torch.compile`` (cached).

* ``fast_bf16_cpu()``: whether this CPU has bf16 instructions (AMX or AVX512-BF16), detected at run time.
* ``cpu_bf16_speedup(unet)``: how much faster the model runs in bf16 than in fp32 on this CPU, timed once on a
  batch of 2 and cached per CPU model, torch version, thread count and model size.
* ``default_dtype(device)``: bf16 on GPUs with bf16 and on CPUs where it is measured faster (AMX: about 2x;
  AVX512-BF16 without AMX is not faster), else fp16 on older GPUs and fp32 on CPUs. The log says which and why.
  fp32 stays the paper-exact reference path.
* ``prepare_unet(unet)``: channels_last weights for bf16 on the CPU, so oneDNN reads them in its layout.
* ``compile_pays_off(device, frames, steps)``: whether a job compiles by default (on a GPU, clips long enough to
  repay the compile time).
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


BF16_MIN_SPEEDUP = 1.2  # bf16 is chosen on a CPU only when measured at least this much faster than fp32
_speedups: dict = {}  # this process's measurement per thread count


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _time_convs(dtype: torch.dtype, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of a small stack like the UNet's residual blocks (3x3 convs, GroupNorm, SiLU)."""
    import time

    torch.manual_seed(0)
    layers = torch.nn.Sequential(*[m for _ in range(3) for m in (torch.nn.Conv2d(128, 128, 3, padding=1),
                                                                  torch.nn.GroupNorm(32, 128), torch.nn.SiLU())])
    x = torch.randn(8, 128, 32, 32)
    layers, x = layers.to(dtype), x.to(dtype)
    if dtype == torch.bfloat16:
        layers, x = layers.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    best = float("inf")
    with torch.no_grad():
        layers(x)  # warm-up: oneDNN picks and caches its kernels
        for _ in range(repeats):
            start = time.perf_counter()
            layers(x)
            best = min(best, time.perf_counter() - start)
    return best


def _time_unet(unet, dtype: torch.dtype, repeats: int = 2) -> float:
    """Best-of-``repeats`` seconds of one forward of a copy of ``unet`` in ``dtype`` on a batch of 2 frames."""
    import copy
    import time

    model = copy.deepcopy(unet).to(dtype).eval()
    prepare_unet(model)
    size = int(getattr(unet.config, "image_size", 128))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=g).to(dtype)
    mask = torch.ones(2, 1, size, size, dtype=dtype)
    audio = torch.randn(2, 80, 16, generator=g)
    best = float("inf")
    with torch.no_grad():
        for i in range(repeats + 1):  # the first call is a warm-up (oneDNN picks its kernels)
            start = time.perf_counter()
            model(x, torch.full((2,), 500), cond_image=x, mask=mask, reference=x, audio=audio)
            if i:
                best = min(best, time.perf_counter() - start)
    return best


def cpu_bf16_speedup(unet=None, refresh: bool = False) -> float:
    """fp32 time / bf16 time of ``unet`` on this CPU (of a small convolution stack without a model); 0 without
    bf16 instructions.

    Measured once and cached in ``~/.cache/lipsync/cpu_bf16.json`` per CPU model, torch version, thread count and
    model size, so later processes read it back. Bf16 instructions alone do not make bf16 faster: on a CPU with
    AVX512-BF16 but no AMX, a small model ran at half its fp32 speed (element-wise work converts back and forth).
    """
    if not fast_bf16_cpu():
        return 0.0
    import json

    model = "conv stack"
    if unet is not None:
        config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_") and k != "audio_dropout"}
        model = json.dumps(config, sort_keys=True, default=str)
    key = f"{_cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {model}"
    if key in _speedups and not refresh:
        return _speedups[key]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lipsync" / "cpu_bf16.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known and not refresh:
        _speedups[key] = float(known[key])
        return _speedups[key]
    if unet is not None:
        logger.info("timing the model in fp32 and bf16 on this CPU once, to pick the faster (cached)")
        speedup = _time_unet(unet, torch.float32) / _time_unet(unet, torch.bfloat16)
    else:
        speedup = _time_convs(torch.float32) / _time_convs(torch.bfloat16)
    _speedups[key] = known[key] = round(speedup, 3)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, cache)
    except OSError:  # a read-only home: measure again next time
        pass
    return _speedups[key]


_announced: set = set()


def default_dtype(device: str, unet=None) -> torch.dtype:
    """bf16 on GPUs that support it, fp16 on other GPUs; on a CPU bf16 only where ``unet`` (or, without one, a
    small convolution stack) is measured at least ``BF16_MIN_SPEEDUP`` times faster than in fp32
    (:func:`cpu_bf16_speedup`), else fp32. Logs the choice once."""
    if str(device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    speedup = cpu_bf16_speedup(unet)
    dtype = torch.bfloat16 if speedup >= BF16_MIN_SPEEDUP else torch.float32
    if not speedup:
        reason = "fp32 (the paper-exact path): this CPU has no bf16 instructions"
    elif dtype == torch.bfloat16:
        reason = f"bf16: measured {speedup:.2f}x faster than fp32 on this CPU (--dtype fp32 for the exact path)"
    else:
        reason = (f"fp32 (the paper-exact path): bf16 measured {speedup:.2f}x the fp32 speed on this CPU, "
                  f"not worth the precision (bf16 is chosen from {BF16_MIN_SPEEDUP}x)")
    if reason not in _announced:
        _announced.add(reason)
        logger.info("precision on the CPU: %s", reason)
    return dtype


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


# Measured on one H200 (issue 17), the paper UNet in bf16 at batch 128, 25 DDIM steps: 37.5 fps eager, 65.5 fps
# compiled, the compile itself 60 s (20 s from a warm on-disk cache). Per frame and step that saves
# 1 / (37.5 * 25) - 1 / (65.5 * 25) = 0.46 ms, so a cold compile is repaid after about 131,000 frame-steps:
# 5,300 frames (3.5 min at 25 fps) at 25 steps. Smaller models save less per step but also compile faster.
GPU_EAGER_FPS, GPU_COMPILED_FPS, GPU_FPS_STEPS = 37.5, 65.5, 25
GPU_COMPILE_SECONDS = 60.0


def compile_pays_off(device, frames: int, steps: int, compile_seconds: float = GPU_COMPILE_SECONDS) -> bool:
    """Whether ``torch.compile`` repays its compile time on a job of ``frames`` faces x ``steps`` model calls.

    Only on a GPU (on a CPU a first compile takes minutes and is asked for with ``--compile``). The saving per
    frame-step is the measured eager vs compiled speed of the paper model on an H200 (``GPU_*`` above); the
    compile is repaid when ``frames * steps`` saved steps add up to more than ``compile_seconds``.
    """
    if not str(device).startswith("cuda"):
        return False
    saved = 1 / (GPU_EAGER_FPS * GPU_FPS_STEPS) - 1 / (GPU_COMPILED_FPS * GPU_FPS_STEPS)  # s per frame-step
    return int(frames) * int(steps) * saved > compile_seconds


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

