"""Sampling speed of the paper-size model (random weights): seconds per output frame at 25 DDIM steps.

    python benchmarks/speed.py [--device cuda] [--dtype fp16] [--batch-sizes 1 8 32] [--steps 25] [--frames 32]

The official script needs about 0.5 s per frame at 25 steps on an RTX 4080 (batch 5 frames, fp16).
We batch many frames per model call, run fp16 on the GPU and use PyTorch's fused attention. On the CPU the
default measures 2 steps and reports the 25-step figure by scaling (one step costs the same as any other).
"""

import argparse
import time

import torch

from lipsync import Diff2LipPipeline, Diff2LipUNetModel
from lipsync.loading import default_device, resolve_dtype
from lipsync.pipeline_diff2lip import default_scheduler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--dtype", default=None, help="fp32, fp16, bf16 (default fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None, help="steps actually run (default 25 GPU, 2 CPU)")
    parser.add_argument("--frames", type=int, default=None)
    args = parser.parse_args()
    on_gpu = args.device.startswith("cuda")
    dtype = resolve_dtype(args.device, args.dtype)
    steps = args.steps or (25 if on_gpu else 2)
    batch_sizes = args.batch_sizes or ([5, 16, 32, 64] if on_gpu else [5])
    frames = args.frames or (max(batch_sizes) * 2 if on_gpu else 5)

    torch.manual_seed(0)
    pipe = Diff2LipPipeline(Diff2LipUNetModel().eval(), default_scheduler()).to(args.device, dtype)
    pipe.set_progress_bar_config(disable=True)
    faces = torch.randint(0, 255, (frames, 128, 128, 3), dtype=torch.uint8)
    mels = torch.randn(frames, 80, 16)
    print(f"device {args.device} ({torch.cuda.get_device_name() if on_gpu else 'CPU'}), {dtype}, "
          f"{frames} frames, {steps} steps run")
    for batch in batch_sizes:
        pipe(faces=faces[:batch], mels=mels[:batch], num_inference_steps=1, batch_size=batch)  # warm-up
        if on_gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        pipe(faces=faces, mels=mels, num_inference_steps=steps, batch_size=batch)
        if on_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        per_frame_25 = seconds / frames * 25 / steps
        peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if on_gpu else ""
        print(f"batch {batch:3d}: {per_frame_25:.3f} s per frame at 25 steps "
              f"({frames * 25 / steps / seconds:.1f} frames/s){peak}")


if __name__ == "__main__":
    main()
