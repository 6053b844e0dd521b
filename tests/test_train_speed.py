"""The fast trainer step computes what the plain one did: the EMA, AdamW from an older checkpoint, a step that
never waits for the device, --compile equal to eager, and the speed benchmark's report. Tiny models on random
data, on the CPU."""

import copy
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO

TINY = dict(image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
            num_head_channels=32)


def random_samples(n: int, size: int = 32):
    g = torch.Generator().manual_seed(0)
    return [{"faces": torch.rand(5, 3, size, size, generator=g) * 2 - 1,
             "reference": torch.rand(3, size, size, generator=g) * 2 - 1,
             "mels": torch.randn(5, 80, 16, generator=g) - 4, "sync_mel": torch.randn(1, 80, 16, generator=g) - 4}
            for _ in range(n)]


def tiny_unet():
    from lipsync.training.config import build_unet, merge_model_config, paper_unet_config

    torch.manual_seed(0)
    return build_unet(merge_model_config(paper_unet_config(), TINY))


def test_ema_update_equals_the_plain_formula():
    """shadow <- d * shadow + (1 - d) * w with the warm-up decay, over steps that move the weights."""
    from lipsync.training.ema import EMA

    model = tiny_unet()
    ema = EMA(model, decay=0.99)
    reference = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    for n in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        ema.update(model)
        d = min(0.99, (1.0 + n) / (10.0 + n))
        for k, v in model.state_dict().items():
            reference[k] = d * reference[k] + (1 - d) * v.float()
    assert ema.num_updates == 5
    worst = max(float((ema.shadow[k] - reference[k]).abs().max()) for k in reference)
    assert worst <= 1e-6, worst
    moved = max(float((ema.shadow[k] - v).abs().max()) for k, v in model.state_dict().items())
    assert moved > 0.01  # the average lags the weights: the update did something


def test_adamw_resumes_from_a_checkpoint_of_the_plain_optimizer():
    """An optimizer.pt of the for-loop AdamW (older runs) continues in this machine's kernel as the for-loop one
    would, within float rounding."""
    from lipsync.training.step import load_adamw_state, make_adamw

    torch.manual_seed(0)
    shapes = [(64, 32, 3, 3), (64,), (300, 7)]
    plain_params = [torch.randn(s, requires_grad=True) for s in shapes]
    fast_params = [p.detach().clone().requires_grad_(True) for p in plain_params]
    plain = torch.optim.AdamW(plain_params, lr=1e-2, weight_decay=0.01, foreach=False)
    grads = [[torch.randn(s) for s in shapes] for _ in range(4)]
    for p, gr in zip(plain_params, grads[0]):
        p.grad = gr.clone()
    plain.step()
    with torch.no_grad():
        for p, q in zip(fast_params, plain_params):
            p.copy_(q)
    fast = make_adamw(fast_params, "cpu", lr=1e-2, weight_decay=0.01)
    kernels = {k: fast.param_groups[0][k] for k in ("fused", "foreach")}
    load_adamw_state(fast, copy.deepcopy(plain.state_dict()))  # as read from optimizer.pt
    assert {k: fast.param_groups[0][k] for k in ("fused", "foreach")} == kernels  # not the checkpoint's
    for step_grads in grads[1:]:
        for ps in (plain_params, fast_params):
            for p, gr in zip(ps, step_grads):
                p.grad = gr.clone()
        plain.step()
        fast.step()
    worst = max(float((p - q).detach().abs().max()) for p, q in zip(plain_params, fast_params))
    assert worst <= 1e-6, worst


def build_parts(tmp_path, **overrides):
    from torch.utils.data import default_collate

    from lipsync.training.config import TrainConfig
    from lipsync.training.trainer import Trainer

    samples = random_samples(2)
    config = TrainConfig(data="random", output=str(tmp_path / "run"), batch_size=2, validate_every=0,
                         checkpoint_every=0, progress=False, cpu=True, **{**TINY, **overrides})
    trainer = Trainer(config, train_dataset=samples)
    parts = trainer.setup()[0]
    batch = default_collate([{**s, "index": i} for i, s in enumerate(samples)])
    return trainer, parts, batch


def test_noise_drawn_by_the_loader_is_the_noise_the_step_would_draw(tmp_path):
    """The loader's workers draw each sample's t and noises for its step: the step's inputs are unchanged."""
    from torch.utils.data import default_collate

    from lipsync.training.sampling import IndexedDataset, NoiseSpec
    from lipsync.training.step import step_inputs

    trainer, parts, _ = build_parts(tmp_path)
    samples = random_samples(3)
    global_batch, step = 2, 5  # global samples 10, 11 make step 5
    loaded = IndexedDataset(samples, NoiseSpec(0, global_batch, 5, 32, trainer.schedule.num_timesteps))
    with_noise = default_collate([loaded[(g, g % 3)] for g in (10, 11)])
    without = {k: v for k, v in with_noise.items() if k not in ("t", "noise", "cond_noise")}
    a = step_inputs(trainer.config, trainer.schedule, with_noise, step, parts.mask, "cpu")
    b = step_inputs(trainer.config, trainer.schedule, without, step, parts.mask, "cpu")
    for name, x, y in zip(a._fields, a, b):
        assert torch.equal(x, y), name
    other = step_inputs(trainer.config, trainer.schedule, without, step + 1, parts.mask, "cpu")
    assert not torch.equal(a.noise, other.noise)  # another step draws other noise


def test_a_step_reads_nothing_back_from_the_device(tmp_path, monkeypatch):
    """No .item(), float(), bool(), .tolist(), .cpu() or .numpy() of a computed tensor inside a step (each one
    waits for a GPU to finish); only the collated batch's sample indices, which never left the host."""
    from lipsync.training.step import train_step

    trainer, parts, batch = build_parts(tmp_path, audio_dropout=0.5, max_grad_norm=1.0)
    batches = iter(lambda: batch, None)
    train_step(trainer, parts, batches, 0)  # first use: the loss mask is checked once
    allowed = {id(v) for v in batch.values()}
    reads = []
    for name in ("item", "tolist", "numpy", "cpu", "__float__", "__bool__", "__int__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            if id(self) not in allowed and self.device.type != "meta":
                reads.append((_name, tuple(self.shape)))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    terms = train_step(trainer, parts, batches, 1)
    monkeypatch.undo()
    assert reads == []
    assert {"loss", "simple", "vlb", "grad_norm"} <= set(terms)
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in terms.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_step_never_synchronizes(tmp_path):
    from lipsync.training.step import train_step

    trainer, parts, batch = build_parts(tmp_path, cpu=False, mixed_precision="bf16")
    batches = iter(lambda: batch, None)
    train_step(trainer, parts, batches, 0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_step(trainer, parts, batches, 1)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def compiler_available() -> bool:
    try:
        import torch._inductor.config  # noqa: F401
    except ImportError:
        return False
    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not compiler_available(), reason="torch.compile on the CPU needs inductor and a C++ compiler")
def test_compiled_training_matches_eager(tmp_path):
    """python -m lipsync.train --compile: the UNet is compiled, and 2 steps log the losses eager logs (bf16
    tolerance); the second step's loss depends on the first step's gradients (lr 1e-2)."""
    import csv

    import torch._dynamo

    from lipsync.training.config import TrainConfig
    from lipsync.training.trainer import Trainer

    torch.set_num_threads(1)
    losses = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        run = tmp_path / f"run_{compiled}"
        config = TrainConfig(data="random", output=str(run), batch_size=1, max_steps=2, lr=1e-2, validate_every=0,
                             checkpoint_every=0, progress=False, cpu=True, compile=compiled, **TINY)
        Trainer(config, train_dataset=random_samples(2)).run()
        with open(run / "losses.csv", newline="") as f:
            losses[compiled] = np.array([[float(r[k]) for k in ("simple", "vlb")] for r in csv.DictReader(f)])
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert (graphs > 0) == compiled, graphs
    eager, fast = losses[False], losses[True]
    assert eager.shape == fast.shape == (2, 2)
    np.testing.assert_allclose(fast, eager, rtol=1e-2, atol=1e-4)
    assert abs(eager[1, 0] - eager[0, 0]) > 1e-2 * eager[0, 0]  # the comparison can tell the steps apart


def test_speed_benchmark_reports_forward_step_and_profile(tmp_path):
    out = tmp_path / "speed.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/train_speed.py", "--model", "tiny", "--batch", "1", "--steps", "1",
         "--device", "cpu", "--threads", "1", "--profile-rows", "5", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["model"] == "tiny" and report["frames"] == 5 and report["parameters"] > 1e6
    for key in ("forward_s", "forward_grad_s", "step_s", "samples_per_s", "step_over_forward"):
        assert np.isfinite(report[key]) and report[key] > 0, key
    assert report["step_over_forward"] == pytest.approx(report["step_s"] / report["forward_s"])
    for phase in ("step: inputs, forward, losses", "step: backward", "step: optimizer", "step: EMA"):
        assert phase in report["profile"], phase
    assert "full step:" in result.stdout and "samples/s:" in result.stdout
