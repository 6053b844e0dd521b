"""Diff2LipUNetModel: paper key layout, forward parity with the official model, checked conversion."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, TINY_OVERRIDES

from lipsync import CheckpointMismatchError, Diff2LipUNetModel

FIGURES = json.loads((REPO / "tests" / "data" / "parity_figures.json").read_text())


@pytest.fixture(scope="module")
def tiny_state_dict(fixtures_dir):
    from safetensors.torch import load_file

    return load_file(str(fixtures_dir / "tiny_state_dict.safetensors"))


@pytest.fixture(scope="module")
def tiny_forward(fixtures_dir):
    from safetensors.torch import load_file

    return load_file(str(fixtures_dir / "tiny_forward.safetensors"))


@pytest.fixture(scope="module")
def tiny_unet(tiny_state_dict):
    return Diff2LipUNetModel.from_original_checkpoint(tiny_state_dict, **TINY_OVERRIDES)


def run(unet, fx):
    with torch.no_grad():
        return unet(fx["x"], fx["timesteps"], cond_image=fx["cond_img"], mask=fx["mask"],
                    reference=fx["ref_img"], audio=fx["indiv_mels"]).sample


def test_paper_configuration_matches_the_released_key_layout(fixtures_dir):
    manifest = json.loads((fixtures_dir / "diff2lip_paper_keys.json").read_text())
    state = Diff2LipUNetModel().state_dict()
    assert list(state) == [e["key"] for e in manifest["entries"]]
    assert {k: list(v.shape) for k, v in state.items()} == {e["key"]: e["shape"] for e in manifest["entries"]}
    assert sum(v.numel() for v in state.values()) == manifest["total_params"] == FIGURES["paper_total_params"]


def test_paper_configuration_size_without_fixtures():
    unet = Diff2LipUNetModel()
    assert len(unet.state_dict()) == FIGURES["paper_num_keys"]
    assert sum(p.numel() for p in unet.parameters()) == FIGURES["paper_total_params"]
    assert unet.config.model_channels == 128 and unet.config.out_channels == 6


def test_tiny_forward_equals_reference(tiny_unet, tiny_forward):
    out = run(tiny_unet, tiny_forward)
    assert out.shape == (4, 6, 128, 128)
    assert (out - tiny_forward["output"]).abs().max() <= 1e-4
    # the copied figures agree too (so the smoke numbers in tests/data are the real ones)
    expected_slice = torch.tensor(FIGURES["tiny_forward_output_slice"], dtype=torch.float64)
    assert torch.allclose(out[0, :, 60:64, 60:64].double(), expected_slice, atol=1e-4)
    assert abs(out.double().sum().item() - FIGURES["tiny_forward_output_sum"]) < 1e-2


def test_tiny_intermediates_equal_reference(tiny_unet, tiny_forward):
    from lipsync.model.unet import timestep_embedding

    with torch.no_grad():
        sinusoid = timestep_embedding(tiny_forward["timesteps"], 32)
        audio = tiny_unet.audio_encoder(tiny_forward["indiv_mels"])
        style = tiny_unet.audio_encoder_to_style(audio).flatten(1)
        assert torch.equal(sinusoid, tiny_forward["aux.timestep_embedding_sinusoid"])
        assert (tiny_unet.time_embed(sinusoid) - tiny_forward["aux.time_emb"]).abs().max() <= 1e-5
        assert (audio - tiny_forward["aux.audio_encoder_out"]).abs().max() <= 1e-4
        assert (style - tiny_forward["aux.audio_style"]).abs().max() <= 1e-5


def test_mismatched_checkpoint_lists_missing_unexpected_and_wrong_shapes(tiny_state_dict):
    broken = dict(tiny_state_dict)
    del broken["out.2.bias"]
    broken["extra.weight"] = torch.zeros(1)
    broken["input_blocks.0.0.weight"] = torch.zeros(32, 6, 3, 3)
    with pytest.raises(CheckpointMismatchError) as info:
        Diff2LipUNetModel.from_original_checkpoint(broken, **TINY_OVERRIDES)
    message = str(info.value)
    assert "out.2.bias" in message and "extra.weight" in message
    assert "input_blocks.0.0.weight: checkpoint (32, 6, 3, 3) vs model (32, 9, 3, 3)" in message
    # the paper configuration rejects the tiny weights with a hint about overrides
    with pytest.raises(CheckpointMismatchError, match="config overrides"):
        Diff2LipUNetModel.from_original_checkpoint(tiny_state_dict)


def test_pt_file_with_module_prefix_converts(tmp_path, tiny_state_dict, tiny_unet, tiny_forward):
    path = tmp_path / "checkpoint.pt"
    torch.save({"module." + k: v for k, v in tiny_state_dict.items()}, path)
    unet = Diff2LipUNetModel.from_original_checkpoint(str(path), **TINY_OVERRIDES)
    assert torch.equal(run(unet, tiny_forward), run(tiny_unet, tiny_forward))


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="could not be read as a PyTorch checkpoint"):
        Diff2LipUNetModel.from_original_checkpoint(str(path))


def test_convert_command_writes_safetensors_and_fp16_variant(tmp_path, tiny_state_dict, tiny_unet, tiny_forward):
    from lipsync import Diff2LipPipeline

    pt = tmp_path / "checkpoint.pt"
    torch.save(tiny_state_dict, pt)
    out = tmp_path / "converted"
    cmd = [sys.executable, "-m", "lipsync.convert", "--checkpoint", str(pt), "--output", str(out), "--fp16",
           "--config", "model_channels=32", "--config", "num_head_channels=32", "--config", "num_res_blocks=1"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "6,113,094 parameters" in result.stdout
    assert (out / "model_index.json").is_file()
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    pipe = Diff2LipPipeline.from_pretrained(out)
    assert torch.equal(run(pipe.unet, tiny_forward), run(tiny_unet, tiny_forward))
    half = Diff2LipPipeline.from_pretrained(out, variant="fp16", torch_dtype=torch.float16)
    assert half.unet.dtype == torch.float16


def test_convert_command_reports_bad_checkpoint(tmp_path):
    pt = tmp_path / "bad.pt"
    torch.save({"weight": torch.zeros(2)}, pt)
    result = subprocess.run([sys.executable, "-m", "lipsync.convert", "--checkpoint", str(pt), "--output",
                             str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "missing keys" in result.stderr and "unexpected keys: weight" in result.stderr
    assert not (tmp_path / "out").exists()
