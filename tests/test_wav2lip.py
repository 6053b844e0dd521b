"""Wav2Lip generator: exact key layout, checkpoint loading (prefixes, mismatches, Hub cache), array inference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsync.errors import CheckpointMismatchError, WeightsUnavailableError
from lipsync.scoring.wav2lip import (
    WAV2LIP_CHECKPOINT_ENV,
    WAV2LIP_FACE_SIZE,
    WAV2LIP_HUB_FILENAMES,
    WAV2LIP_HUB_REPO,
    WAV2LIP_PADS,
    Wav2LipModel,
    load_wav2lip,
    wav2lip_infer,
)

def _random_model(seed: int = 0) -> Wav2LipModel:
    """A model whose every tensor (BatchNorm statistics included) differs from a fresh init."""
    torch.manual_seed(seed)
    model = Wav2LipModel().eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_mean"):
                tensor.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith("num_batches_tracked"):
                tensor.fill_(7)
            elif tensor.is_floating_point():
                tensor.add_(0.01 * torch.randn_like(tensor))
    return model


@pytest.fixture(scope="module")
def model() -> Wav2LipModel:
    return _random_model()


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(1)
    faces = rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    mels = rng.uniform(-4, 4, (2, 80, 16)).astype(np.float32)
    return faces, mels


def test_state_dict_matches_reference_layout(fixtures_dir):
    ref = json.loads((fixtures_dir / "wav2lip_keys.json").read_text())
    state = Wav2LipModel().state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == [(e["key"], e["shape"]) for e in ref["entries"]]
    assert len(state) == ref["num_keys"] == 352
    dtypes = {e["key"]: e["dtype"] for e in ref["entries"]}
    assert all(str(v.dtype).replace("torch.", "") == dtypes[k] for k, v in state.items())
    params = sum(p.numel() for p in Wav2LipModel().parameters())
    assert params == ref["total_params"] == 36_298_035
    buffers = sum(b.numel() for b in Wav2LipModel().buffers())
    assert buffers == ref["total_buffer_elements"]


def test_constants():
    assert WAV2LIP_FACE_SIZE == 96
    assert WAV2LIP_PADS == (0, 10, 0, 0)
    assert WAV2LIP_HUB_FILENAMES == {"wav2lip_gan": "wav2lip_gan.pth", "wav2lip": "wav2lip.pth"}


def test_forward_shapes_4d_and_5d(model):
    torch.manual_seed(0)
    audio = torch.randn(1, 2, 1, 80, 16)  # (B, T, 1, 80, 16)
    face = torch.rand(1, 6, 2, 96, 96)  # (B, 6, T, 96, 96)
    with torch.no_grad():
        out5 = model(audio, face)
        out = model(audio[:, 1], face[:, :, 1])
    assert out.shape == (1, 3, 96, 96)
    assert 0 < out.min() and out.max() < 1  # sigmoid
    assert out5.shape == (1, 3, 2, 96, 96)
    # time step 1 of the 5-D call equals the 4-D call on that frame
    torch.testing.assert_close(out5[:, :, 1], out, atol=1e-5, rtol=0)


def test_infer_bgr_masked_reference_deterministic_uint8(model, inputs):
    faces, mels = inputs
    got = wav2lip_infer(model, faces, mels, batch_size=1)
    assert got.shape == (2, 96, 96, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, wav2lip_infer(model, faces, mels, batch_size=1))  # deterministic

    # Wav2Lip's own recipe, in BGR and one batch of 2: [target with rows >= 48 zeroed, reference] / 255,
    # output x255 truncated to uint8
    bgr = faces[..., ::-1].astype(np.float32)
    masked = bgr.copy()
    masked[:, 48:] = 0
    x = torch.from_numpy(np.concatenate([masked, bgr], axis=3) / 255.0).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        y = model(torch.from_numpy(mels)[:, None], x)
    expected_bgr = (y.permute(0, 2, 3, 1).numpy() * 255.0).astype(np.uint8)
    # equal up to one level (batching may reassociate float sums)
    assert np.abs(got[..., ::-1].astype(int) - expected_bgr.astype(int)).max() <= 1
    # an RGB-fed model would produce something else: the channel order matters
    assert np.abs(got.astype(int) - expected_bgr.astype(int)).max() > 1


def test_infer_ignores_lower_half_of_target(model, inputs):
    faces, mels = inputs[0][:1], inputs[1][:1]
    changed = faces.copy()
    changed[:, 48:] = 255 - changed[:, 48:]
    a = wav2lip_infer(model, faces, mels, references96=faces)
    b = wav2lip_infer(model, changed, mels, references96=faces)
    np.testing.assert_array_equal(a, b)
    c = wav2lip_infer(model, changed, mels)  # reference defaults to the (changed) frame itself
    assert not np.array_equal(a, c)


def test_infer_rejects_bad_shapes(model, inputs):
    faces, mels = inputs
    with pytest.raises(ValueError, match="faces96"):
        wav2lip_infer(model, faces[:, :64], mels)
    with pytest.raises(ValueError, match="mels"):
        wav2lip_infer(model, faces, mels[:1])


# ----------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------


def _outputs(model: Wav2LipModel) -> torch.Tensor:
    torch.manual_seed(3)
    with torch.no_grad():
        return model(torch.randn(1, 1, 80, 16), torch.rand(1, 6, 96, 96))


def _assert_same_weights(loaded: Wav2LipModel, source: Wav2LipModel) -> None:
    got, want = loaded.state_dict(), source.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k].cpu(), want[k]) for k in want)


@pytest.fixture(scope="module")
def reference_output(model) -> torch.Tensor:
    return _outputs(model)


def test_prefixed_training_checkpoint_and_plain_state_dict_load_identically(tmp_path, model, reference_output):
    state = model.state_dict()
    wrapped = tmp_path / "wav2lip_gan.pth"
    torch.save(
        {
            "state_dict": {"module." + k: v for k, v in state.items()},
            "optimizer": {},
            "global_step": 5,
            "global_epoch": 1,
        },
        wrapped,
    )
    plain = tmp_path / "plain.pth"
    torch.save(dict(state), plain)

    a = load_wav2lip(wrapped, device="cpu")
    b = load_wav2lip(str(plain), device="cpu")
    assert not a.training and not b.training
    _assert_same_weights(a, model)
    _assert_same_weights(b, model)
    # identical outputs, bit for bit
    out_a, out_b = _outputs(a), _outputs(b)
    torch.testing.assert_close(out_a, reference_output, atol=0, rtol=0)
    torch.testing.assert_close(out_b, out_a, atol=0, rtol=0)


def test_env_var_is_used(tmp_path, monkeypatch, model):
    path = tmp_path / "env.pth"
    torch.save(model.state_dict(), path)
    monkeypatch.setenv(WAV2LIP_CHECKPOINT_ENV, str(path))
    _assert_same_weights(load_wav2lip(device="cpu"), model)


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path, model):
    state = dict(model.state_dict())
    missing = dict(state)
    del missing["face_decoder_blocks.3.1.conv_block.1.running_var"]
    torch.save({"state_dict": missing}, tmp_path / "missing.pth")
    missing_key = r"missing keys: face_decoder_blocks\.3\.1\.conv_block\.1\.running_var"
    with pytest.raises(CheckpointMismatchError, match=missing_key):
        load_wav2lip(tmp_path / "missing.pth", device="cpu")

    extra = dict(state, **{"audio_encoder.99.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys: audio_encoder\.99\.weight"):
        load_wav2lip(tmp_path / "extra.pth", device="cpu")

    shaped = dict(state, **{"output_block.1.weight": torch.zeros(3, 32, 3, 3)})
    torch.save(shaped, tmp_path / "shape.pth")
    with pytest.raises(CheckpointMismatchError, match=r"output_block\.1\.weight: checkpoint \(3, 32, 3, 3\)"):
        load_wav2lip(tmp_path / "shape.pth", device="cpu")


def test_non_checkpoint_file_and_missing_path(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="junk.pth"):
        load_wav2lip(junk, device="cpu")
    with pytest.raises(WeightsUnavailableError, match="--wav2lip-checkpoint"):
        load_wav2lip(tmp_path / "nope.pth", device="cpu")


def _offline_hub(monkeypatch, cache: Path) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv(WAV2LIP_CHECKPOINT_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads these at import time
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))


def test_hub_offline_without_cache_names_repo_file_and_env(tmp_path, monkeypatch):
    _offline_hub(monkeypatch, tmp_path / "hf" / "hub")
    with pytest.raises(WeightsUnavailableError) as info:
        load_wav2lip(device="cpu")
    message = str(info.value)
    assert WAV2LIP_HUB_REPO in message and "wav2lip_gan.pth" in message
    assert WAV2LIP_CHECKPOINT_ENV in message and "--wav2lip-checkpoint" in message
    with pytest.raises(WeightsUnavailableError, match=r"wav2lip\.pth"):
        load_wav2lip(variant="wav2lip", device="cpu")


def test_hub_cache_loads_offline(tmp_path, monkeypatch, model):
    cache = tmp_path / "hf" / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / ("models--" + WAV2LIP_HUB_REPO.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, snapshot / "wav2lip_gan.pth")
    _offline_hub(monkeypatch, cache)
    _assert_same_weights(load_wav2lip(device="cpu"), model)
