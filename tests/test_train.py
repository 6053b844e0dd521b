"""The trainer: it learns, 2 processes equal 1, a resumed run equals an uninterrupted one, its output is what
the CLI takes, and bad runs fail with clear messages. Tiny models at 32 px on two short shared clips."""

import csv
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, prepare_train_clips

TRAIN_CLIP = "train_21_lipnet_bbaf2n"  # 75 frames, 3 s, one speaker
VAL_CLIP = "train_22_lipnet_brbk7n"
TINY = ["--image-size", "32", "--model-channels", "32", "--channel-mult", "1,2", "--num-res-blocks", "1",
        "--attention-resolutions", "16", "--num-head-channels", "32"]
TINY_CONFIG = dict(image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
                   num_head_channels=32)
RUN_STEPS = 4
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def loss_rows(run: Path) -> list:
    """losses.csv without the wall-clock columns."""
    with open(run / "losses.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("steps_per_s", "seconds")} for row in csv.DictReader(f)]


def train(*args) -> int:
    """python -m lipsync.train in this process (one thread)."""
    from lipsync.train import main

    torch.set_num_threads(1)
    return main([*map(str, args)])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two shared clips prepared by python -m lipsync.prepare (OpenCV detector): one train, one val."""
    return prepare_train_clips(tmp_path_factory, (TRAIN_CLIP, VAL_CLIP), "--val-clips", VAL_CLIP)


@pytest.fixture(scope="module")
def tiny_run(dataset, tmp_path_factory):
    """An uninterrupted 4-step run (global batch 2), checkpoints at 2 and 4, validation at 2 and 4."""
    run = tmp_path_factory.mktemp("run") / "run"
    assert train("--data", dataset, "--output", run, *TINY, "--batch-size", 2, "--max-steps", RUN_STEPS,
                 "--checkpoint-every", 2, "--validate-every", 2, "--val-samples", 4, "--val-grid", 2,
                 "--val-sampling-steps", 2, "--lr", 1e-4, "--ema-decay", 0.9, "--keep-checkpoints", 0,
                 "--quiet") == 0
    return run


# ----------------------------------------------------------------------------------------------------
# It learns
# ----------------------------------------------------------------------------------------------------


def lower_half_psnr(pipe, samples) -> float:
    from lipsync.scoring.metrics import psnr
    from lipsync.training.reporting import to_uint8_hwc

    faces = torch.cat([s["faces"] for s in samples])  # (N, 3, S, S) in [-1, 1]
    refs = torch.stack([s["reference"] for s in samples for _ in range(len(s["faces"]))])
    mels = torch.cat([s["mels"] for s in samples])
    out = pipe(faces=(faces + 1) / 2, reference_faces=(refs + 1) / 2, mels=mels, num_inference_steps=10,
               generator=torch.Generator().manual_seed(7), batch_size=len(faces), progress_bar=False)
    top = faces.shape[-1] // 2
    return psnr(to_uint8_hwc(faces)[:, top:], to_uint8_hwc(out.frames * 2 - 1)[:, top:])


def test_tiny_model_overfits_a_few_frames(dataset, tmp_path):
    from lipsync import load_pipeline
    from lipsync.model.pipeline import Diff2LipPipeline, default_scheduler
    from lipsync.training.data import Diff2LipDataset
    from lipsync.training.trainer import Trainer
    from lipsync.training.config import TrainConfig, build_unet, init_like_guided_diffusion

    torch.set_num_threads(1)
    few = torch.utils.data.Subset(Diff2LipDataset(dataset, "train", image_size=32, seed=0), [10, 40])  # 10 frames
    config = TrainConfig(data=str(dataset), output=str(tmp_path / "run"), batch_size=2, max_steps=60, lr=2e-3,
                         ema_decay=0.8, validate_every=0, checkpoint_every=0, progress=False, seed=0, **TINY_CONFIG)
    final = Trainer(config, train_dataset=few).run()

    simple = [float(r["simple"]) for r in loss_rows(tmp_path / "run")]
    assert len(simple) == 60
    first, last = np.mean(simple[:3]), np.mean(simple[-10:])
    assert first > 0.8  # the guided-diffusion init predicts ε̂ = 0: L_simple starts at E[ε²] = 1
    assert first / last >= 5, (first, last)

    torch.manual_seed(0)
    untrained = build_unet({**TINY_CONFIG, "image_size": 32})
    init_like_guided_diffusion(untrained)
    before = lower_half_psnr(Diff2LipPipeline(unet=untrained.eval(), scheduler=default_scheduler()), list(few))
    after = lower_half_psnr(load_pipeline(final, device="cpu"), list(few))
    print(f"L_simple {first:.3f} -> {last:.3f}; sampled lower-half PSNR {before:.2f} -> {after:.2f} dB")
    assert after > before + 3, (before, after)


# ----------------------------------------------------------------------------------------------------
# Runs are reproducible: 2 processes = 1 process; resumed = uninterrupted
# ----------------------------------------------------------------------------------------------------


def test_sampler_splits_a_global_batch_the_same_way_for_any_layout():
    from lipsync.training.sampling import BatchLayout, GlobalOrder, draw_noise

    layouts = [BatchLayout(4, 1, 1), BatchLayout(2, 2, 1), BatchLayout(1, 2, 2), BatchLayout(1, 1, 4)]
    for step in range(3):
        sets = [sorted(g for a in range(lay.grad_accum) for r in range(lay.num_processes)
                       for g in lay.indices(step, a, r)) for lay in layouts]
        assert all(s == list(range(4 * step, 4 * step + 4)) for s in sets)
    order = GlobalOrder(7, seed=3)
    assert sorted(order.item(g) for g in range(7)) == list(range(7))  # every item once per epoch
    assert [order.item(g) for g in range(7, 14)] != [order.item(g) for g in range(7)]  # a new order per epoch
    t1, n1, c1 = draw_noise(0, [5, 6], 3, 5, 8, 1000)
    t2, n2, c2 = draw_noise(0, [6], 3, 5, 8, 1000)
    assert torch.equal(t1[5:], t2) and torch.equal(n1[5:], n2) and torch.equal(c1[5:], c2)  # per sample
    assert t1.shape == (10,) and n1.shape == (10, 3, 8, 8) and not torch.equal(n1, c1)
    assert not torch.equal(draw_noise(0, [6], 4, 5, 8, 1000)[1], n2)  # another step, other noise


def test_tiny_run_writes_logs_checkpoints_grids(tiny_run):
    assert len(loss_rows(tiny_run)) == RUN_STEPS
    with open(tiny_run / "validation.csv", newline="") as f:
        val = list(csv.DictReader(f))
    assert [int(r["step"]) for r in val] == [2, 4] and all(float(r["simple"]) > 0 for r in val)
    assert all(float(r["audio_dep"]) >= 0 for r in val)  # the one-step audio dependence at t = 300
    for step in (2, 4):
        assert (tiny_run / "validation" / f"step_{step:06d}.png").is_file()
        folder = tiny_run / "checkpoints" / f"step_{step:06d}"
        assert {"unet", "ema", "optimizer.pt", "rng_state_0.pt", "training_state.json"} <= {p.name for p in folder.iterdir()}
    state = json.loads((tiny_run / "checkpoints" / "step_000004" / "training_state.json").read_text())
    assert state["step"] == 4 and state["samples"] == 8 and state["ema_num_updates"] == 4
    assert not list(tiny_run.glob("**/*.tmp"))


def test_interrupted_and_resumed_run_is_bit_identical(dataset, tiny_run, tmp_path):
    from lipsync.training import trainer as trainer_module
    from lipsync.train import build_parser, config_from_args

    run = tmp_path / "run"
    args = ["--data", str(dataset), "--output", str(run), *TINY, "--batch-size", "2", "--max-steps", str(RUN_STEPS),
            "--checkpoint-every", "2", "--validate-every", "2", "--val-samples", "4", "--val-grid", "2",
            "--val-sampling-steps", "2", "--lr", "1e-4", "--ema-decay", "0.9", "--keep-checkpoints", "0", "--quiet"]

    class Interrupted(trainer_module.Trainer):
        def losses(self, model, batch, step, mask, disc_model=None):
            if step == 3:  # after the step-2 checkpoint, in the middle of the run
                raise KeyboardInterrupt
            return super().losses(model, batch, step, mask, disc_model)

    torch.set_num_threads(1)
    with pytest.raises(KeyboardInterrupt):
        Interrupted(config_from_args(build_parser().parse_args(args))).run()
    assert not (run / "final").exists()
    assert train(*args, "--resume") == 0

    for sub in ("unet", "ema"):
        assert max_difference(weights(run / "checkpoints/step_000004" / sub),
                              weights(tiny_run / "checkpoints/step_000004" / sub)) == 0.0
    assert max_difference(weights(run / "final/unet"), weights(tiny_run / "final/unet")) == 0.0
    a = torch.load(run / "checkpoints/step_000004/optimizer.pt", weights_only=True)["state"]
    b = torch.load(tiny_run / "checkpoints/step_000004/optimizer.pt", weights_only=True)["state"]
    assert all(torch.equal(a[k][n], b[k][n]) for k in a for n in ("exp_avg", "exp_avg_sq", "step"))
    assert loss_rows(run) == loss_rows(tiny_run)  # the resumed log continues where the interrupted one stopped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_end_with_the_weights_of_one(dataset, tiny_run, tmp_path):
    run = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "-m", "lipsync.train", "--cpu", "--data", str(dataset), "--output", str(run), *TINY, "--batch-size", "1",
         "--max-steps", str(RUN_STEPS), "--checkpoint-every", str(RUN_STEPS), "--validate-every", "0", "--lr", "1e-4",
         "--ema-decay", "0.9", "--threads", "1", "--quiet"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((run / "run_config.json").read_text())
    assert config["num_processes"] == 2 and config["global_batch"] == 2
    step = f"checkpoints/step_{RUN_STEPS:06d}"
    for sub in ("unet", "ema"):
        assert max_difference(weights(run / step / sub), weights(tiny_run / step / sub)) < 1e-5
    assert {"rng_state_0.pt", "rng_state_1.pt"} <= {p.name for p in (run / step).iterdir()}
    ours = [float(r["loss"]) for r in loss_rows(run)]
    theirs = [float(r["loss"]) for r in loss_rows(tiny_run)]
    assert np.allclose(ours, theirs, rtol=1e-4)  # the logged loss is the mean over both processes


def test_full_preset_trains_every_term_and_checkpoints_the_discriminator(dataset, tmp_path):
    """All five losses with random-weight LPIPS / lip-sync expert files of the released layouts."""
    from lipsync.training.lpips import LPIPS
    from lipsync.training.sync_expert import SyncNetColor

    torch.manual_seed(0)
    lpips = LPIPS()
    vgg = {k[len("net."):]: v for k, v in lpips.state_dict().items() if k.startswith("net.")}
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(lpips.heads_state_dict(), tmp_path / "heads.pth")
    torch.save({"state_dict": SyncNetColor().state_dict()}, tmp_path / "lipsync_expert.pth")
    run = tmp_path / "run"
    assert train("--data", dataset, "--output", run, *TINY, "--preset", "full", "--batch-size", 1, "--max-steps", 2,
                 "--checkpoint-every", 1, "--validate-every", 0, "--lpips-vgg", tmp_path / "vgg16.pth",
                 "--lpips-heads", tmp_path / "heads.pth", "--sync-expert", tmp_path / "lipsync_expert.pth",
                 "--quiet") == 0
    rows = loss_rows(run)
    assert len(rows) == 2
    for term in ("simple", "vlb", "l2", "lpips", "sync", "gan", "gan_d"):
        assert all(np.isfinite(float(r[term])) for r in rows), term
    weights_used = json.loads((run / "run_config.json").read_text())["loss_weights"]
    assert weights_used == {"simple": 1.0, "vlb": 1.0, "l2": 1.0, "lpips": 0.25, "sync": 0.1, "gan": 0.5}
    total = sum(weights_used[k] * float(rows[0][k]) for k in weights_used)
    assert abs(total - float(rows[0]["loss"])) < 1e-4 * max(1.0, total)
    step = run / "checkpoints" / "step_000002"
    assert (step / "discriminator.safetensors").is_file() and (step / "disc_optimizer.pt").is_file()
    # the discriminator moved: step 1 and step 2 hold different weights
    from lipsync.training.checkpointing import load_safetensors

    first, second = (load_safetensors(run / "checkpoints" / f"step_00000{i}" / "discriminator.safetensors") for i in (1, 2))
    assert max_difference(first, second) > 0


# ----------------------------------------------------------------------------------------------------
# The output is what inference takes
# ----------------------------------------------------------------------------------------------------


def test_final_folder_loads_and_lipsyncs_a_clip_through_the_cli(tiny_run, tmp_path):
    from conftest import MEDIA

    from lipsync import load_pipeline
    from lipsync.media.probe import probe_video

    final = tiny_run / "final"
    pipe = load_pipeline(final, device="cpu", dtype=torch.float32)  # fp32: the saved weights exactly
    assert pipe.unet.config.image_size == 32
    assert max_difference({k: v for k, v in pipe.unet.state_dict().items()}, weights(final / "unet")) == 0.0
    # a training checkpoint loads too (its EMA weights): the step-4 checkpoint holds the final weights
    ckpt = load_pipeline(tiny_run / "checkpoints/step_000004", device="cpu", dtype=torch.float32)
    assert max_difference(ckpt.unet.state_dict(), weights(final / "unet")) == 0.0

    clip = MEDIA / "train" / f"{TRAIN_CLIP}.mpg"
    out = tmp_path / "synced.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "lipsync", "--video", str(clip), "--audio", str(clip), "--output", str(out),
         "--checkpoint", str(final), "--detector", "opencv", "--steps", "2", "--length-policy", "shortest", "--quiet"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    frames = int(re.search(r"(\d+) frames at 25 fps", result.stdout).group(1))  # the engine's report
    info = probe_video(out)
    assert 70 <= frames <= 75 and info.num_frames == frames and (info.width, info.height) == (360, 288)
    assert info.has_audio


def test_pipeline_resizes_crops_for_a_model_of_another_size():
    from lipsync import Diff2LipUNetModel
    from lipsync.model.pipeline import Diff2LipPipeline, default_scheduler

    torch.manual_seed(0)
    unet = Diff2LipUNetModel(**TINY_CONFIG).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    pipe = Diff2LipPipeline(unet=unet, scheduler=default_scheduler())
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    mels = torch.randn(3, 80, 16)
    out = pipe(faces=crops, mels=mels, num_inference_steps=2, generator=torch.Generator().manual_seed(1),
               output_type="uint8", progress_bar=False)
    assert out.frames.shape == (3, 128, 128, 3)
    # the upper half is the input at full resolution (up to the pipeline's own u8 -> [-1, 1] -> u8 truncation)
    assert np.abs(out.frames[:, :64].astype(int) - crops[:, :64].astype(int)).max() <= 1
    # the lower half is the 32 px model's sample of the 32 px crops, scaled back up
    small = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
    small = torch.nn.functional.interpolate(small, size=(32, 32), mode="area")
    small = ((torch.round((small + 1) * 127.5)).permute(0, 2, 3, 1)).to(torch.uint8).numpy()
    at_32 = pipe(faces=small, mels=mels, num_inference_steps=2, generator=torch.Generator().manual_seed(1),
                 progress_bar=False).samples
    up = torch.nn.functional.interpolate(at_32, size=(128, 128), mode="bicubic").clamp(-1, 1)
    expected = (((up + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    assert np.abs(out.frames[:, 64:].astype(int) - expected[:, 64:].astype(int)).max() <= 1
    # noise given at the crop size (as the engine does) is taken to the model's size
    noise = torch.randn(1, 3, 128, 128)
    out2 = pipe(faces=crops, mels=mels, num_inference_steps=2, latents=noise, output_type="uint8", progress_bar=False)
    assert out2.frames.shape == (3, 128, 128, 3)


# ----------------------------------------------------------------------------------------------------
# Clear errors
# ----------------------------------------------------------------------------------------------------


def test_empty_dataset_is_a_clear_error(dataset, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["clips"] = []
    (empty / "manifest.json").write_text(json.dumps(manifest))
    assert train("--data", empty, "--output", tmp_path / "run", *TINY, "--max-steps", 1) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no clips" in err and "lipsync.prepare" in err
    assert not (tmp_path / "run" / "final").exists()


def test_init_checkpoint_that_does_not_fit_lists_the_keys(dataset, tmp_path, capsys):
    from lipsync import Diff2LipUNetModel
    from lipsync.model.pipeline import Diff2LipPipeline, default_scheduler

    other = Diff2LipUNetModel(**{**TINY_CONFIG, "channel_mult": (1, 2, 2)})
    Diff2LipPipeline(unet=other, scheduler=default_scheduler()).save_pretrained(tmp_path / "other")
    assert train("--data", dataset, "--output", tmp_path / "run", "--init", tmp_path / "other", *TINY,
                 "--max-steps", 1) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the checkpoint does not match the model to train")
    assert "unexpected keys: " in err and "input_blocks" in err and "--channel-mult" in err

    # the same checkpoint without size flags: the model takes its sizes and trains from it
    run = tmp_path / "from_other"
    assert train("--data", dataset, "--output", run, "--init", tmp_path / "other", "--max-steps", 1,
                 "--validate-every", 0, "--quiet") == 0
    assert json.loads((run / "final/unet/config.json").read_text())["channel_mult"] == [1, 2, 2]


def test_init_from_an_original_pt_and_from_a_training_checkpoint(dataset, tiny_run, tmp_path):
    # an original-layout .pt (no sizes stored): the sizes are read off the weights, --image-size says the crop size
    torch.save(weights(tiny_run / "final/unet"), tmp_path / "checkpoint.pt")
    for source, extra in ((tmp_path / "checkpoint.pt", ["--image-size", "32"]),
                          (tiny_run / "checkpoints/step_000004", [])):
        run = tmp_path / f"from_{Path(source).name}"
        assert train("--data", dataset, "--output", run, "--init", source, *extra, "--max-steps", 1, "--lr", 1e-4,
                     "--validate-every", 0, "--quiet") == 0
        config = json.loads((run / "run_config.json").read_text())["unet_config"]
        assert {k: config[k] for k in ("image_size", "model_channels", "channel_mult", "attention_resolutions")} == \
            {"image_size": 32, "model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [16]}
        trained = weights(run / "checkpoints/step_000001/unet")
        start = weights(tiny_run / "final/unet")
        assert 0 < max_difference(trained, start) < 1e-3  # one small step away from the --init weights


def test_out_of_memory_says_to_lower_the_batch_size(dataset, tmp_path, capsys, monkeypatch):
    from lipsync.training.trainer import Trainer

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(Trainer, "losses", out_of_memory)
    assert train("--data", dataset, "--output", tmp_path / "run", *TINY, "--batch-size", 3, "--max-steps", 1,
                 "--quiet") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory at step 1 with --batch-size 3") and "lower --batch-size" in err and "--grad-accum" in err
    assert not (tmp_path / "run" / "final").exists()


def test_missing_lpips_weights_name_the_flag(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert train("--data", dataset, "--output", tmp_path / "run", *TINY, "--preset", "perceptual",
                 "--lpips-vgg", tmp_path / "missing_vgg16.pth", "--max-steps", 1) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--lpips-vgg" in err
