"""The training options against the copy shortcut (a model that copies the reference's mouth and ignores its
audio): each reaches the data, the loss or the optimiser as its flag says, the defaults are today's training,
and a run with all of them resumes exactly. Tiny models at 32 px on one short shared clip."""

import json

import numpy as np
import pytest
import torch

from conftest import prepare_train_clips

TRAIN_CLIP = "train_21_lipnet_bbaf2n"  # 75 frames, one speaker
TINY = ["--image-size", "32", "--model-channels", "32", "--channel-mult", "1,2", "--num-res-blocks", "1",
        "--attention-resolutions", "16", "--num-head-channels", "32"]
TINY_CONFIG = dict(image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
                   num_head_channels=32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return prepare_train_clips(tmp_path_factory, (TRAIN_CLIP,), "--val-fraction", "0")


def window_distance(ds, i: int, frame: int) -> int:
    """Frames between ``frame`` and sample ``i``'s window (1: next to it, <= 0: inside)."""
    _, start = ds.window(i)
    return max(start - frame, frame - (start + ds.num_frames - 1))


def paper_reference(ds, i: int) -> int:
    """The reference rule before --reference-min-distance: any valid frame outside the window."""
    clip, start = ds.window(i)
    frames = ds._valid_frames[clip]
    outside = frames[(frames < start) | (frames >= start + ds.num_frames)]
    return int(outside[np.random.default_rng([ds.seed, ds.epoch, int(i)]).integers(len(outside))])


# ----------------------------------------------------------------------------------------------------
# --reference-min-distance
# ----------------------------------------------------------------------------------------------------


def test_reference_is_drawn_at_least_n_frames_from_the_window(dataset):
    from lipsync.training.data import Diff2LipDataset

    plain = Diff2LipDataset(dataset, "train", image_size=32, seed=3)
    far = Diff2LipDataset(dataset, "train", image_size=32, seed=3, reference_min_distance=25)
    assert all(plain.reference_index(i) == paper_reference(plain, i) for i in range(len(plain)))  # default: as before
    far_refs = [far.reference_index(i) for i in range(len(far))]
    assert min(window_distance(far, i, r) for i, r in enumerate(far_refs)) >= 25
    plain_refs = [plain.reference_index(i) for i in range(len(plain))]
    assert min(window_distance(plain, i, r) for i, r in enumerate(plain_refs)) < 25  # the option changed something
    sample = far[7]
    assert torch.equal(sample["reference"], far._to_tensor(far.clip_arrays(0).faces[far_refs[7]:far_refs[7] + 1])[0])

    # no frame that far (a 75-frame clip): one of the farthest valid frames, still outside the window
    unreachable = Diff2LipDataset(dataset, "train", image_size=32, seed=3, reference_min_distance=1000)
    for i in range(0, len(unreachable), 9):
        clip, _ = unreachable.window(i)
        best = max(window_distance(unreachable, i, int(f)) for f in unreachable._valid_frames[clip])
        assert window_distance(unreachable, i, unreachable.reference_index(i)) == best >= 1


# ----------------------------------------------------------------------------------------------------
# --reference-augment
# ----------------------------------------------------------------------------------------------------


def test_reference_augment_jitters_a_seeded_fraction_of_the_references():
    from lipsync.training.augment import augment_references

    torch.manual_seed(0)
    refs = torch.nn.functional.interpolate(torch.rand(64, 3, 4, 4) * 1.6 - 0.8, size=32, mode="bilinear")  # smooth
    out = augment_references(refs, 5, list(range(100, 164)), 7, 0.5)
    changed = (out - refs).flatten(1).abs().amax(dim=1) > 0
    assert 16 <= int(changed.sum()) <= 48  # about half
    assert torch.equal(out[~changed], refs[~changed])
    assert out.min() >= -1 and out.max() <= 1
    assert float((out[changed] - refs[changed]).abs().mean()) < 0.15  # a jitter, not another image
    again = augment_references(refs, 5, list(range(100, 164)), 7, 0.5)
    assert torch.equal(out, again)  # a function of (seed, g, step): a resumed run draws the same
    part = augment_references(refs[10:20], 5, list(range(110, 120)), 7, 0.5)
    assert torch.equal(part, out[10:20])  # per sample: any split of the batch draws the same
    assert not torch.equal(augment_references(refs, 5, list(range(100, 164)), 8, 0.5), out)  # another step
    assert augment_references(refs, 5, list(range(64)), 7, 0.0) is refs  # default: untouched
    assert augment_references(refs, 5, list(range(64)), -1, 1.0) is refs  # validation's fixed draw: untouched
    every = augment_references(refs, 5, list(range(64)), 7, 1.0)
    assert bool(((every - refs).flatten(1).abs().amax(dim=1) > 0).all())


# ----------------------------------------------------------------------------------------------------
# --no-x0-clip and --audio-lr-scale, on a trainer set up in this process
# ----------------------------------------------------------------------------------------------------


def fake_batch(b: int = 2, size: int = 32, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"faces": torch.rand(b, 5, 3, size, size, generator=gen) * 2 - 1,
            "reference": torch.rand(b, 3, size, size, generator=gen) * 2 - 1,
            "mels": torch.randn(b, 5, 80, 16, generator=gen), "index": torch.arange(b)}


def set_up(tmp_path, **options):
    from lipsync.training.config import TrainConfig
    from lipsync.training.trainer import Trainer

    torch.set_num_threads(1)
    config = TrainConfig(data="unused", output=str(tmp_path / "run"), batch_size=2, validate_every=0,
                         checkpoint_every=0, progress=False, cpu=True, **TINY_CONFIG, **options)
    trainer = Trainer(config, train_dataset=[fake_batch(1)] * 4)
    parts, _, _, _ = trainer.setup()
    return trainer, parts


class ConstantOutput(torch.nn.Module):
    """A "UNet" whose output is one parameter: its gradient is the loss's gradient w.r.t. [ε̂, v]."""

    def __init__(self, n: int, size: int, value: float):
        super().__init__()
        self.out = torch.nn.Parameter(torch.full((n, 6, size, size), value))

    def forward(self, x_t, t, **kwargs):
        return type("Output", (), {"sample": self.out})()


@pytest.mark.parametrize("clip", [True, False])
def test_without_x0_clipping_l2_has_a_gradient_where_x0_is_out_of_range(tmp_path, clip):
    from lipsync.training.step import step_inputs

    trainer, parts = set_up(tmp_path, preset="simple", loss_weights={"simple": 0.0, "vlb": 0.0, "l2": 1.0},
                            x0_clip=clip)
    batch = fake_batch()
    model = ConstantOutput(10, 32, 2.0)  # ε̂ = 2: x̂0 far out of [-1, 1] at most t
    terms, _, _ = trainer.losses(model, batch, 0, parts.mask)
    terms["loss"].backward()
    grad = model.out.grad[:, :3, 16:]  # ε̂ channels, the generated lower half
    inputs = step_inputs(trainer.config, trainer.schedule, batch, 0, parts.mask, "cpu")
    x0_hat = trainer.schedule.predict_x0(inputs.x_t, inputs.t, model.out[:, :3].detach())[:, :, 16:]
    outside = x0_hat.abs() > 1
    assert 0.2 < float(outside.float().mean()) < 1  # the case this option is about
    if clip:
        assert float(grad[outside].abs().max()) == 0.0  # clamp: no gradient where x̂0 is out of range
    else:
        assert bool((grad[outside] != 0).all())
    assert float(grad[~outside].abs().min()) > 0  # in range both give a gradient


def test_audio_encoder_gets_its_own_learning_rate(tmp_path):
    from lipsync.training.step import train_step

    trainer, parts = set_up(tmp_path, audio_lr_scale=10.0, lr=1e-3, lr_warmup_steps=4)
    groups = parts.optimizer.param_groups
    assert len(groups) == 2
    names = {id(p): n for n, p in parts.unet.named_parameters()}
    audio = [names[id(p)] for p in groups[1]["params"]]
    assert audio and all(n.startswith("audio_encoder") for n in audio)
    assert any(n.startswith("audio_encoder_to_style") for n in audio)
    assert not any(names[id(p)].startswith("audio_encoder") for p in groups[0]["params"])
    assert len(audio) + len(groups[0]["params"]) == len(list(parts.unet.parameters()))
    from lipsync.training.step import adamw_kernels

    assert all(g["fused"] == adamw_kernels("cpu")["fused"] for g in groups)
    with torch.no_grad():  # the zero-initialised layers get weights, so that every parameter has a gradient
        for p in parts.unet.parameters():
            if not bool(p.any()):
                p.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(p.numel()))
    before = {n: p.detach().clone() for n, p in parts.unet.named_parameters()}
    train_step(trainer, parts, iter([fake_batch()]), 0)
    # Adam's first step moves every element with a gradient by its group's lr (here the warm-up's lr / 4)
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in parts.unet.named_parameters()}
    assert max(v for n, v in moved.items() if n.startswith("audio_encoder")) == pytest.approx(1e-2 / 4, rel=1e-3)
    assert max(v for n, v in moved.items() if not n.startswith("audio_encoder")) == pytest.approx(1e-3 / 4, rel=1e-3)
    assert moved["audio_encoder_to_style.3.weight"] == pytest.approx(1e-2 / 4, rel=1e-3)
    assert groups[0]["lr"] == pytest.approx(1e-3 * 2 / 4) and groups[1]["lr"] == pytest.approx(1e-2 * 2 / 4)


def test_defaults_are_the_paper_training(tmp_path):
    from lipsync.train import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--data", "d", "--output", "o"]))
    assert (config.reference_min_distance, config.reference_augment, config.x0_clip, config.audio_lr_scale) == \
        (0, 0.0, True, 1.0)
    trainer, parts = set_up(tmp_path)
    assert len(parts.optimizer.param_groups) == 1
    assert len(parts.optimizer.param_groups[0]["params"]) == len(list(parts.unet.parameters()))
    options = config_from_args(build_parser().parse_args(
        ["--data", "d", "--output", "o", "--no-x0-clip", "--reference-min-distance", "25", "--reference-augment",
         "0.5", "--audio-lr-scale", "10"]))
    assert (options.reference_min_distance, options.reference_augment, options.x0_clip, options.audio_lr_scale) == \
        (25, 0.5, False, 10.0)


@pytest.mark.parametrize("flag,value", [("--reference-min-distance", "-1"), ("--reference-augment", "1.5"),
                                        ("--audio-lr-scale", "0")])
def test_bad_values_are_clear_errors(dataset, tmp_path, capsys, flag, value):
    from lipsync.train import main

    assert main(["--data", str(dataset), "--output", str(tmp_path / "run"), *TINY, flag, value, "--quiet"]) == 1
    assert flag in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# A run with every option: recorded, and resumed exactly
# ----------------------------------------------------------------------------------------------------


def test_a_run_with_every_option_records_them_and_resumes_exactly(dataset, tmp_path, capsys):
    from safetensors.torch import load_file

    from lipsync.train import build_parser, config_from_args, main
    from lipsync.training import trainer as trainer_module

    options = ["--reference-min-distance", "20", "--reference-augment", "0.5", "--no-x0-clip", "--audio-lr-scale",
               "10", "--lambda-l2", "1", "--audio-dropout", "0.2"]

    def args(run):
        return ["--data", str(dataset), "--output", str(run), *TINY, *options, "--batch-size", "2", "--max-steps",
                "4", "--checkpoint-every", "2", "--validate-every", "0", "--lr", "1e-3", "--lr-warmup-steps", "3",
                "--ema-decay", "0.9", "--keep-checkpoints", "0", "--quiet"]

    torch.set_num_threads(1)
    whole = tmp_path / "whole"
    assert main(args(whole)) == 0
    recorded = json.loads((whole / "run_config.json").read_text())["train"]
    assert (recorded["reference_min_distance"], recorded["reference_augment"], recorded["x0_clip"],
            recorded["audio_lr_scale"]) == (20, 0.5, False, 10.0)

    class Interrupted(trainer_module.Trainer):
        def losses(self, model, batch, step, mask, disc_model=None):
            if step == 3:
                raise KeyboardInterrupt
            return super().losses(model, batch, step, mask, disc_model)

    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        Interrupted(config_from_args(build_parser().parse_args(args(resumed)))).run()
    assert main(args(resumed) + ["--resume"]) == 0
    for sub in ("unet", "ema"):
        a = load_file(str(whole / "checkpoints/step_000004" / sub / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(resumed / "checkpoints/step_000004" / sub / "diffusion_pytorch_model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(resumed / "checkpoints/step_000004/optimizer.pt", weights_only=True)
    assert len(state["param_groups"]) == 2
    assert state["param_groups"][1]["lr"] == pytest.approx(10 * state["param_groups"][0]["lr"])

    # a resume with another --audio-lr-scale (another group layout) says which flag to fix
    capsys.readouterr()
    assert main(args(resumed) + ["--resume", str(resumed / "checkpoints/step_000002"), "--audio-lr-scale", "1"]) == 1
    assert "--audio-lr-scale" in capsys.readouterr().err
