"""Jobs of the app: one folder each, a Stop that ends them, and one progress bar with stage, step and ETA."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from lipsync.app.estimates import format_duration

STAGE_NAMES = {"audio": "reading the speech", "decode": "reading the video", "detect": "finding the face",
               "diffusion": "lip-syncing", "paste": "lip-syncing", "wav2lip": "running Wav2Lip",
               "score": "scoring lip sync", "encode": "writing the video"}
STAGE_SPANS = {"audio": (0.0, 0.05), "decode": (0.05, 0.15), "detect": (0.05, 0.15), "diffusion": (0.15, 0.9),
               "paste": (0.15, 0.9), "wav2lip": (0.15, 0.9), "score": (0.9, 0.95), "encode": (0.95, 1.0)}


class JobCancelled(Exception):
    """Raised from a job's progress callback after Stop; the engine then leaves no output."""


class JobFolders:
    """One temp folder per job; older folders are removed when a new job starts (keep the last ``keep``).

    Gradio copies returned files into its own cache (cleaned by ``delete_cache``), so a job's folder is
    only needed until its outputs have been sent. ``root``: where the folders go (default: a new temp folder).
    """

    def __init__(self, keep: int = 3, root: Optional[Path] = None):
        self.keep = max(1, keep)
        self._root = Path(root) if root is not None else None

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="diff2lip-jobs-"))
            atexit.register(shutil.rmtree, self._root, True)
        self._root.mkdir(parents=True, exist_ok=True)
        return self._root

    def new(self) -> Path:
        """A fresh folder for one job, after deleting all but the newest ``keep - 1`` old ones."""
        old = sorted(p for p in self.root.iterdir() if p.is_dir())
        for folder in old[: max(0, len(old) - self.keep + 1)]:
            shutil.rmtree(folder, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f"job-{time.time_ns()}-", dir=self.root))


class StopSwitch:
    """Per browser session: a flag that Stop raises and the session's running job checks."""

    def __init__(self):
        self._jobs: Dict[str, Tuple[threading.Event, threading.Event]] = {}  # session: (stop, done)
        self._lock = threading.Lock()

    def start(self, session: str) -> threading.Event:
        """A fresh, lowered stop flag for the job ``session`` starts now."""
        with self._lock:
            stop, done = self._jobs[session] = (threading.Event(), threading.Event())
            return stop

    def stop(self, session: str, wait: float = 8.0) -> bool:
        """Raise the flag of ``session``'s job and wait up to ``wait`` s for it to end; False when none runs."""
        with self._lock:
            job = self._jobs.get(session)
        if job is None:
            return False
        stop, done = job
        stop.set()
        done.wait(wait)
        return True

    def finish(self, session: str, flag: threading.Event) -> None:
        """The job that ``start`` gave ``flag`` has ended (and cleaned up)."""
        with self._lock:
            job = self._jobs.get(session)
            if job is not None and job[0] is flag:
                del self._jobs[session]
        if job is not None:
            job[1].set()


def progress_reporter(progress: Callable, stop: Optional[threading.Event] = None,
                      clock: Callable[[], float] = time.monotonic):
    """Map the engine's ``progress(stage, fraction, message)`` onto one progress bar ``progress(value, desc=)``.

    The text names the stage and the engine's message (e.g. "diffusion step 3/25, frame 40/240") and, once
    a few percent are done, the time left. Raises ``JobCancelled`` as soon as ``stop`` is set.
    """
    start = clock()

    def report(stage: str, fraction: float, message: str) -> None:
        if stop is not None and stop.is_set():
            raise JobCancelled("stopped")
        lo, hi = STAGE_SPANS.get(stage, (0.0, 1.0))
        value = lo + (hi - lo) * min(max(fraction, 0.0), 1.0)
        text = f"{STAGE_NAMES.get(stage, stage)}: {message}"
        elapsed = clock() - start
        if 0.15 < value < 1.0 and elapsed > 2:
            text += f" ({format_duration(elapsed * (1 - value) / value)} left)"
        progress(value, desc=text)

    return report
