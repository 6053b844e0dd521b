"""SyncNet v2: exact key layout, checkpoint loading, MFCC definition, LSE-D / LSE-C known answers, windowing."""

from __future__ import annotations

import json
import math
import cv2
import numpy as np
import pytest
import torch
from torch import nn

from lipsync.errors import AudioTooShortError, CheckpointMismatchError, WeightsUnavailableError
from lipsync.scoring.syncnet import (
    SYNCNET_CHECKPOINT_ENV,
    SYNCNET_HUB_FILENAME,
    SYNCNET_HUB_REPO,
    SyncNetConfig,
    SyncNetV2,
    SyncScorer,
    compute_lse,
    crop_syncnet_faces,
    load_syncnet,
    mfcc,
    resample_frame_indices,
    wav_to_int16_scale,
)

# ----------------------------------------------------------------------------------------------------
# Network and checkpoints
# ----------------------------------------------------------------------------------------------------


def test_state_dict_matches_reference_layout(fixtures_dir):
    ref = json.loads((fixtures_dir / "syncnet_v2_keys.json").read_text())
    model = SyncNetV2()
    state = model.state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == [(e["key"], e["shape"]) for e in ref["entries"]]
    assert len(state) == ref["num_keys"] == 102
    dtypes = {e["key"]: e["dtype"] for e in ref["entries"]}
    assert all(str(v.dtype).replace("torch.", "") == dtypes[k] for k, v in state.items())
    assert sum(p.numel() for p in model.parameters()) == ref["total_params"] == 13_631_616


@pytest.fixture(scope="module")
def syncnet() -> SyncNetV2:
    torch.manual_seed(0)
    model = SyncNetV2().eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                tensor.normal_(0, 0.1)
    return model


def test_embedding_shapes(syncnet):
    torch.manual_seed(1)
    with torch.no_grad():
        aud = syncnet.forward_aud(torch.randn(2, 1, 13, 20))
        lip = syncnet.forward_lip(torch.rand(1, 3, 5, 224, 224) * 255)
    assert aud.shape == (2, 1024) and lip.shape == (1, 1024)
    assert torch.isfinite(aud).all() and torch.isfinite(lip).all()


def test_checkpoint_plain_and_prefixed_load_identically(tmp_path, syncnet):
    state = syncnet.state_dict()
    torch.save(dict(state), tmp_path / "syncnet_v2.model")  # the released format: plain name -> tensor
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    torch.manual_seed(2)
    mf = torch.randn(3, 1, 13, 20)
    with torch.no_grad():
        reference = syncnet.forward_aud(mf)
        for path in (tmp_path / "syncnet_v2.model", tmp_path / "wrapped.pth"):
            loaded = load_syncnet(path, device="cpu")
            assert not loaded.training
            assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
            torch.testing.assert_close(loaded.forward_aud(mf), reference, atol=0, rtol=0)


def test_checkpoint_missing_key_is_named(tmp_path, syncnet, monkeypatch):
    state = dict(syncnet.state_dict())
    del state["netfclip.3.bias"]
    path = tmp_path / "bad.model"
    torch.save(state, path)
    monkeypatch.setenv(SYNCNET_CHECKPOINT_ENV, str(path))
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: netfclip\.3\.bias"):
        load_syncnet(device="cpu")


def test_hub_offline_error_names_repo_file_and_env(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv(SYNCNET_CHECKPOINT_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailableError) as info:
        load_syncnet(device="cpu")
    message = str(info.value)
    assert SYNCNET_HUB_REPO in message and SYNCNET_HUB_FILENAME in message
    assert SYNCNET_CHECKPOINT_ENV in message and "--syncnet-checkpoint" in message


# ----------------------------------------------------------------------------------------------------
# MFCC
# ----------------------------------------------------------------------------------------------------


def test_mfcc_shape_and_rate():
    rng = np.random.default_rng(0)
    one_s = mfcc(rng.normal(0, 3000, 16000))
    assert one_s.shape == (99, 13)  # 1 + ceil((16000 - 400) / 160): 100 frames/s, last window must fit
    assert mfcc(rng.normal(0, 3000, 32000)).shape == (199, 13)  # +100 frames per second
    assert mfcc(rng.normal(0, 3000, 16080)).shape == (99, 13)
    assert mfcc(rng.normal(0, 3000, 16081)).shape == (100, 13)  # a partial last frame is zero-padded
    assert mfcc(np.ones(300)).shape == (1, 13)


def test_mfcc_energy_coefficient_is_log_frame_energy():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1000, 4000)
    feats = mfcc(x)
    # frame 3 = samples 480..879 of the pre-emphasised signal, rectangular window, |rfft(512)|^2 / 512
    y = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    frame = y[480:880]
    energy = np.sum(np.abs(np.fft.rfft(frame, 512)) ** 2) / 512
    assert feats[3, 0] == pytest.approx(math.log(energy), rel=1e-12)


def test_mfcc_matches_python_speech_features_on_noise():
    psf = pytest.importorskip("python_speech_features")
    rng = np.random.default_rng(2)
    noise = np.round(rng.normal(0, 4000, 12345)).astype(np.int16)
    np.testing.assert_allclose(mfcc(noise.astype(np.float64), 16000), psf.mfcc(noise, 16000), rtol=1e-10, atol=1e-9)


def test_mfcc_matches_python_speech_features_on_speech(fixtures_dir):
    psf = pytest.importorskip("python_speech_features")
    from scipy.io import wavfile

    rate, speech = wavfile.read(fixtures_dir / "speech_16k.wav")  # int16, 16 kHz: the recipe's input
    np.testing.assert_allclose(mfcc(speech, rate), psf.mfcc(speech, rate), rtol=1e-10, atol=1e-9)


def test_wav_to_int16_scale_round_trips_int16():
    ints = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    np.testing.assert_array_equal(wav_to_int16_scale(ints.astype(np.float32) / 32768), ints.astype(np.float64))


# ----------------------------------------------------------------------------------------------------
# LSE-D / LSE-C
# ----------------------------------------------------------------------------------------------------


def _reference_mean_dists(video, audio, vshift, eps=1e-6):
    """Independent loop version of the published definition (zero vector outside the audio)."""
    out = []
    for o in range(-vshift, vshift + 1):
        d = []
        for t in range(len(video)):
            a = audio[t + o] if 0 <= t + o < len(audio) else np.zeros(video.shape[1])
            d.append(math.sqrt(sum((video[t] - a + eps) ** 2)))
        out.append(sum(d) / len(d))
    return np.array(out)


@pytest.mark.parametrize("k", [3, 0])
def test_lse_known_offset(k):
    rng = np.random.default_rng(10 + k)
    n, dim, vshift = 40, 32, 15
    audio = rng.normal(size=(n + k, dim))
    video = audio[k : k + n].copy()  # audio_emb[t + k] == video_emb[t] for every t
    score = compute_lse(video, audio, vshift=vshift)

    assert score.offset == -k  # AV offset = vshift - argmin; audio lagging the video by k frames reads -k
    assert score.min_dist == pytest.approx(1e-6 * math.sqrt(dim), abs=1e-9)  # only the pairwise-distance eps
    expected = _reference_mean_dists(video, audio, vshift)
    np.testing.assert_allclose(score.dists, expected, rtol=1e-12)
    assert int(np.argmin(expected)) == vshift + k
    assert score.min_dist == pytest.approx(expected.min(), rel=1e-12)
    assert score.confidence == pytest.approx(float(np.median(expected) - expected.min()), rel=1e-12)
    assert score.lse_d == score.min_dist and score.lse_c == score.confidence
    assert score.frame_dists.shape == (n, 2 * vshift + 1)


def test_lse_audio_leading_gives_positive_offset():
    # the recipe's setting T' == T: video[t] == audio[t - 2] (the sound came 2 frames early)
    rng = np.random.default_rng(5)
    n, dim = 30, 16
    audio = rng.normal(size=(n, dim))
    video = rng.normal(size=(n, dim))
    video[2:] = audio[:-2]
    score = compute_lse(video, audio, vshift=15)
    expected = _reference_mean_dists(video, audio, 15)
    assert score.offset == 2
    np.testing.assert_allclose(score.dists, expected, rtol=1e-12)
    assert score.confidence == pytest.approx(float(np.median(expected) - expected.min()), rel=1e-12)


def test_lse_zero_padding_small_known_answer():
    video = np.array([[3.0, 4.0], [0.0, 0.0]])
    audio = np.array([[3.0, 4.0], [1.0, 0.0]])
    score = compute_lse(video, audio, vshift=1, eps=0.0)
    # offset -1: v0 vs zeros = 5, v1 vs a0 = 5 -> 5;  0: 0, 1 -> 0.5;  +1: |v0-a1| = sqrt(20), v1 vs zeros = 0
    np.testing.assert_allclose(score.dists, [5.0, 0.5, math.sqrt(20) / 2])
    assert score.offset == 1 - 1 and score.min_dist == 0.5
    assert score.confidence == pytest.approx(math.sqrt(20) / 2 - 0.5)


def test_lse_rejects_bad_embeddings():
    with pytest.raises(ValueError):
        compute_lse(np.zeros((0, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError):
        compute_lse(np.zeros((3, 4)), np.zeros((3, 5)))


# ----------------------------------------------------------------------------------------------------
# Windows, frame rate, crops
# ----------------------------------------------------------------------------------------------------


class RecordingSyncNet(nn.Module):
    """Stub with SyncNet's interface: records its inputs, returns 4-D summaries as embeddings."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.videos, self.audios = [], []

    def forward_lip(self, video):
        self.videos.append(video.clone())
        return video.mean(dim=(1, 3, 4))[:, :4] + self.dummy  # (B, 4)

    def forward_aud(self, mf):
        self.audios.append(mf.clone())
        return mf.mean(dim=(1, 2))[:, :4] + self.dummy


def test_scorer_windows_follow_the_recipe():
    rng = np.random.default_rng(3)
    faces = rng.integers(0, 256, (12, 224, 224, 3), dtype=np.uint8)
    wav = rng.normal(0, 0.1, 640 * 10 + 100).astype(np.float32)  # 10 frames of audio -> min_length 10
    stub = RecordingSyncNet()
    scorer = SyncScorer(stub, SyncNetConfig(batch_size=3))
    video_emb, audio_emb = scorer.embed(faces, wav, fps=25.0)

    assert video_emb.shape == audio_emb.shape == (5, 4)  # windows v = 0..min_length-6
    videos = torch.cat(stub.videos).numpy()
    audios = torch.cat(stub.audios).numpy()
    assert videos.shape == (5, 3, 5, 224, 224) and audios.shape == (5, 1, 13, 20)
    cep = mfcc(np.round(wav.astype(np.float64) * 32768)).T
    for v in range(5):
        # BGR, 0..255, frames v..v+4 on the time axis
        clip_bgr = faces[v : v + 5, :, :, ::-1].transpose(3, 0, 1, 2).astype(np.float32)  # (3, 5, 224, 224)
        np.testing.assert_array_equal(videos[v], clip_bgr)
        np.testing.assert_allclose(audios[v, 0], cep[:, 4 * v : 4 * v + 20].astype(np.float32), rtol=1e-6)

    score = scorer.score(faces, wav, fps=25.0)
    ref = compute_lse(video_emb, audio_emb, 15)
    assert score.offset == ref.offset and score.min_dist == pytest.approx(ref.min_dist)


def test_scorer_short_inputs_raise():
    scorer = SyncScorer(RecordingSyncNet())
    faces = np.zeros((20, 224, 224, 3), np.uint8)
    with pytest.raises(AudioTooShortError, match="audio"):
        scorer.embed(faces, np.zeros(640 * 5, np.float32))
    with pytest.raises(ValueError, match="frames"):
        scorer.embed(faces[:5], np.zeros(640 * 20, np.float32))


def test_resample_frame_indices():
    np.testing.assert_array_equal(resample_frame_indices(10, 25.0), np.arange(10))
    np.testing.assert_array_equal(resample_frame_indices(10, 50.0), [0, 2, 4, 6, 8])
    idx = resample_frame_indices(30, 30.0)  # 1 s at 30 fps -> 25 frames, nearest in time
    assert len(idx) == 25 and idx[0] == 0 and idx[-1] == 29 and np.all(np.diff(idx) >= 1)
    assert idx[5] == 6  # t = 0.2 s -> 30 fps frame 6


def test_crop_geometry():
    h, w = 200, 240
    frame = (np.arange(h)[:, None, None] + 3 * np.arange(w)[None, :, None] + np.array([0, 50, 100])) % 256
    frames = np.repeat(frame[None].astype(np.uint8), 3, axis=0)
    boxes = np.tile([[80.0, 50.0, 130.0, 100.0]], (3, 1))  # 50x50, centre (105, 75): s = 25
    crops = crop_syncnet_faces(frames, boxes, size=224)
    # rows [cy - s, cy + 1.8 s) = [50, 120), cols cx -/+ 1.4 s = [70, 140)
    expected = cv2.resize(frame[50:120, 70:140].astype(np.uint8), (224, 224), interpolation=cv2.INTER_LINEAR)
    assert crops.shape == (3, 224, 224, 3)
    np.testing.assert_array_equal(crops[1], expected)
    # near the border the recipe pads with 110
    corner = crop_syncnet_faces(frames[:1], np.array([[0.0, 0.0, 20.0, 20.0]]), size=28, smooth=False)
    assert np.all(corner[0, :3, :3] == 110)
