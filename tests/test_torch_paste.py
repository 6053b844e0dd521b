"""Crop and paste in torch (the path used when the model runs on a GPU) equal the OpenCV path within 1 grey level.

Run on CPU tensors here; on a GPU the same code runs on CUDA tensors.
"""

import numpy as np
import pytest
import torch
from conftest import small_pipeline

from lipsync.engine import LipSyncEngine
from lipsync.job import JobOptions
from lipsync.media import torch_ops
from lipsync.media.crop import crop_faces, paste_faces
from lipsync.media.reader import iter_frames
from lipsync.media.torch_ops import crop_faces_torch, paste_faces_torch


def scene(seed=0, n=10, height=270, width=360):
    """Frames with fine texture and smooth gradients, boxes of many sizes (down- and upscaled, odd, at edges)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) % 256)], -1)
    frames = np.clip(base[None] + rng.integers(-40, 41, (n, height, width, 3)), 0, 255).astype(np.uint8)
    boxes = [(0, 0, 128, 128), (0, 0, width, height), (10, 20, 74, 84), (5, 7, 261, 263), (300, 200, 360, 270),
             (1, 1, 3, 2)]
    while len(boxes) < n:
        w, h = int(rng.integers(8, 250)), int(rng.integers(8, 250))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        boxes.append((x, y, x + w, y + h))
    faces = rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
    return frames, np.array(boxes[:n]), faces


def max_diff(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max())


def test_torch_crop_equals_opencv_within_one_grey_level():
    frames, boxes, _ = scene()
    expected = crop_faces(frames, boxes, 128)
    got = crop_faces_torch(torch.from_numpy(frames), boxes, 128)
    assert got.dtype == torch.uint8 and tuple(got.shape) == expected.shape
    assert max_diff(got.numpy(), expected) <= 1
    assert np.mean(got.numpy() == expected) > 0.8  # the same resize, not merely a similar picture
    with pytest.raises(ValueError, match="empty"):
        crop_faces_torch(torch.from_numpy(frames[:1]), np.array([[10, 10, 10, 40]]))


@pytest.mark.parametrize("mode", ["mouth", "box"])
def test_torch_paste_equals_opencv_within_one_grey_level_and_keeps_the_rest(mode):
    frames, boxes, faces = scene(1)
    valid = np.ones(len(frames), bool)
    valid[4] = False
    expected = paste_faces(frames, boxes, faces, valid, mode=mode)
    got = paste_faces_torch(torch.from_numpy(frames), boxes, torch.from_numpy(faces), valid, mode=mode).numpy()
    assert max_diff(got, expected) <= 1
    changed = got != frames
    assert np.array_equal(got[4], frames[4])  # a frame without a face is untouched
    for i in np.flatnonzero(valid):
        x1, y1, x2, y2 = boxes[i]
        outside = np.ones(frames.shape[1:3], bool)
        outside[y1:y2, x1:x2] = False
        assert not changed[i][outside].any()  # nothing outside the box moves
        if mode == "mouth":
            top = (y2 - y1) - int((y2 - y1) * 0.5)
            assert not changed[i, y1:y1 + top].any()  # the upper half keeps the source's pixels
    assert changed.any()


def test_device_round_trip_on_a_real_clip_equals_the_cpu_path(media_dir):
    frames = next(iter_frames(media_dir / "pub_video3_sadtalker_katiehill.mp4", chunk_size=6))
    boxes = np.array([[140, 90, 380, 350]] * len(frames))
    valid = np.array([True, True, False, True, True, True])
    crops, on_device = torch_ops.crop_on_device(frames, boxes, valid, 128, "cpu")
    assert max_diff(crops, crop_faces(frames[valid], boxes[valid], 128)) <= 1
    generated = np.zeros((len(frames), 128, 128, 3), np.uint8)
    generated[valid] = 255 - crops
    pasted = torch_ops.paste_on_device(on_device, boxes, generated, valid)
    assert max_diff(pasted, paste_faces(frames, boxes, generated, valid)) <= 1
    assert torch_ops.media_device("cpu") is None and torch_ops.media_device("cuda:0") == torch.device("cuda:0")


def test_engine_with_device_media_path_pastes_as_the_cpu_path(media_dir, tmp_path, monkeypatch):
    """The engine's GPU branch (forced onto CPU tensors) pastes the same faces into the same frames as the OpenCV
    branch, within 1 grey level (before encoding: x264 spreads a 1-level change over the picture). Its crops are
    OpenCV's here: a 1-level change in the model's input can move a random model's output by more (the crops
    themselves are compared above)."""
    import soundfile

    from lipsync.job import STAGES
    from lipsync.media import audio as audio_io
    from lipsync.media.stages import StageTimer

    wav = audio_io.load_audio(media_dir / "tts_en.wav")[: int(0.4 * 16000)]
    soundfile.write(tmp_path / "speech.wav", wav, 16000)
    engine = LipSyncEngine(pipeline=small_pipeline(), detector="opencv")
    options = JobOptions(num_inference_steps=1, detector="opencv", side_by_side=False, chunk_frames=4)

    def lip_synced():
        plan = engine._plan(media_dir / "pub_video1_retalking_face2.mp4", tmp_path / "speech.wav", options,
                            StageTimer(STAGES), None)
        return np.concatenate([result for _, result in engine._generate(plan, options, StageTimer(STAGES), None)])

    on_cpu = lip_synced()
    used = []
    real_crop, real_paste = torch_ops.crop_on_device, torch_ops.paste_on_device
    monkeypatch.setattr(torch_ops, "media_device", lambda device: torch.device("cpu"))
    monkeypatch.setattr(torch_ops, "crop_on_device", lambda frames, boxes, valid, size, device: (
        crop_faces(frames[valid], boxes[valid], size), real_crop(frames, boxes, valid, size, device)[1]))
    monkeypatch.setattr(torch_ops, "paste_on_device", lambda *a, **k: used.append(1) or real_paste(*a, **k))
    on_device = lip_synced()
    assert len(used) == 3  # 10 frames in chunks of 4: the device branch pasted every chunk
    assert on_cpu.shape == on_device.shape and len(on_cpu) == 10
    assert max_diff(on_cpu, on_device) <= 1
    assert (on_cpu != on_device).mean() < 0.01  # rounding, not a shifted or misplaced face
