"""What a training run tells the user: a progress bar (or plain lines), CSV logs, TensorBoard, PNG grids."""

from __future__ import annotations

import csv
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)


class CSVLog:
    """Appends one row per call to a CSV file with fixed columns.

    On resume (``resume_step`` given) rows with ``step > resume_step`` are dropped first, so the log of a
    resumed run equals the uninterrupted run's.
    """

    def __init__(self, path: Path, columns: Sequence[str], resume_step: Optional[int] = None):
        self.path = Path(path)
        self.columns = list(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            self._write_all(rows)
        elif not self.path.is_file() or resume_step is None:
            self._write_all([])

    def _write_all(self, rows: List[Dict[str, str]]) -> None:
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: Dict[str, float]) -> None:
        """Append ``row`` (missing columns stay empty)."""
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


class TensorBoardLog:
    """Scalars and images to TensorBoard when the ``tensorboard`` package is installed; a no-op otherwise."""

    def __init__(self, log_dir: Path):
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: the CSV logs remain
            logger.info("tensorboard is not installed; logging to CSV only (pip install tensorboard)")
            return
        self.writer = SummaryWriter(str(log_dir))

    def scalars(self, step: int, values: Dict[str, float], prefix: str = "train") -> None:
        """Log ``values`` (name -> number) as ``prefix/name`` at ``step``."""
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def image(self, step: int, name: str, image_hwc: np.ndarray) -> None:
        """Log a uint8 (H, W, 3) image at ``step``."""
        if self.writer is not None:
            self.writer.add_image(name, image_hwc, step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()


class Progress:
    """A tqdm bar with the losses and steps/s on a terminal; plain lines every ``every`` steps otherwise."""

    def __init__(self, total: int, initial: int, enabled: bool = True, every: int = 10, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.every = max(1, int(every))
        self.total = int(total)
        self.bar = None
        self.start_time = time.perf_counter()
        self.start_step = int(initial)
        if enabled and hasattr(self.stream, "isatty") and self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", file=self.stream,
                            dynamic_ncols=True)

    def steps_per_second(self, step: int) -> float:
        """Optimiser steps per second since this process started (or resumed)."""
        elapsed = time.perf_counter() - self.start_time
        return (step - self.start_step) / elapsed if elapsed > 0 else 0.0

    def update(self, step: int, values: Dict[str, float]) -> None:
        """Report that optimiser step ``step`` (1-based count of finished steps) is done."""
        if not self.enabled:
            return
        shown = {k: f"{v:.4g}" for k, v in values.items()}
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(shown, refresh=False)
        elif step % self.every == 0 or step == self.total:
            text = " ".join(f"{k}={v}" for k, v in shown.items())
            print(f"step {step}/{self.total} {text} ({self.steps_per_second(step):.3g} steps/s)",
                  file=self.stream, flush=True)

    def write(self, message: str) -> None:
        """Print a message without breaking the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """Close the bar (a no-op for plain lines)."""
        if self.bar is not None:
            self.bar.close()


def to_uint8_hwc(images) -> np.ndarray:
    """Float (N, 3, H, W) images in [-1, 1] (tensor or array) -> uint8 (N, H, W, 3)."""
    array = images.detach().float().cpu().numpy() if hasattr(images, "detach") else np.asarray(images, np.float32)
    return (np.clip((array + 1.0) / 2.0, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def image_grid(columns: Sequence[np.ndarray], labels: Sequence[str] = (), gap: int = 2) -> np.ndarray:
    """Rows of images side by side: ``columns[c][r]`` is row r of column c, each uint8 (N, H, W, 3).

    Returns one uint8 (rows * (H + gap) + label, cols * (W + gap), 3) image on a white background, with
    the column labels written on top when given.
    """
    n, h, w, _ = columns[0].shape
    top = 12 if labels else 0
    grid = np.full((top + n * (h + gap), len(columns) * (w + gap), 3), 255, np.uint8)
    for c, images in enumerate(columns):
        for r in range(n):
            y, x = top + r * (h + gap), c * (w + gap)
            grid[y:y + h, x:x + w] = images[r]
    if labels:
        from PIL import Image, ImageDraw

        image = Image.fromarray(grid)
        draw = ImageDraw.Draw(image)
        for c, label in enumerate(labels):
            draw.text((c * (w + gap) + 2, 0), label, fill=(0, 0, 0))
        grid = np.asarray(image)
    return grid


def save_png(image_hwc: np.ndarray, path: Path) -> None:
    """Write a uint8 (H, W, 3) image as PNG (parent folders created)."""
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_hwc).save(path)
