"""Our own lip-sync expert: pairs, training (python -m lipsync.train_syncnet), resume, and the LSE-shaped score.

The toy data is written straight into the prepared-dataset format: faces whose mouth (a dark band in the lower
half) opens with the loudness of noise bursts in the audio, so lip sync is learnable in a few hundred steps.
"""

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsync.media import audio as audio_io
from lipsync.scoring.syncnet_color import SyncNetColor, expert_sync_score, load_own_expert, sync_column
from lipsync.training.prepare import runs_of, shard_key, write_manifest, write_shard
from lipsync.training.sync_data import MIN_OFFSET, SyncPairs

FPS = 25
SIZE = 32  # face crops (the expert resizes lower halves to 48x96 anyway)


def toy_clip(rng, frames: int, delay: int = 0):
    """(faces (N, S, S, 3) uint8, wav 16 kHz): the mouth opening of frame i is the loudness of frame i - delay."""
    loud = np.repeat(rng.random(frames // 3 + 1), 3)[:frames]  # changes every 3 frames
    samples_per_frame = audio_io.DEFAULT_AUDIO.sample_rate // FPS
    noise = rng.standard_normal(frames * samples_per_frame).astype(np.float32)
    wav = (noise.reshape(frames, -1) * (0.02 + 0.5 * loud[:, None])).reshape(-1).astype(np.float32)
    faces = np.full((frames, SIZE, SIZE, 3), 170, np.uint8)
    opening = np.roll(loud, delay)
    for i, o in enumerate(opening):
        half = 1 + int(round(o * (SIZE // 4 - 1)))
        faces[i, 3 * SIZE // 4 - half:3 * SIZE // 4 + half, SIZE // 4:3 * SIZE // 4] = 30
    return faces, wav


def write_toy_dataset(root: Path, clips: int, frames: int = 75, split: str = "train", seed: int = 0, delay: int = 0):
    rng = np.random.default_rng(seed)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    manifest = {"format": "diff2lip-dataset", "version": 1, "clips": [], "skipped": [], "failed": []}
    for c in range(clips):
        faces, wav = toy_clip(rng, frames, delay)
        mel = audio_io.melspectrogram(wav).astype(np.float32)
        clip_id = f"{split}_{seed}_{c}"
        key = shard_key(clip_id)
        valid = np.ones(frames, bool)
        record = {"id": clip_id, "source": clip_id, "shard": f"shards/{key}.tar", "key": key, "frames": frames,
                  "fps": f"{FPS}/1", "valid_runs": runs_of(valid), "mel_columns": int(mel.shape[1]), "split": split}
        arrays = {"faces": faces, "boxes": np.zeros((frames, 4), np.int64), "valid": valid, "found": valid,
                  "audio": wav, "mel": mel}
        write_shard(root / record["shard"], key, record, arrays)
        manifest["clips"].append(record)
    write_manifest(root, manifest)
    return root


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    base = tmp_path_factory.mktemp("toy")
    return (write_toy_dataset(base / "train", 6, seed=0),
            write_toy_dataset(base / "val", 3, split="val", seed=1))


def test_pairs_are_balanced_and_negatives_are_off_sync(toy):
    train, _ = toy
    pairs = SyncPairs(train, "train", seed=0)
    labels, same_clip_offsets = [], []
    for i in range(len(pairs)):
        p = pairs[i]
        assert p["faces"].shape == (15, 48, 96) and 0 <= float(p["faces"].min()) and float(p["faces"].max()) <= 1
        assert p["mel"].shape == (1, 80, 16)
        labels.append(float(p["label"]))
        if p["label"] == 1:
            assert (p["audio_clip"], p["audio_start"]) == (p["clip"], p["start"])
        elif p["audio_clip"] == p["clip"]:
            same_clip_offsets.append(abs(p["audio_start"] - p["start"]))
    assert abs(np.mean(labels) - 0.5) <= 0.02
    assert same_clip_offsets and min(same_clip_offsets) >= MIN_OFFSET
    segment = pairs.segment(0, 10)  # the segment is the 16 mel columns from the window's start time
    mel = np.asarray(pairs._arrays(0).mel)
    c = sync_column(10, Fraction(FPS))
    assert c == 32 and np.array_equal(segment[0], mel[:, c:c + 16])


def test_the_expert_learns_sync_on_toy_data_and_resumes(toy, tmp_path):
    """Loss falls and held-out balanced accuracy (other clips) rises well above chance; a second run resumes."""
    from lipsync.train_syncnet import main

    train, val = toy
    out = tmp_path / "expert"
    args = ["--data", str(train), "--val-data", str(val), "--output", str(out), "--batch-size", "16",
            "--lr", "3e-4", "--validate-every", "1000", "--checkpoint-every", "50", "--log-every", "10",
            "--val-pairs", "128", "--threads", "2", "--width", "0.25", "--no-progress", "--cpu"]
    torch.manual_seed(0)
    assert main(args + ["--max-steps", "150"]) == 0
    log = [line.split(",") for line in (out / "log.csv").read_text().splitlines()[1:]]
    losses = np.array([float(row[1]) for row in log])
    assert losses[-3:].mean() < 0.8 * losses[:3].mean(), losses
    info = json.loads((out / "expert.json").read_text())
    assert info["steps"] == 150 and info["val_clips"] == ["val_1_0", "val_1_1", "val_1_2"]
    assert info["held_out"]["balanced_accuracy"] >= 0.75, info["held_out"]
    # resume: the same command with more steps continues from step 150
    assert main(args + ["--max-steps", "160"]) == 0
    assert json.loads((out / "expert.json").read_text())["steps"] == 160
    assert int((out / "log.csv").read_text().splitlines()[-1].split(",")[0]) == 160
    assert load_own_expert(out).training is False


def test_training_refuses_validation_clips_that_are_also_trained_on(toy, tmp_path, capsys):
    from lipsync.train_syncnet import main

    train, _ = toy
    assert main(["--data", str(train), "--output", str(tmp_path / "x"), "--max-steps", "1", "--no-progress",
                 "--cpu"]) == 1  # no val split in --data and no --val-data
    assert "held-out clips" in capsys.readouterr().err


def test_score_finds_the_offset_an_expert_sees():
    """An expert that matches face window w to the audio segment of frame w + 3 (the sound comes 3 frames late)
    reports offset -3 (LSE's sign), a distance at 0 above the minimum, and a clear confidence."""

    class Code(torch.nn.Module):
        """Embeds an input as one-hot(round(its first value * scale)): a stand-in for a trained stream."""

        def __init__(self, scale):
            super().__init__()
            self.scale = scale

        def forward(self, x):
            index = (x[:, 0, 0, 0] * self.scale).round().long().clamp(0, 511)
            return torch.nn.functional.one_hot(index, 512).float()[:, :, None, None]

    expert = SyncNetColor().eval()
    expert.face_encoder = Code(255)  # the faces' first channel is frame w's lower half, value w / 255
    expert.audio_encoder = Code(1)  # a segment's first mel value
    frames, lag = 60, 3
    faces = np.zeros((frames, 8, 8, 3), np.uint8)
    faces[:, 4:] = np.arange(frames)[:, None, None, None]
    mel = np.full((80, 300), -1.0, np.float32)
    for a in range(frames):
        mel[:, sync_column(a, FPS)] = a - lag  # the segment of frame a sounds like face window a - 3
    score = expert_sync_score(expert, faces, mel, FPS, max_offset=15)
    assert score.offset == -lag, score
    assert score.distance_at_0 > score.distance + 0.5 and score.confidence > 0.5
    assert len(score.dists) == 31 and score.windows > 0
    assert expert_sync_score(expert, faces, np.roll(mel, -sync_column(lag, FPS), axis=1), FPS).offset == 0


# ----------------------------------------------------------------------------------------------------------
# --score and lipsync.evaluate with an own expert (a random one: these check the plumbing and the labels)


@pytest.fixture(scope="module")
def random_expert(tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("own_expert")
    torch.manual_seed(0)
    save_file(SyncNetColor(width=0.25).state_dict(), str(folder / "expert.safetensors"))
    return folder


@pytest.fixture(scope="module")
def short_clip(media_dir, tmp_path_factory):
    """1.2 s of pub_video2 (with its sound) and the same span of its audio."""
    from conftest import run_ffmpeg

    folder = tmp_path_factory.mktemp("clip")
    clip, wav = folder / "clip.mp4", folder / "speech.wav"
    run_ffmpeg("-i", str(media_dir / "pub_video2_retalking_face5.mp4"), "-t", "1.2", "-vf", "scale=256:256",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip))
    run_ffmpeg("-i", str(clip), "-vn", "-ac", "1", "-ar", "16000", str(wav))
    return clip, wav


def test_engine_scores_with_an_own_expert_labelled_as_such(random_expert, short_clip, tmp_path):
    from conftest import small_pipeline

    from lipsync.engine import LipSyncEngine
    from lipsync.job import JobOptions

    clip, wav = short_clip
    engine = LipSyncEngine(pipeline=small_pipeline(), detector="mediapipe")
    report = engine.run(clip, wav, tmp_path / "out.mp4", JobOptions(
        num_inference_steps=1, detector="mediapipe", length_policy="shortest", side_by_side=False, score=True,
        sync_expert=str(random_expert)))
    assert set(report.scores) == {"source", "diffusion"}
    for values in report.scores.values():
        assert values["measure"] == "own expert" and "lse_d" not in values
        assert -15 <= values["offset"] <= 15 and values["confidence"] >= 0 and values["frames"] == report.frames
    table = report.scores_markdown()
    assert "Own lip-sync expert" in table and "not comparable to published" in table and "LSE-D ↓" not in table


def test_cli_and_evaluate_take_an_own_expert(random_expert, short_clip, tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    from lipsync.evaluate import main as evaluate

    clip, wav = short_clip
    (tmp_path / "pairs.txt").write_text(f"{clip} {wav}\n")
    assert evaluate(["--filelist", str(tmp_path / "pairs.txt"), "--output", str(tmp_path / "scores.csv"),
                     "--sync-expert", str(random_expert), "--detector", "mediapipe"]) == 0
    header, row = (tmp_path / "scores.csv").read_text().splitlines()
    assert header == "video,audio,measure,offset,confidence,distance_at_0,psnr,ssim"
    assert row.split(",")[2] == "own expert" and "lse" not in header
    # a missing expert is one clear line before any work
    result = subprocess.run([sys.executable, "-m", "lipsync", "--video", str(clip), "--audio", str(wav), "--output",
                             str(tmp_path / "x.mp4"), "--score", "--sync-expert", str(tmp_path / "nope"),
                             "--checkpoint", str(random_expert)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and not (tmp_path / "x.mp4").exists()
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "train_syncnet" in lines[0], result.stderr


def test_the_app_offers_the_score_with_an_own_expert_and_says_so(random_expert, tmp_path):
    from lipsync.app import layout
    from lipsync.app.handlers import Handlers
    from lipsync.engine import LipSyncEngine

    engine = LipSyncEngine(checkpoint=tmp_path, device="cpu", detector="opencv")
    assert Handlers(engine, max_seconds=30, sync_expert=str(random_expert)).availability()["syncnet"] == (True, "")
    ok, reason = Handlers(engine, max_seconds=30, sync_expert=str(tmp_path / "nope")).availability()["syncnet"]
    assert not ok and "nope" in reason
    demo = layout.build_demo(engine, default_detector="opencv", sync_expert=str(random_expert))
    score = [c for c in demo.config["components"] if c["props"].get("elem_id") == "score"][0]["props"]
    assert score["visible"] and score["label"] == "Lip-sync score (own expert)"
    assert "not comparable to published" in score["info"]
