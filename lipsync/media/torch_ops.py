"""Crop and paste on batches in torch, on any device: the GPU twin of :mod:`lipsync.media.crop`.

    frames (N, H, W, 3) uint8 tensor + boxes (N, 4) -> crop_faces_torch -> (N, 128, 128, 3) uint8 tensor
    generated crops -> paste_faces_torch -> a copy of the frames (lower half, feathered, by default)

The arithmetic is OpenCV's ``INTER_LINEAR`` (half-pixel centres, source indices clamped to the box, no
antialiasing) and the crop module's feathered blend, in float32 instead of OpenCV's fixed point: results equal
the CPU path within 1 grey level. Every face of a batch is done in one set of gathers, whatever its box size,
so a GPU composes a whole chunk in a few kernel launches while the CPU stays free for decoding and encoding.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch

from lipsync.media.crop import _int_box


def _int_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) int64 x1, y1, x2, y2, each checked non-empty (the same errors as the CPU path)."""
    boxes = np.asarray(boxes)
    return np.array([_int_box(box, f"frame {i}") for i, box in enumerate(boxes)], dtype=np.int64).reshape(-1, 4)


def _linear_taps(dst: torch.Tensor, src_len: torch.Tensor, dst_len: torch.Tensor):
    """OpenCV INTER_LINEAR taps along one axis: output pixel ``dst`` of a ``src_len`` -> ``dst_len`` resize.

    Args:
        dst: (N, K) float output positions (0-based pixel indices).
        src_len, dst_len: (N, 1) float lengths of the source and output axes.
    Returns:
        i0, i1: (N, K) int64 source indices in [0, src_len - 1]; w1: (N, K) float weight of ``i1``.
    """
    src = (dst + 0.5) * (src_len / dst_len) - 0.5
    i0 = torch.floor(src)
    w1 = src - i0
    last = src_len - 1
    i1 = torch.minimum(torch.clamp(i0 + 1, min=0), last)
    w1 = torch.where(i0 < 0, torch.zeros_like(w1), w1)  # OpenCV: left of the first centre, the first pixel
    i0 = torch.minimum(torch.clamp(i0, min=0), last)
    return i0.long(), i1.long(), w1


def _bilinear(images: torch.Tensor, rows0, rows1, wy, cols0, cols1, wx) -> torch.Tensor:
    """Sample ``images`` (N, H, W, C) at per-sample row taps (N, R) and column taps (N, K): (N, R, K, C) float."""
    n = torch.arange(images.shape[0], device=images.device)[:, None, None]

    def at(rows, cols):
        return images[n, rows[:, :, None], cols[:, None, :]].float()

    wx = wx[:, None, :, None]
    top = at(rows0, cols0) * (1 - wx) + at(rows0, cols1) * wx
    bottom = at(rows1, cols0) * (1 - wx) + at(rows1, cols1) * wx
    wy = wy[:, :, None, None]
    return top * (1 - wy) + bottom * wy


def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.round(values), 0, 255).to(torch.uint8)


def crop_faces_torch(frames: torch.Tensor, boxes: np.ndarray, size: int = 128) -> torch.Tensor:
    """``crop.crop_faces`` on a batch in torch: ``cv2.resize(frame[y1:y2, x1:x2], (size, size))`` per frame.

    Args:
        frames: (N, H, W, 3) uint8 tensor RGB on any device.
        boxes: (N, 4) x1, y1, x2, y2 (numpy; truncated to int).
        size: output side in pixels.
    Returns:
        faces (N, size, size, 3) uint8 on ``frames.device``.
    """
    if len(frames) != len(boxes):
        raise ValueError(f"{len(frames)} frames but {len(boxes)} boxes; pass one box per frame")
    device = frames.device
    if len(frames) == 0:
        return torch.empty((0, size, size, 3), dtype=torch.uint8, device=device)
    b = torch.as_tensor(_int_boxes(boxes), device=device)
    x1, y1, x2, y2 = (b[:, k:k + 1] for k in range(4))  # (N, 1) each
    out = torch.arange(size, device=device, dtype=torch.float32)[None].expand(len(b), size)
    cols0, cols1, wx = _linear_taps(out, (x2 - x1).float(), torch.full_like(x1, size).float())
    rows0, rows1, wy = _linear_taps(out, (y2 - y1).float(), torch.full_like(y1, size).float())
    return _to_uint8(_bilinear(frames, rows0 + y1, rows1 + y1, wy, cols0 + x1, cols1 + x1, wx))


def _ramp(distance: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """``crop._ramp``: smoothstep from 0 to 1 over ``width`` pixels."""
    t = torch.clamp((distance + 0.5) / width, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def paste_faces_torch(frames: torch.Tensor, boxes: np.ndarray, faces: torch.Tensor,
                      valid: Optional[np.ndarray] = None, mode: str = "mouth", feather: float = 0.1,
                      mask_fraction: float = 0.5) -> torch.Tensor:
    """``crop.paste_faces`` on a batch in torch (same modes, weights and untouched pixels).

    Args:
        frames: (N, H, W, 3) uint8 tensor RGB; not modified.
        boxes: (N, 4) x1, y1, x2, y2 (numpy; truncated to int).
        faces: (N, S, S, 3) uint8 tensor of generated crops, on ``frames.device``.
        valid: (N,) bool numpy; frames with False are returned untouched. None: all True.
        mode, feather, mask_fraction: as ``crop.paste_faces``.
    Returns:
        new frames (N, H, W, 3) uint8 on ``frames.device``.
    """
    if mode not in ("mouth", "box"):
        raise ValueError(f"unknown paste mode {mode!r}; use 'mouth' or 'box'")
    n = len(frames)
    if not (len(boxes) == len(faces) == n):
        raise ValueError(f"{n} frames, {len(boxes)} boxes and {len(faces)} faces; pass one of each per frame")
    if faces.dtype != torch.uint8 or faces.ndim != 4 or faces.shape[-1] != 3:
        raise ValueError(f"faces has shape {tuple(faces.shape)} and dtype {faces.dtype}; expected (N, S, S, 3) uint8")
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(-1)
    out = frames.clone()
    keep = np.flatnonzero(valid)
    if len(keep) == 0:
        return out
    device = frames.device
    # 1. Per-box geometry, computed exactly as the CPU path does (Python ints and round)
    ints = _int_boxes(np.asarray(boxes)[keep])
    heights, widths = ints[:, 3] - ints[:, 1], ints[:, 2] - ints[:, 0]
    tops = np.array([0 if mode == "box" else h - int(h * mask_fraction) for h in heights], dtype=np.int64)
    fys = np.array([max(1, round(feather * h)) for h in heights], dtype=np.float32)
    fxs = np.array([max(1, round(feather * w)) for w in widths], dtype=np.float32)
    rows_max, cols_max = int((heights - tops).max()), int(widths.max())

    def column(values, dtype=torch.float32):
        return torch.as_tensor(np.asarray(values), device=device).to(dtype)[:, None]  # (K, 1)

    h, w, top = column(heights), column(widths), column(tops)
    x1, y1 = column(ints[:, 0], torch.long), column(ints[:, 1], torch.long)
    # 2. The generated face resized to its box (rows from the mask line down), rounded like cv2's uint8 output
    r = torch.arange(rows_max, device=device, dtype=torch.float32)[None] + top  # (K, R) box rows
    c = torch.arange(cols_max, device=device, dtype=torch.float32)[None].expand(len(keep), cols_max)
    side = float(faces.shape[1])
    rows0, rows1, wy = _linear_taps(r, torch.full_like(h, side), h)
    cols0, cols1, wx = _linear_taps(c, torch.full_like(w, float(faces.shape[2])), w)
    idx = torch.as_tensor(keep, device=device)
    generated = _to_uint8(_bilinear(faces[idx], rows0, rows1, wy, cols0, cols1, wx)).float()  # (K, R, C, 3)
    # 3. Where each value goes in the frame, and with which weight
    inside = (r < h)[:, :, None] & (c < w)[:, None, :]  # (K, R, C)
    frame_rows = (y1 + r.long()).clamp(max=frames.shape[1] - 1)
    frame_cols = (x1 + c.long()).clamp(max=frames.shape[2] - 1)
    region = frames[idx[:, None, None], frame_rows[:, :, None], frame_cols[:, None, :]].float()
    if mode == "box":
        blended = generated
    else:
        a_rows = _ramp(r - top, column(fys)) * _ramp(h - 1 - r, column(fys))
        a_cols = _ramp(c, column(fxs)) * _ramp(w - 1 - c, column(fxs))
        alpha = (a_rows[:, :, None] * a_cols[:, None, :])[..., None]
        blended = region + alpha * (generated - region)
    values = _to_uint8(blended)[inside]  # (P, 3)
    flat = ((idx[:, None, None] * frames.shape[1] + frame_rows[:, :, None]) * frames.shape[2]
            + frame_cols[:, None, :])[inside]
    out.view(-1, 3)[flat] = values
    return out


# ---- the engine's two calls: numpy in, numpy out, frames uploaded once per chunk ------------------------

_streams: dict = {}


def media_device(model_device) -> Optional[torch.device]:
    """Where crop and paste run: the model's GPU, else None (the CPU path: OpenCV is faster there than torch,
    measured with ``benchmarks/e2e.py``)."""
    if model_device is None:
        return None
    device = torch.device(model_device)
    return device if device.type == "cuda" else None


def _stream(device: torch.device):
    """A side CUDA stream per (thread, device): the media work never queues behind the model's kernels."""
    import threading

    key = (threading.get_ident(), str(device))
    if key not in _streams:
        _streams[key] = torch.cuda.Stream(device=device)
    return torch.cuda.stream(_streams[key])


def _on(device: torch.device):
    import contextlib

    return _stream(device) if device.type == "cuda" else contextlib.nullcontext()


def crop_on_device(frames: np.ndarray, boxes: np.ndarray, valid: np.ndarray, size: int, device) -> tuple:
    """Upload a chunk's frames once and crop its valid faces there.

    Args:
        frames: (n, H, W, 3) uint8 RGB; boxes: (n, 4); valid: (n,) bool with at least one True.
    Returns:
        (faces (n_valid, size, size, 3) uint8 numpy, the frames on ``device`` for :func:`paste_on_device`).
    """
    device = torch.device(device)
    with _on(device):
        with warnings.catch_warnings():  # decoded frames are read-only buffers; nothing here writes to them
            warnings.simplefilter("ignore", UserWarning)
            on_device = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
        keep = np.flatnonzero(valid)
        faces = crop_faces_torch(on_device[torch.as_tensor(keep, device=device)], np.asarray(boxes)[keep], size)
        return faces.cpu().numpy(), on_device


def paste_on_device(frames: torch.Tensor, boxes: np.ndarray, faces: np.ndarray, valid: np.ndarray,
                    mode: str = "mouth") -> np.ndarray:
    """``crop.paste_faces`` of numpy ``faces`` (n, S, S, 3) uint8 into ``frames`` from :func:`crop_on_device`;
    returns (n, H, W, 3) uint8 numpy."""
    with _on(frames.device):
        generated = torch.from_numpy(np.ascontiguousarray(faces)).to(frames.device)
        return paste_faces_torch(frames, boxes, generated, valid, mode=mode).cpu().numpy()
