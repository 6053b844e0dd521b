"""Jobs of the app: one folder each, a Stop that ends them, and one progress bar with stage, step and time left."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional

from lipsync.app.estimates import TimeLeft, format_time_left

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
        self._jobs: Dict[str, threading.Event] = {}  # session: the stop flag of its running job
        self._done: Dict[threading.Event, threading.Event] = {}  # stop flag: set when that job has ended
        self._lock = threading.Lock()

    def start(self, session: str) -> threading.Event:
        """A fresh, lowered stop flag for the job ``session`` starts now."""
        with self._lock:
            stop = self._jobs[session] = threading.Event()
            self._done[stop] = threading.Event()
            return stop

    def running(self, session: str) -> bool:
        """Whether a job of ``session`` is running now."""
        with self._lock:
            return session in self._jobs

    def stop(self, session: str, wait: float = 8.0) -> bool:
        """Raise the flag of ``session``'s job and wait up to ``wait`` s for it to end; False when none runs."""
        with self._lock:
            stop = self._jobs.get(session)
            done = self._done.get(stop) if stop is not None else None
        if stop is None or done is None:
            return False
        stop.set()
        done.wait(wait)
        return True

    def finish(self, session: str, flag: threading.Event) -> None:
        """The job that ``start`` gave ``flag`` has ended (and cleaned up)."""
        with self._lock:
            if self._jobs.get(session) is flag:
                del self._jobs[session]
            done = self._done.pop(flag, None)
        if done is not None:
            done.set()


def progress_reporter(progress: Callable, stop: Optional[threading.Event] = None,
                      time_left: Optional[TimeLeft] = None):
    """Map the engine's ``progress(stage, fraction, message)`` onto one progress bar ``progress(value, desc=)``.

    The text names the stage and the engine's message (e.g. "diffusion step 3/25, frame 40/240") and, when
    ``time_left`` (a ``TimeLeft`` started with the job) knows it, the time left; the bar then shows the time
    spent over the time spent and left (never moving back), else a fixed share per stage. Raises
    ``JobCancelled`` as soon as ``stop`` is set.
    """
    shown = [0.0]

    def report(stage: str, fraction: float, message: str) -> None:
        if stop is not None and stop.is_set():
            raise JobCancelled("stopped")
        fraction = min(max(fraction, 0.0), 1.0)
        lo, hi = STAGE_SPANS.get(stage, (0.0, 1.0))
        value = lo + (hi - lo) * fraction
        text = f"{STAGE_NAMES.get(stage, stage)}: {message}"
        left = time_left(stage, fraction) if time_left is not None else None
        if left is not None:
            spent = time_left.clock() - time_left.started
            value = spent / (spent + left) if spent + left > 0 else value
            if left >= 1.0:
                text += f" ({format_time_left(left)} left)"
        shown[0] = max(shown[0], min(value, 1.0))
        progress(shown[0], desc=text)

    return report
