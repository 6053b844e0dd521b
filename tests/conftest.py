"""Shared test fixtures: where ../shared lives, and tiny seeded Diff2Lip components."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Gradio caches uploads and examples in GRADIO_TEMP_DIR and deletes what an app cached when it shuts down:
# a folder of this test session's own keeps other Gradio apps on the machine from deleting our files.
os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="diff2lip-tests-gradio-")
atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], True)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIPSYNC_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"
MEDIA = SHARED / "media"
TINY_OVERRIDES = dict(model_channels=32, num_head_channels=32, num_res_blocks=1)  # the fixture's tiny model


def need_shared(path: Path) -> Path:
    """``path`` inside ../shared, or skip the test when ../shared is absent."""
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent (the shared reference data live beside the repo)")
    return path


def prepare_train_clips(tmp_path_factory, clips, *split_args: str) -> Path:
    """A dataset made by ``python -m lipsync.prepare`` (OpenCV detector) from the shared training clips named
    ``clips`` (lipnet .mpg stems); ``split_args`` choose the split, e.g. ``"--val-fraction", "1"``."""
    from lipsync.prepare import main as prepare

    train_dir = need_shared(MEDIA / "train")
    if not train_dir.is_dir():
        pytest.skip(f"{train_dir} is absent")
    videos = tmp_path_factory.mktemp("videos")
    for clip in clips:
        (videos / f"{clip}.mpg").symlink_to(train_dir / f"{clip}.mpg")
    root = tmp_path_factory.mktemp("dataset")
    assert prepare(["--videos", str(videos), "--output", str(root), "--detector", "opencv", "--workers", "1",
                    *split_args, "--no-progress"]) == 0
    return root


def run_ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly (overwriting outputs); raise if it fails."""
    import subprocess

    from lipsync.media.probe import find_ffmpeg

    subprocess.run([find_ffmpeg(), "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"{FIXTURES} is absent (the reference fixtures live beside the repo in CI)")
    return FIXTURES


@pytest.fixture(scope="session")
def media_dir() -> Path:
    if not MEDIA.is_dir():
        pytest.skip(f"{MEDIA} is absent (the shared test media live beside the repo in CI)")
    return MEDIA


def small_unet(seed: int = 0):
    """A fast random Diff2Lip UNet (4 levels, attention at 16x16, 128 px) for pipeline/engine tests; not the fixture model."""
    import torch

    from lipsync import Diff2LipUNetModel

    torch.manual_seed(seed)
    unet = Diff2LipUNetModel(model_channels=32, channel_mult=(1, 1, 2, 2), num_res_blocks=1,
                             attention_resolutions=(16,), num_head_channels=32)
    with torch.no_grad():  # official init zeroes output convs; perturb so nothing is trivially zero
        for p in unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return unet.eval()


def small_pipeline(seed: int = 0):
    from lipsync.model.pipeline import Diff2LipPipeline, default_scheduler

    pipe = Diff2LipPipeline(unet=small_unet(seed), scheduler=default_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A small random pipeline saved with save_pretrained (what `python -m lipsync.convert` writes)."""
    path = tmp_path_factory.mktemp("tiny_pipeline")
    small_pipeline().save_pretrained(path, safe_serialization=True)
    return path


def save_comparison_weights(folder: Path, seed: int = 0) -> tuple:
    """Random Wav2Lip and SyncNet v2 weights in the released layouts (Wav2Lip: {"state_dict": module.*}) in
    ``folder``; returns (wav2lip .pth, syncnet .model) paths."""
    import torch

    from lipsync.scoring.syncnet import SyncNetV2
    from lipsync.scoring.wav2lip import Wav2LipModel

    torch.manual_seed(seed)
    wav2lip = {"module." + k: v for k, v in Wav2LipModel().state_dict().items()}
    torch.save({"state_dict": wav2lip}, folder / "wav2lip_gan.pth")
    torch.save(SyncNetV2().state_dict(), folder / "syncnet_v2.model")
    return folder / "wav2lip_gan.pth", folder / "syncnet_v2.model"


@pytest.fixture(scope="session")
def comparison_weights(tmp_path_factory) -> tuple:
    """(wav2lip_gan.pth, syncnet_v2.model) with random weights, made once per session."""
    return save_comparison_weights(tmp_path_factory.mktemp("comparison_weights"))


def concat_shots(output: Path, shots, audio=None, size: int = 192) -> Path:
    """A clip cut from shared clips with ffmpeg's concat filter.

    ``shots`` are (video, first frame, frames, extra filters or "") played one after another. Each is scaled
    to ``size`` x ``size`` and softened by a 1 px Gaussian blur (so that a re-encode of an untouched frame
    stays above 46 dB, as it does on the full-size clips), then ``extra`` moves or scales the picture, e.g.
    "crop=134:134:40:20,scale=192:192" or "scale=128:128,pad=192:192:50:40". The sound is the first seconds
    of ``audio`` (a file with sound), none without. H.264 crf 12 at 25 fps."""
    inputs, chains = [], []
    for k, (video, first, frames, extra) in enumerate(shots):
        inputs += ["-i", str(video)]
        chain = (f"[{k}:v]trim=start_frame={first}:end_frame={first + frames},setpts=PTS-STARTPTS,"
                 f"scale={size}:{size},gblur=sigma=1")
        chains.append(chain + (f",{extra}" if extra else "") + f",setsar=1[v{k}]")
    joined = "".join(f"[v{k}]" for k in range(len(shots)))
    graph = ";".join(chains) + f";{joined}concat=n={len(shots)}:v=1:a=0,format=yuv420p[v]"
    args = [*inputs, "-filter_complex", graph, "-map", "[v]", "-r", "25", "-c:v", "libx264", "-preset", "veryfast",
            "-crf", "12"]
    if audio is not None:
        seconds = sum(frames for _, _, frames, _ in shots) / 25
        args = [*inputs, "-i", str(audio)] + args[len(inputs):] + ["-map", f"{len(shots)}:a", "-t", f"{seconds}",
                                                                    "-c:a", "aac"]
    run_ffmpeg(*args, str(output))
    return output
