"""A bounded three-stage producer/consumer pipeline: produce ahead, work in the caller's thread, consume behind.

The engine uses it so that decoding + cropping (ahead) and paste + encode (behind) run while the model
denoises: the model never waits for ffmpeg, and at most ``depth`` items wait between two stages, so
memory stays flat. Order is preserved and each stage runs its items one after another, so the output
equals the sequential loop's exactly. The first error in any stage stops the others and is re-raised in
the caller's thread.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from typing import Callable, Iterable, Iterator, Optional, Sequence, TypeVar

T = TypeVar("T")
U = TypeVar("U")

_DONE = object()
_POLL_S = 0.1


class _Stop(Exception):
    """Raised inside a stage thread when another stage failed."""


# benchmarks/e2e.py's A/B ratio (overlapped over sequential wall time, both in one run, identical outputs) on a
# 2-core EPYC shared with other jobs, small64_h200 on the CPU, 16 frames: at the lightest load seen (load average
# 4) 1.13 at 512 px and 1.09 at 1080p, sequential faster in both; under heavy load (10-14) the other jobs
# dominated and it ranged from 0.63 to 1.44 (the run: 1.52). On a CPU the model keeps every core busy
# through torch's threads, so the other stages can hide behind it only where cores are left over; with the model
# on a GPU they hide behind it on any CPU.
SEQUENTIAL_MAX_CORES = 2  # on a CPU with at most this many cores, stages run one after another by default


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def overlap_by_default(cores: int, model_on_gpu: bool) -> bool:
    """Whether a job overlaps its stages when it does not say (``JobOptions.overlap`` None).

    Args:
        cores: CPU cores available (:func:`available_cores`).
        model_on_gpu: the model runs on a GPU.
    Returns:
        True with the model on a GPU, or on a CPU with more than ``SEQUENTIAL_MAX_CORES`` cores; False on
        smaller CPUs, where the measured faster way is one stage after another.
    """
    return bool(model_on_gpu) or int(cores) > SEQUENTIAL_MAX_CORES


def run_sequential(produce: Iterable[T], work: Callable[[T], U], consume: Callable[[U], None]) -> None:
    """The reference loop: ``consume(work(item))`` for every item, in order, in this thread."""
    items = iter(produce)
    try:
        for item in items:
            consume(work(item))
    finally:
        _close(items)


def run_overlapped(produce: Iterable[T], work: Callable[[T], U], consume: Callable[[U], None],
                   depth: int = 2) -> None:
    """Like ``run_sequential``, with ``produce`` iterated in one thread and ``consume`` called in another.

    ``work`` runs in the calling thread (the model stays where it was built). ``depth`` bounds both queues.
    Raises the first exception any stage raised (the others are stopped and joined first).
    """
    ahead: "queue.Queue" = queue.Queue(maxsize=depth)
    behind: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()
    errors: list = []

    def fail(exc: BaseException) -> None:
        if not errors:
            errors.append(exc)
        stop.set()

    def put(q: "queue.Queue", item) -> None:
        while True:
            if stop.is_set():
                raise _Stop
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(q: "queue.Queue"):
        while True:
            if stop.is_set():
                raise _Stop
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue

    def producer() -> None:
        items = iter(produce)
        try:
            for item in items:
                put(ahead, item)
            put(ahead, _DONE)
        except _Stop:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            fail(exc)
        finally:
            _close(items)

    def consumer() -> None:
        try:
            while True:
                item = get(behind)
                if item is _DONE:
                    return
                consume(item)
        except _Stop:
            pass
        except BaseException as exc:  # noqa: BLE001
            fail(exc)

    threads = [threading.Thread(target=producer, name="lipsync-produce", daemon=True),
               threading.Thread(target=consumer, name="lipsync-consume", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        while True:
            item = get(ahead)
            if item is _DONE:
                put(behind, _DONE)
                break
            put(behind, work(item))
    except _Stop:
        pass
    except BaseException as exc:
        fail(exc)
    finally:
        if not errors:
            threads[1].join()  # a clean run: let the consumer finish the last items
        stop.set()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


def _close(items: Optional[Iterator]) -> None:
    close = getattr(items, "close", None)
    if close is not None:
        close()


class StageTimer:
    """Seconds per stage; stages running in overlapped threads add their own time (thread-safe).

    ``cpu_seconds`` holds the process's CPU time (all its threads: torch's and OpenCV's pools included, child
    processes such as ffmpeg not) spent while each stage ran: exact per stage when stages run one at a time
    (``run_sequential``); with overlapped stages each stage also counts what ran beside it.
    """

    def __init__(self, stages: Sequence[str] = ("decode", "detect")):
        self.seconds = {stage: 0.0 for stage in stages}
        self.cpu_seconds = {stage: 0.0 for stage in stages}
        self.started = time.perf_counter()  # wall time of the whole job: stages overlap, so their sum is more
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
                self.cpu_seconds[stage] = self.cpu_seconds.get(stage, 0.0) + time.process_time() - cpu
