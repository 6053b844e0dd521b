"""How fast the trainer's step is against the forward of the same batch, on any device, in one run.

    python benchmarks/train_speed.py [--model small64|paper|tiny] [--batch 4] [--preset simple] [--steps 3]
        [--device cpu|cuda] [--mixed-precision bf16] [--compile] [--threads N] [--optimizers] [--json OUT]

It builds the run with the trainer's own code (``Trainer.setup``) on random data of the model's size and times
``lipsync.training.step.train_step``, the step ``python -m lipsync.train`` runs, against ``unet_forward`` on the
same batch (the UNet alone, without gradients, and with them as in training). Forward and step are timed in
turn and their medians compared, so that a shared machine's load moves both alike. Printed: the forward time,
the step time, step ÷ forward, samples/s, and a ``torch.profiler`` table of one step (its phases and ops).
``--optimizers`` also times AdamW's for-loop, foreach and fused kernels on the model's parameters.

The random LPIPS / lip-sync expert / discriminator of the other presets cost what the released ones cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

SMALL64_CONFIG = SHARED / "models" / "small64_h200" / "unet" / "config.json"
MODELS = {  # the size flags of python -m lipsync.train
    "tiny": dict(image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
                 num_head_channels=32),
    "small64": dict(image_size=64, model_channels=64, channel_mult=(1, 2, 2, 4), num_res_blocks=1,
                    attention_resolutions=(16, 8), num_head_channels=32),  # ../shared/models/small64_h200
    "paper": {},  # the paper's 128 px UNet
}


def model_sizes(name: str) -> Dict:
    """The TrainConfig size fields of a model name (small64: read from the shared model when present)."""
    sizes = dict(MODELS[name])
    if name == "small64" and SMALL64_CONFIG.is_file():
        config = json.loads(SMALL64_CONFIG.read_text())
        sizes = {k: (tuple(config[k]) if isinstance(config[k], list) else config[k]) for k in sizes}
    return sizes


def random_samples(n: int, image_size: int, seed: int = 0) -> List[Dict[str, torch.Tensor]]:
    """Samples shaped like Diff2LipDataset's: faces (5, 3, S, S) and reference in [-1, 1], mels (5, 80, 16)."""
    g = torch.Generator().manual_seed(seed)
    s = image_size
    return [{"faces": torch.rand(5, 3, s, s, generator=g) * 2 - 1, "reference": torch.rand(3, s, s, generator=g) * 2 - 1,
             "mels": torch.randn(5, 80, 16, generator=g) - 4, "sync_mel": torch.randn(1, 80, 16, generator=g) - 4}
            for _ in range(n)]


def loss_network_files(folder: Path) -> Dict[str, str]:
    """Random-weight LPIPS and lip-sync expert files in the released layouts (the TrainConfig fields)."""
    from lipsync.training.lpips import LPIPS
    from lipsync.training.sync_expert import SyncNetColor

    torch.manual_seed(0)
    lpips = LPIPS()
    torch.save({k[len("net."):]: v for k, v in lpips.state_dict().items() if k.startswith("net.")}, folder / "vgg16.pth")
    torch.save(lpips.heads_state_dict(), folder / "heads.pth")
    torch.save({"state_dict": SyncNetColor().state_dict()}, folder / "lipsync_expert.pth")
    return {"lpips_vgg": str(folder / "vgg16.pth"), "lpips_heads": str(folder / "heads.pth"),
            "sync_expert": str(folder / "lipsync_expert.pth")}


def build(args, folder: Path):
    """(trainer, parts, one collated batch) of the run the arguments describe."""
    from torch.utils.data import default_collate

    from lipsync.training.config import TrainConfig
    from lipsync.training.trainer import Trainer

    sizes = model_sizes(args.model)
    size = sizes.get("image_size", 128)
    config = TrainConfig(data="random", output=str(folder / "run"), preset=args.preset, batch_size=args.batch,
                         mixed_precision=args.mixed_precision, cpu=args.device == "cpu", compile=args.compile,
                         validate_every=0, checkpoint_every=0, progress=False, seed=0,
                         **(loss_network_files(folder) if args.preset != "simple" else {}), **sizes)
    samples = random_samples(args.batch, size)
    trainer = Trainer(config, train_dataset=samples)
    parts, _, _, _ = trainer.setup()
    batch = default_collate([{**smp, "index": i} for i, smp in enumerate(samples)])
    return trainer, parts, batch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def measure(trainer, parts, batch, steps: int) -> Dict:
    """Medians of the no-grad forward, the training forward and the full step, timed in turn."""
    from lipsync.training.step import step_inputs, train_step, unet_forward

    device = parts.accelerator.device
    inputs = step_inputs(trainer.config, trainer.schedule, batch, 0, parts.mask, device)
    batches = iter(lambda: batch, None)  # the same batch for ever

    def forward_no_grad():
        with torch.no_grad():
            unet_forward(parts.accelerator, parts.model, inputs, parts.mask)

    def forward_grad():
        unet_forward(parts.accelerator, parts.model, inputs, parts.mask).sum()  # activations kept, then freed

    first = timed(lambda: train_step(trainer, parts, batches, 0), device)  # compiles with --compile
    timed(forward_no_grad, device)
    times: Dict[str, List[float]] = {"forward": [], "forward_grad": [], "step": []}
    for i in range(steps):
        times["forward"].append(timed(forward_no_grad, device))
        times["forward_grad"].append(timed(forward_grad, device))
        times["step"].append(timed(lambda: train_step(trainer, parts, batches, i + 1), device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"first_step_s": first, "forward_s": med["forward"], "forward_grad_s": med["forward_grad"],
            "step_s": med["step"], "step_over_forward": med["step"] / med["forward"],
            "step_over_forward_grad": med["step"] / med["forward_grad"],
            "samples_per_s": trainer.config.batch_size / med["step"], "times": times}


def profile_step(trainer, parts, batch, rows: int) -> str:
    """A torch.profiler table of one step, by self time: the step's phases and the ops under them."""
    from torch.profiler import ProfilerActivity, profile

    from lipsync.training.step import train_step

    device = parts.accelerator.device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        train_step(trainer, parts, iter(lambda: batch, None), 10_000)
        synchronize(device)
    total = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    averages = prof.key_averages()
    phases = [e for e in averages if e.key.startswith("step: ")]
    lines = [f"phases of the step ({total}, including what they call):"]
    for e in sorted(phases, key=lambda e: -getattr(e, total)):
        lines.append(f"  {e.key:<34s} {getattr(e, total) / 1e3:10.1f} ms")
    key = "self_" + total
    lines.append(averages.table(sort_by=key, row_limit=rows))
    return "\n".join(lines)


def optimizer_kernels(parts, repeats: int = 5) -> Dict[str, float]:
    """Seconds per AdamW step over the model's parameters (random gradients) with each implementation."""
    from lipsync.training.step import has_fused_adamw, make_adamw

    device = parts.accelerator.device
    params = [p.detach().clone().requires_grad_(True) for p in parts.params]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    kinds = {"for-loop": {"fused": False, "foreach": False}, "foreach": {"fused": False, "foreach": True}}
    if has_fused_adamw(device):
        kinds["fused"] = {"fused": True, "foreach": False}
    result = {}
    for name, kernels in kinds.items():
        opt = make_adamw(params, device, lr=1e-4, kernels=kernels)
        opt.step()
        result[name] = statistics.median(timed(opt.step, device) for _ in range(repeats))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=list(MODELS), default="small64")
    p.add_argument("--batch", type=int, default=4, help="samples of 5 frames per step")
    p.add_argument("--preset", choices=["simple", "sync", "perceptual", "full"], default="simple")
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one untimed)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet, as python -m lipsync.train --compile")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--optimizers", action="store_true", help="also time AdamW's for-loop, foreach and fused kernels")
    p.add_argument("--profile-rows", type=int, default=20, help="rows of the profiler table (0: no profile)")
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()

    with tempfile.TemporaryDirectory() as tmp:
        trainer, parts, batch = build(args, Path(tmp))
        n_params = sum(p.numel() for p in parts.params)
        result = {"model": args.model, "sizes": {k: list(v) if isinstance(v, tuple) else v
                                                  for k, v in model_sizes(args.model).items()},
                  "parameters": n_params, "batch": args.batch, "frames": args.batch * 5, "preset": args.preset,
                  "device": str(parts.accelerator.device), "mixed_precision": args.mixed_precision,
                  "compile": args.compile, "threads": torch.get_num_threads(), "torch": torch.__version__}
        print(f"{args.model}: {n_params / 1e6:.2f} M parameters; batch {args.batch} x 5 frames; preset {args.preset}; "
              f"{result['device']} ({result['threads']} threads), {args.mixed_precision}"
              f"{', compiled' if args.compile else ''}", flush=True)
        result.update(measure(trainer, parts, batch, args.steps))
        print(f"first step (warm-up{', compiling' if args.compile else ''}): {result['first_step_s']:.3f} s\n"
              f"forward of the batch: {result['forward_s'] * 1e3:.1f} ms without gradients, "
              f"{result['forward_grad_s'] * 1e3:.1f} ms with them\n"
              f"full step:            {result['step_s'] * 1e3:.1f} ms = {result['step_over_forward']:.2f} x forward "
              f"({result['step_over_forward_grad']:.2f} x the training forward)\n"
              f"samples/s:            {result['samples_per_s']:.2f}", flush=True)
        if args.optimizers:
            result["adamw_step_s"] = optimizer_kernels(parts)
            print("AdamW step: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in result["adamw_step_s"].items()))
        if args.profile_rows > 0:
            result["profile"] = profile_step(trainer, parts, batch, args.profile_rows)
            print(result["profile"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
