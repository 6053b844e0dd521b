"""load_pipeline: converted folders, original .pt files, Hub repos and the default paper checkpoint, offline."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, small_pipeline, small_unet

from lipsync import WeightsUnavailableError, load_pipeline
from lipsync.model.loading import PAPER_FILE, PAPER_REPO

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def sample(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    faces = (torch.rand(2, 128, 128, 3, generator=g) * 255).to(torch.uint8)
    mels = torch.randn(2, 80, 16, generator=g)
    return pipe(faces=faces, mels=mels, num_inference_steps=2, generator=torch.Generator().manual_seed(7),
                progress_bar=False).frames


@pytest.fixture(scope="module")
def reference():
    return sample(small_pipeline())


def test_converted_folder_and_original_pt_give_the_same_frames(tmp_path, reference):
    small_pipeline().save_pretrained(tmp_path / "folder")
    assert torch.equal(sample(load_pipeline(tmp_path / "folder", device="cpu", dtype="fp32")), reference)
    pt = tmp_path / "checkpoint.pt"
    torch.save(small_unet().state_dict(), pt)  # original key layout, sizes inferred from the weights
    assert torch.equal(sample(load_pipeline(pt, device="cpu", dtype="fp32")), reference)
    torch.save(small_unet().state_dict(), tmp_path / "unet.bin")
    assert torch.equal(sample(load_pipeline(str(tmp_path / "unet.bin"), dtype="fp32")), reference)


def test_folders_saved_before_the_package_was_split_still_load(tmp_path, reference):
    """model_index.json of older folders names the UNet's module as it was then (lipsync.unet_diff2lip);
    they load through load_pipeline and Diff2LipPipeline.from_pretrained, with the same frames."""
    from lipsync import Diff2LipPipeline

    folder = tmp_path / "folder"
    small_pipeline().save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["unet"] == ["lipsync.model.unet", "Diff2LipUNetModel"]  # what a save writes now
    index["unet"] = ["lipsync.unet_diff2lip", "Diff2LipUNetModel"]
    (folder / "model_index.json").write_text(json.dumps(index))
    assert torch.equal(sample(load_pipeline(folder, device="cpu", dtype="fp32")), reference)
    assert torch.equal(sample(Diff2LipPipeline.from_pretrained(folder)), reference)
    index["unet"] = ["lipsync.no_such_module", "Diff2LipUNetModel"]  # anything else is still an error
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises((ImportError, ValueError), match="no_such_module"):
        Diff2LipPipeline.from_pretrained(folder)


def test_cpu_runs_in_float32_even_when_asked_for_half(tmp_path):
    small_pipeline().save_pretrained(tmp_path)
    assert load_pipeline(tmp_path, device="cpu", dtype="fp16").unet.dtype == torch.float32


def test_default_precision_is_bf16_only_where_measured_faster(tmp_path, monkeypatch, caplog):
    """--dtype auto on a CPU: bf16 only when the timing says it is faster (AMX), fp32 where bf16 instructions exist
    but are not faster (AVX512-BF16 alone: 0.96-0.98x); the log says which path runs and why."""
    import logging

    from lipsync.model import acceleration

    small_pipeline().save_pretrained(tmp_path)
    monkeypatch.setattr(acceleration, "fast_bf16_cpu", lambda: True)
    for measured, expected in ((2.1, torch.bfloat16), (0.97, torch.float32)):
        monkeypatch.setattr(acceleration, "_time_unet",
                            lambda unet, dtype, m=measured: 1.0 if dtype == torch.float32 else 1 / m)
        monkeypatch.setattr(acceleration, "_speedups", {})
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"cache{measured}"))
        with caplog.at_level(logging.INFO, logger="lipsync.model.acceleration"):
            pipe = load_pipeline(tmp_path, device="cpu")
        assert pipe.unet.dtype == expected
        assert f"{measured:.2f}x" in caplog.text
        if expected == torch.bfloat16:
            assert pipe.unet.out[2].weight.is_contiguous(memory_format=torch.channels_last)
        # the measurement is cached on disk: a new process reads it back instead of timing again
        cached = json.loads((tmp_path / f"cache{measured}" / "lipsync" / "cpu_bf16.json").read_text())
        assert list(cached.values()) == [measured]
    monkeypatch.setattr(acceleration, "fast_bf16_cpu", lambda: False)
    assert acceleration.default_dtype("cpu") == torch.float32  # no bf16 instructions: nothing to time
    assert load_pipeline(tmp_path, device="cpu", dtype="fp32").unet.dtype == torch.float32


def test_unknown_sources_are_named(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="neither an existing file or folder nor a Hub repo"):
        load_pipeline(tmp_path / "nowhere" / "x.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsUnavailableError, match="without model_index.json"):
        load_pipeline(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(WeightsUnavailableError, match="is not a checkpoint"):
        load_pipeline(tmp_path / "notes.txt")


def hub_cache_entry(cache, repo, files: dict):
    """A local Hugging Face Hub cache entry (refs/main -> snapshot) holding ``files`` {relative path: writer}."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(SNAPSHOT)
    snapshot = root / "snapshots" / SNAPSHOT
    for relative, write in files.items():
        target = snapshot / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        write(target)
    return snapshot


PROBE = r"""
import json, sys, torch
sys.path.insert(0, "tests")
from lipsync import load_pipeline, WeightsUnavailableError
results = {}
for name, source in json.loads(sys.argv[1]).items():
    try:
        pipe = load_pipeline(source, device="cpu", dtype="fp32")
        g = torch.Generator().manual_seed(0)
        faces = (torch.rand(2, 128, 128, 3, generator=g) * 255).to(torch.uint8)
        mels = torch.randn(2, 80, 16, generator=g)
        frames = pipe(faces=faces, mels=mels, num_inference_steps=2, generator=torch.Generator().manual_seed(7),
                      progress_bar=False).frames
        results[name] = {"ok": True, "sum": float(frames.double().sum())}
    except WeightsUnavailableError as exc:
        results[name] = {"ok": False, "error": str(exc)}
print(json.dumps(results))
"""


def probe(sources: dict, env: dict):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LIPSYNC_CHECKPOINT"))}
    full_env.update(env)
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(sources)], cwd=REPO, env=full_env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_hub_paths_offline_against_a_local_cache(tmp_path, reference):
    cache = tmp_path / "hub"
    # the default: the paper checkpoint, original layout, in the Hub cache
    hub_cache_entry(cache, PAPER_REPO, {PAPER_FILE: lambda p: torch.save(small_unet().state_dict(), p)})
    # a Hub repo in diffusers layout
    diffusers_repo = "studio/tiny-diff2lip"
    snapshot = hub_cache_entry(cache, diffusers_repo, {})
    small_pipeline().save_pretrained(snapshot)
    results = probe({"default": None, "repo": diffusers_repo},
                    {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")})
    expected = float(reference.double().sum())
    assert results["default"]["ok"] and abs(results["default"]["sum"] - expected) < 1e-3
    assert results["repo"]["ok"] and abs(results["repo"]["sum"] - expected) < 1e-3


def test_no_network_error_names_the_repo_the_file_and_the_remedy(tmp_path):
    results = probe({"default": None, "repo": "studio/not-cached"},
                    {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HOME": str(tmp_path)})
    message = results["default"]["error"]
    assert not results["default"]["ok"]
    assert PAPER_REPO in message and PAPER_FILE in message
    assert "--checkpoint PATH" in message and "LIPSYNC_CHECKPOINT=PATH" in message
    assert not results["repo"]["ok"] and "studio/not-cached" in results["repo"]["error"]


def test_checkpoint_environment_variable_is_used(tmp_path, reference):
    small_pipeline().save_pretrained(tmp_path / "local")
    results = probe({"default": None}, {"LIPSYNC_CHECKPOINT": str(tmp_path / "local"), "HF_HUB_OFFLINE": "1",
                                        "HF_HUB_CACHE": str(tmp_path / "empty")})
    assert results["default"]["ok"] and abs(results["default"]["sum"] - float(reference.double().sum())) < 1e-3
