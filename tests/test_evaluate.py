"""Evaluation CLI: PSNR / SSIM known answers, filelist parsing, atomic CSV, error exits, end to end."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsync import evaluate
from lipsync.evaluate import CSV_COLUMNS, EvalRow, FilelistError, main, parse_filelist, write_csv
from lipsync.scoring.metrics import ReconstructionMeter, psnr, ssim

# ----------------------------------------------------------------------------------------------------
# PSNR / SSIM
# ----------------------------------------------------------------------------------------------------


def _image(seed: int = 0, shape=(48, 64, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(10, 246, shape, dtype=np.uint8)


def test_psnr_identical_is_inf_and_known_noise():
    a = _image()
    assert psnr(a, a) == math.inf
    signs = np.random.default_rng(1).choice([-4, 4], a.shape)
    b = (a.astype(int) + signs).astype(np.uint8)  # every pixel off by exactly 4 -> MSE 16
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 16.0), rel=1e-12)
    c = a.copy()
    c[0, 0, 0] += 9  # one error: MSE = 81 / size
    assert psnr(a, c) == pytest.approx(10 * math.log10(255**2 / (81 / a.size)), rel=1e-12)


def test_ssim_identical_is_one_and_constant_images_known_answer():
    a = _image()
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    # constant images: variances and covariance vanish, SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1)
    c1 = (0.01 * 255) ** 2
    x = np.full((32, 32), 100.0)
    y = np.full((32, 32), 140.0)
    assert ssim(x, y) == pytest.approx((2 * 100 * 140 + c1) / (100**2 + 140**2 + c1), rel=1e-9)


def test_ssim_uses_luma_and_falls_with_noise():
    yy, xx = np.mgrid[0:48, 0:64]
    a = np.stack([2 * xx + yy, 3 * yy, xx + 100], axis=-1).astype(np.uint8)  # smooth RGB gradient
    luma = np.array([0.299, 0.587, 0.114])
    rng = np.random.default_rng(3)

    def noisy(sigma):
        return np.clip(a.astype(int) + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8)

    slight, heavy = noisy(3), noisy(30)
    s_slight, s_heavy = ssim(a, slight), ssim(a, heavy)
    assert s_slight == pytest.approx(ssim(a @ luma, slight @ luma), rel=1e-12)  # computed on BT.601 luma
    assert 1.0 > s_slight > s_heavy > 0
    assert s_heavy < 0.5
    assert ssim(heavy, a) == pytest.approx(s_heavy, rel=1e-12)  # symmetric


def test_ssim_matches_scikit_image_gaussian_ssim():
    metrics = pytest.importorskip("skimage.metrics")
    a = _image(4).astype(np.float64)[..., 0]
    b = np.clip(a + np.random.default_rng(5).normal(0, 15, a.shape), 0, 255)
    expected = metrics.structural_similarity(
        a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(a, b) == pytest.approx(expected, abs=1e-6)


def test_reconstruction_meter_uses_one_mse_over_the_clip():
    a = np.stack([_image(6), _image(7)])
    b = a.copy()
    b[1] = (b[1].astype(int) + 2).astype(np.uint8)  # frame 0 identical, frame 1 off by 2
    meter = ReconstructionMeter()
    meter.update(a[:1], b[:1])
    meter.update(a[1:], b[1:])
    assert meter.psnr == pytest.approx(10 * math.log10(255**2 / 2.0), rel=1e-12)  # MSE (0 + 4) / 2
    assert meter.ssim == pytest.approx((1.0 + ssim(a[1], b[1])) / 2, rel=1e-12)
    with pytest.raises(ValueError, match="resolution"):
        meter.update(a[:, :40], b)


# ----------------------------------------------------------------------------------------------------
# Filelist and CSV
# ----------------------------------------------------------------------------------------------------


def test_parse_filelist(tmp_path):
    ref = tmp_path / "gt"
    ref.mkdir()
    (ref / "b.mp4").write_bytes(b"")
    text = (
        "# generated, audio, ground truth\n\n"
        "a.mp4 a.wav\n"
        "sub/b.mp4  b.wav   b_gt.mp4\n"
        "my clip.mp4\tmy audio.wav\n"
        "/abs/c.mp4 c.wav\n"
    )
    pairs = parse_filelist(text, tmp_path)
    assert [(p.video, p.audio, p.ground_truth, p.line) for p in pairs] == [
        (tmp_path / "a.mp4", tmp_path / "a.wav", None, 3),
        (tmp_path / "sub/b.mp4", tmp_path / "b.wav", tmp_path / "b_gt.mp4", 4),
        (tmp_path / "my clip.mp4", tmp_path / "my audio.wav", None, 5),
        (Path("/abs/c.mp4"), tmp_path / "c.wav", None, 6),
    ]
    with_ref = parse_filelist(text, tmp_path, reference_dir=ref)
    assert with_ref[1].ground_truth == ref / "b_gt.mp4"  # relative third column -> reference dir
    assert with_ref[0].ground_truth is None  # gt/a.mp4 does not exist
    assert parse_filelist("x/b.mp4 b.wav\n", tmp_path, reference_dir=ref)[0].ground_truth == ref / "b.mp4"


def test_parse_filelist_errors_name_the_line(tmp_path):
    with pytest.raises(FilelistError, match="line 2 has 1 fields"):
        parse_filelist("a.mp4 a.wav\nonly_one.mp4\n", tmp_path)
    with pytest.raises(FilelistError, match="line 1 has 4 fields"):
        parse_filelist("a b c d\n", tmp_path)
    with pytest.raises(FilelistError, match="no pairs"):
        parse_filelist("# nothing\n\n", tmp_path)


def test_write_csv_columns_and_atomic_replace(tmp_path, monkeypatch):
    out = tmp_path / "scores.csv"
    rows = [
        EvalRow("v1.mp4", "a1.wav", 7.25, 6.5, -1, math.inf, 1.0),
        EvalRow("v2.mp4", "a2.wav", 8.0, 3.125, 0),
    ]
    write_csv(rows, out)
    with out.open(newline="") as handle:
        table = list(csv.reader(handle))
    assert tuple(table[0]) == CSV_COLUMNS == ("video", "audio", "lse_d", "lse_c", "offset", "psnr", "ssim")
    assert table[1] == ["v1.mp4", "a1.wav", "7.250000", "6.500000", "-1", "inf", "1.000000"]
    assert table[2] == ["v2.mp4", "a2.wav", "8.000000", "3.125000", "0", "", ""]

    # a failure while replacing leaves the old file and no temporary file behind
    before = out.read_bytes()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(evaluate.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_csv(rows[:1], out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]


# ----------------------------------------------------------------------------------------------------
# CLI errors (no model is loaded for bad input)
# ----------------------------------------------------------------------------------------------------


def _stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "scores.csv"
    assert main(["--filelist", str(tmp_path / "missing.txt"), "--output", str(out)]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and "missing.txt" in lines[0] and "does not exist" in lines[0]

    filelist = tmp_path / "pairs.txt"
    filelist.write_text("video.mp4\n")
    assert main(["--filelist", str(filelist), "--output", str(out)]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and "line 1" in lines[0]

    (tmp_path / "audio.wav").write_bytes(b"")
    filelist.write_text("video.mp4 audio.wav\n")
    assert main(["--filelist", str(filelist), "--output", str(out)]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and "video.mp4" in lines[0] and "line 1" in lines[0]
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------
# End to end (needs ffmpeg and the video/audio/faces modules)
# ----------------------------------------------------------------------------------------------------


def _needs_media_stack():
    for module in ("lipsync.media.reader", "lipsync.media.audio", "lipsync.media.detectors"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not available yet")
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")


class FixedBoxDetector:
    """Fake detector: one face at a fixed box in every frame."""

    def detect(self, frames):
        return [np.array([[16.0, 12.0, 48.0, 44.0, 0.99]]) for _ in frames]


def test_cli_end_to_end(tmp_path, monkeypatch):
    _needs_media_stack()
    import lipsync.media.detectors
    from lipsync.scoring.syncnet import SyncNetV2

    # 0.4 s of 64x64 video at 25 fps and 0.5 s of audio
    video = tmp_path / "clip.mp4"
    audio = tmp_path / "speech.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=0.4",
         "-pix_fmt", "yuv420p", str(video)],
        check=True,
    )
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=300:duration=0.5",
         "-ar", "16000", "-ac", "1", str(audio)],
        check=True,
    )
    torch.manual_seed(0)
    checkpoint = tmp_path / "syncnet_v2.model"
    torch.save(SyncNetV2().state_dict(), checkpoint)
    monkeypatch.setattr(lipsync.media.detectors, "get_detector", lambda name, device="cpu", **kw: FixedBoxDetector())

    filelist = tmp_path / "pairs.txt"
    filelist.write_text("clip.mp4 speech.wav clip.mp4\nclip.mp4 speech.wav\n")
    out = tmp_path / "scores.csv"
    code = main(["--filelist", str(filelist), "--output", str(out), "--syncnet-checkpoint", str(checkpoint),
                 "--detector", "opencv", "--device", "cpu"])
    assert code == 0
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    first, second = rows
    assert first["video"] == str(video) and first["audio"] == str(audio)
    assert first["psnr"] == "inf" and float(first["ssim"]) == pytest.approx(1.0)  # ground truth = itself
    assert second["psnr"] == "" and second["ssim"] == ""
    for row in rows:
        lse_d, lse_c, offset = float(row["lse_d"]), float(row["lse_c"]), int(row["offset"])
        assert lse_d > 0 and lse_c >= 0 and -15 <= offset <= 15
    assert first["lse_d"] == second["lse_d"]  # same pair, same score
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
