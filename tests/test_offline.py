"""Weights out of reach: one clear line within seconds, no retry noise, no line printed twice; quiet loading;
plain progress lines in logs; the convert command's size inference and --random-small model."""

import os
import re
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, run_ffmpeg, small_unet

from lipsync import WeightsUnavailableError, hub
from lipsync.job import STAGES
from lipsync.model.loading import PAPER_FILE, PAPER_REPO

EXAMPLE_VIDEO = REPO / "assets" / "example_face.mp4"
EXAMPLE_SPEECH = REPO / "assets" / "example_speech.wav"


def closed_port() -> int:
    """A local TCP port that nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(tmp_path, **extra) -> dict:
    """The environment without Hub/checkpoint settings, with an empty Hub cache and torch hub folder."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "LIPSYNC_", "DIFFUSERS_")) and k.lower() not in ("https_proxy", "http_proxy")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
               TORCH_HOME=str(tmp_path / "torch"))
    env.update(extra)
    return env


def run_cli(args, env, timeout=300):
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "lipsync", *map(str, args)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - start


@pytest.mark.parametrize("endpoint", ["closed-port", "HF_HUB_OFFLINE"])
def test_cli_without_the_hub_says_so_in_one_line_within_seconds(tmp_path, endpoint):
    if endpoint == "HF_HUB_OFFLINE":
        extra = {"HF_HUB_OFFLINE": "1"}
    else:
        extra = {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    out = tmp_path / "out.mp4"
    result, seconds = run_cli(["--video", EXAMPLE_VIDEO, "--audio", EXAMPLE_SPEECH, "--output", out, "--score"],
                              clean_env(tmp_path, **extra))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # before: 22 retry lines (each printed twice) and 33 s
    assert lines[0].startswith("error: could not get the Diff2Lip weights: ")
    assert PAPER_REPO in lines[0] and PAPER_FILE in lines[0]
    assert "--checkpoint PATH" in lines[0] and "LIPSYNC_CHECKPOINT=PATH" in lines[0]
    assert ("HF_HUB_OFFLINE is set" if endpoint == "HF_HUB_OFFLINE" else "cannot be reached") in lines[0]
    # Python and torch start-up included; huggingface_hub's back-off alone would sleep 23 s
    assert seconds < 20, seconds
    assert not out.exists() and not result.stdout


def test_cli_checks_the_comparison_weights_before_any_work(tmp_path, tiny_pipeline_dir):
    env = clean_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    result, seconds = run_cli(["--video", EXAMPLE_VIDEO, "--audio", EXAMPLE_SPEECH, "--output", tmp_path / "o.mp4",
                               "--checkpoint", tiny_pipeline_dir, "--compare-wav2lip"], env)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "Nekochu/Wav2Lip" in result.stderr and "--wav2lip-checkpoint PATH" in result.stderr
    assert seconds < 20, seconds


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch):
    """The Hub at a closed local port, an empty Hub cache, no remembered reachability answers."""
    import huggingface_hub.constants as hf_constants

    for name in ("HF_HUB_OFFLINE", "LIPSYNC_WAV2LIP_CHECKPOINT", "LIPSYNC_SYNCNET_CHECKPOINT", "LIPSYNC_CHECKPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "_answers", {})


def test_wav2lip_syncnet_and_paper_weights_fail_fast_offline(unreachable_hub):
    from lipsync import load_pipeline
    from lipsync.scoring.syncnet import load_syncnet
    from lipsync.scoring.wav2lip import load_wav2lip

    cases = [(lambda: load_wav2lip(device="cpu"), ["Nekochu/Wav2Lip", "wav2lip_gan.pth", "--wav2lip-checkpoint"]),
             (lambda: load_syncnet(device="cpu"),
              ["ByteDance/LatentSync-1.5", "syncnet_v2.model", "--syncnet-checkpoint"]),
             (lambda: load_pipeline(device="cpu"), [PAPER_REPO, PAPER_FILE, "--checkpoint PATH"])]
    for load, names in cases:
        start = time.monotonic()
        with pytest.raises(WeightsUnavailableError) as info:
            load()
        assert time.monotonic() - start < 5
        message = str(info.value)
        assert "\n" not in message and "cannot be reached" in message
        assert all(name in message for name in names), message


def test_a_cached_file_needs_no_network(unreachable_hub, tmp_path):
    snapshot = tmp_path / "hub" / "models--studio--weights" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "w.pt").write_bytes(b"x")
    (tmp_path / "hub" / "models--studio--weights" / "refs").mkdir()
    (tmp_path / "hub" / "models--studio--weights" / "refs" / "main").write_text("0" * 40)
    assert hub.hub_file("studio/weights", "w.pt", what="w", remedy="r") == snapshot / "w.pt"
    with pytest.raises(WeightsUnavailableError, match="'other.pt' from the Hugging Face Hub repo 'studio/weights'"):
        hub.hub_file("studio/weights", "other.pt", what="w", remedy="r", download=False)


def test_s3fd_download_is_refused_at_once_without_a_connection(tmp_path, monkeypatch):
    pytest.importorskip("face_alignment")
    from lipsync.media.detectors import S3FDDetector

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{closed_port()}")  # every download goes through a dead proxy
    monkeypatch.setattr(hub, "_answers", {})
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"could not download the S3FD face-detector weights \(no "
                                                      r"connection to 127\.0\.0\.1:\d+ within 3 s\)"):
        S3FDDetector()
    assert time.monotonic() - start < 5


LOG_PROBE = r"""
import logging
import huggingface_hub.utils.logging  # installs huggingface_hub's own handler, as any download does
from lipsync.console import configure_logging
configure_logging()
configure_logging()  # a second call adds nothing
logging.getLogger("huggingface_hub.file_download").error("hub error")
logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
logging.getLogger("lipsync.engine").warning("engine warning")
logging.getLogger("lipsync.engine").info("engine info")
"""


def test_each_log_line_is_printed_once_and_retry_chatter_not_at_all(tmp_path):
    result = subprocess.run([sys.executable, "-c", LOG_PROBE], cwd=REPO, env=clean_env(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["hub error", "engine warning"]


LOAD_PROBE = r"""
import sys, torch
sys.path.insert(0, "tests")
from conftest import small_unet
from lipsync import load_pipeline
torch.save(small_unet().state_dict(), sys.argv[2])
load_pipeline(sys.argv[1], device="cpu")
load_pipeline(sys.argv[2], device="cpu", dtype="fp16")  # asked for half on a CPU: a deliberate warning
print("loaded")
"""


def test_loading_prints_no_library_warnings_or_bars(tmp_path, tiny_pipeline_dir):
    result = subprocess.run([sys.executable, "-c", LOAD_PROBE, str(tiny_pipeline_dir), str(tmp_path / "c.pt")],
                            cwd=REPO, env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded"
    # before: "Loading pipeline components...: 100%|####| 2/2" and "There are modules in Diff2LipUNetModel
    # that should be kept in float32: []" on every load
    assert result.stderr.splitlines() == ["torch.float16 is only supported on the GPU; using float32 on cpu"]


@pytest.fixture(scope="module")
def random_small(tmp_path_factory):
    """(folder, stdout) of `python -m lipsync.convert --random-small FOLDER`, made once."""
    tmp_path = tmp_path_factory.mktemp("random_small")
    model = tmp_path / "model"
    result = subprocess.run([sys.executable, "-m", "lipsync.convert", "--random-small", str(model)], cwd=REPO,
                            env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and not result.stderr, result.stderr  # no library warnings either
    return model, result.stdout


def test_cli_writes_plain_progress_lines_to_a_log(tmp_path, random_small):
    speech = tmp_path / "speech.wav"
    run_ffmpeg("-i", str(EXAMPLE_SPEECH), "-t", "0.4", str(speech))  # a few frames
    model = random_small[0]
    out = tmp_path / "out.mp4"
    result, _ = run_cli(["--video", EXAMPLE_VIDEO, "--audio", speech, "--output", out, "--checkpoint", model,
                         "--steps", "1", "--detector", "opencv", "--length-policy", "shortest"],
                        clean_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr
    assert out.is_file() and " frames at 25 fps" in result.stdout
    assert "\r" not in result.stderr and "\x1b" not in result.stderr  # no bar redraws, no escape codes
    lines = result.stderr.splitlines()
    pattern = re.compile(r"^ *(?P<stage>%s): +\d+%%( .*)?$" % "|".join(STAGES))
    assert lines and all(pattern.match(line) for line in lines), lines
    assert any(line.strip().startswith("audio: 100%") for line in lines), lines
    assert len(result.stderr) < 3000  # before: about 9 KB of bar redraws for a short clip
    stages = [pattern.match(line)["stage"] for line in lines]
    assert all(stages.count(stage) <= 11 for stage in STAGES)  # at most one line per stage and tenth


def test_convert_reads_sizes_off_the_weights_and_makes_a_random_small_model(tmp_path, random_small):
    from lipsync import Diff2LipPipeline

    pt = tmp_path / "checkpoint.pt"
    torch.save(small_unet().state_dict(), pt)  # not the paper's sizes, and no --config given
    result = subprocess.run([sys.executable, "-m", "lipsync.convert", "--checkpoint", str(pt), "--output",
                             str(tmp_path / "converted")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert not result.stderr  # no library warnings
    converted = Diff2LipPipeline.from_pretrained(tmp_path / "converted").unet
    expected = small_unet().state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in converted.state_dict().items())

    folder, stdout = random_small
    assert "3,071,558 parameters" in stdout and f"python -m lipsync --checkpoint {folder}" in stdout
    small = Diff2LipPipeline.from_pretrained(folder).unet
    assert small.config.model_channels == 32 and tuple(small.config.channel_mult) == (1, 1, 2, 2)
    # the same seeded weights as the tests' small model
    assert all(torch.equal(v, expected[k]) for k, v in small.state_dict().items())

    result = subprocess.run([sys.executable, "-m", "lipsync.convert"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "pass --checkpoint CHECKPOINT --output FOLDER, or --random-small OUT" in result.stderr
