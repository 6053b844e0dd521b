"""Diff2LipPipeline: DDIM parity with the paper's sampler, shared noise, outputs, scheduler swaps."""

import json

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_OVERRIDES, small_pipeline
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, UniPCMultistepScheduler

from lipsync import Diff2LipPipeline, Diff2LipUNetModel
from lipsync.model.pipeline import default_scheduler

FIGURES = json.loads((REPO / "tests" / "data" / "parity_figures.json").read_text())


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    from safetensors.torch import load_file

    unet = Diff2LipUNetModel.from_original_checkpoint(
        load_file(str(fixtures_dir / "tiny_state_dict.safetensors")), **TINY_OVERRIDES)
    pipe = Diff2LipPipeline(unet=unet, scheduler=default_scheduler())
    inputs = load_file(str(fixtures_dir / "tiny_ddim25.safetensors"))
    return pipe, inputs


@pytest.mark.parametrize("steps", [25, 10])
def test_sampling_equals_the_paper_sampler(reference, fixtures_dir, steps):
    from safetensors.torch import load_file

    pipe, inputs = reference
    expected = load_file(str(fixtures_dir / f"tiny_ddim{steps}.safetensors"))
    pipe.scheduler.set_timesteps(steps)
    assert pipe.scheduler.timesteps.tolist() == expected["timesteps_model"].tolist()
    out = pipe(faces=inputs["image_u8"], reference_faces=inputs["ref_u8"].repeat(5, 1, 1, 1),
               mels=inputs["indiv_mels"], num_inference_steps=steps,
               generator=torch.Generator().manual_seed(7), progress_bar=False)
    assert (out.samples - expected["sample"]).abs().max() <= 1e-3
    assert (out.frames * 2 - 1 - expected["recon"]).abs().max() <= 1e-3
    if steps == 25:
        assert torch.allclose(out.samples[0, :, 88:92, 56:60].double(),
                              torch.tensor(FIGURES["tiny_ddim25_sample_slice"], dtype=torch.float64), atol=1e-3)


def test_seed_7_noise_is_the_papers(fixtures_dir):
    from safetensors.torch import load_file

    noise = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(7))
    assert torch.equal(noise, load_file(str(fixtures_dir / "tiny_ddim25.safetensors"))["init_noise"])


def test_paper_timesteps_without_fixtures():
    scheduler = default_scheduler()
    scheduler.set_timesteps(25)
    assert scheduler.timesteps.tolist() == FIGURES["ddim25_timesteps"]
    scheduler.set_timesteps(10)
    assert scheduler.timesteps.tolist() == FIGURES["ddim10_timesteps"]
    noise = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(noise[0, 0, 0, :16].double(), torch.tensor(FIGURES["seed7_noise_slice"], dtype=torch.float64), atol=1e-7)


@pytest.mark.parametrize("clip", [True, False])
def test_one_scheduler_step_equals_the_papers_ddim_step(fixtures_dir, clip):
    from safetensors.torch import load_file

    algebra = load_file(str(fixtures_dir / "ddim_algebra.safetensors"))
    scheduler = DDIMSchedulerLike(clip)
    suffix = "clip" if clip else "noclip"
    for s in range(25):
        t = int(algebra["t_model"][s][0])
        step = scheduler.step(algebra["model_output"][s][:, :3], t, algebra["x_t"][s], eta=0.0,
                              use_clipped_model_output=True)
        assert (step.prev_sample - algebra[f"x_prev_{suffix}"][s]).abs().max() <= 1e-4, s
        assert (step.pred_original_sample - algebra[f"pred_xstart_{suffix}"][s]).abs().max() <= 1e-4, s


def DDIMSchedulerLike(clip):
    scheduler = type(default_scheduler()).from_config(default_scheduler().config, clip_sample=clip)
    scheduler.set_timesteps(25)
    return scheduler


def test_scheduler_step_smoke_from_copied_figures():
    """Runs anywhere: a few DDIM steps of the reference, copied into tests/data."""
    scheduler = DDIMSchedulerLike(True)
    for step in FIGURES["ddim_algebra"].values():
        x_t, eps = torch.tensor(step["x_t"]), torch.tensor(step["eps"])
        out = scheduler.step(eps, step["t"], x_t, eta=0.0, use_clipped_model_output=True)
        assert torch.allclose(out.prev_sample.double(), torch.tensor(step["x_prev_clip"], dtype=torch.float64), atol=1e-4)
        assert torch.allclose(out.pred_original_sample.double(), torch.tensor(step["pred_xstart_clip"], dtype=torch.float64), atol=1e-4)


# ---- behaviour with a small random model -----------------------------------------------------------

@pytest.fixture(scope="module")
def pipe():
    return small_pipeline()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    faces = (torch.rand(4, 128, 128, 3, generator=g) * 255).to(torch.uint8)
    mels = torch.randn(4, 80, 16, generator=g)
    return faces, mels


def test_upper_half_is_untouched_and_outputs_agree(pipe, inputs):
    faces, mels = inputs
    out = pipe(faces=faces, mels=mels, num_inference_steps=2, generator=torch.Generator().manual_seed(3))
    assert out.frames.shape == (4, 3, 128, 128) and out.frames.dtype == torch.float32
    source = faces.permute(0, 3, 1, 2).float() / 255
    assert (out.frames[:, :, :64] - source[:, :, :64]).abs().max() < 1e-6
    assert (out.frames[:, :, 64:] - source[:, :, 64:]).abs().max() > 0.1  # the mouth was generated
    np_out = pipe(faces=faces, mels=mels, num_inference_steps=2, generator=torch.Generator().manual_seed(3),
                  output_type="np")
    assert np_out.frames.shape == (4, 128, 128, 3)
    assert np.allclose(np_out.frames, out.frames.permute(0, 2, 3, 1).numpy())
    pil, samples = pipe(faces=faces, mels=mels, num_inference_steps=2,
                        generator=torch.Generator().manual_seed(3), output_type="pil", return_dict=False)
    assert len(pil) == 4 and pil[0].size == (128, 128)
    # uint8 conversion truncates like the original ((v+1)/2*255 -> astype(uint8)): at most 1 level below
    diff = faces[0, :64].numpy().astype(int) - np.asarray(pil[0])[:64].astype(int)
    assert diff.min() >= 0 and diff.max() <= 1
    assert torch.equal(samples, out.samples)


def test_one_noise_shared_by_all_frames_and_batches(pipe, inputs):
    faces, mels = inputs
    same_faces = faces[:1].repeat(4, 1, 1, 1)
    same_mels = mels[:1].repeat(4, 1, 1)
    out = pipe(faces=same_faces, mels=same_mels, num_inference_steps=2,
               generator=torch.Generator().manual_seed(5), batch_size=3)
    for i in range(1, 4):  # identical conditioning + one shared noise -> identical frames, across batches
        assert torch.allclose(out.frames[i], out.frames[0], atol=1e-5)
    noise = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    given = pipe(faces=same_faces, mels=same_mels, num_inference_steps=2, latents=noise, batch_size=4)
    assert torch.allclose(given.frames, out.frames, atol=1e-5)


def test_reference_and_audio_change_the_mouth(pipe, inputs):
    faces, mels = inputs
    base = pipe(faces=faces, mels=mels, num_inference_steps=2, generator=torch.Generator().manual_seed(1))
    other_audio = pipe(faces=faces, mels=-mels, num_inference_steps=2, generator=torch.Generator().manual_seed(1))
    other_ref = pipe(faces=faces, reference_faces=faces.flip(0), mels=mels, num_inference_steps=2,
                     generator=torch.Generator().manual_seed(1))
    assert (base.frames - other_audio.frames).abs().max() > 1e-3
    assert (base.frames - other_ref.frames).abs().max() > 1e-3


def test_save_pretrained_round_trip_is_identical(pipe, inputs, tmp_path):
    faces, mels = inputs
    pipe.save_pretrained(tmp_path, safe_serialization=True)
    loaded = Diff2LipPipeline.from_pretrained(tmp_path)
    a = pipe(faces=faces, mels=mels, num_inference_steps=2, generator=torch.Generator().manual_seed(2))
    b = loaded(faces=faces, mels=mels, num_inference_steps=2, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.frames, b.frames)


@pytest.mark.parametrize("scheduler_cls", [DPMSolverMultistepScheduler, UniPCMultistepScheduler,
                                           EulerDiscreteScheduler])
def test_other_schedulers_swap_in_deterministically(pipe, inputs, scheduler_cls):
    faces, mels = inputs
    swapped = Diff2LipPipeline(unet=pipe.unet, scheduler=scheduler_cls.from_config(pipe.scheduler.config))
    swapped.set_progress_bar_config(disable=True)
    a = swapped(faces=faces[:2], mels=mels[:2], num_inference_steps=3, generator=torch.Generator().manual_seed(9))
    b = swapped(faces=faces[:2], mels=mels[:2], num_inference_steps=3, generator=torch.Generator().manual_seed(9))
    assert torch.isfinite(a.frames).all()
    assert torch.equal(a.frames, b.frames)
    assert len(swapped.scheduler.timesteps) == 3


def test_bad_inputs_are_named(pipe, inputs):
    faces, mels = inputs
    with pytest.raises(ValueError, match="one window per face"):
        pipe(faces=faces, mels=mels[:2])
    with pytest.raises(ValueError, match=r"\(N, 80, 16\)"):
        pipe(faces=faces, mels=torch.zeros(4, 80, 10))


def test_progress_callback_counts_every_model_call(pipe, inputs):
    faces, mels = inputs
    calls = []
    pipe(faces=faces, mels=mels, num_inference_steps=2, batch_size=3, callback=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
