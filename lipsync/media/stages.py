"""A bounded three-stage producer/consumer pipeline: produce ahead, work in the caller's thread, consume behind.

The engine uses it so that decoding + cropping (ahead) and paste + encode (behind) run while the model
denoises: the model never waits for ffmpeg, and at most ``depth`` items wait between two stages, so
memory stays flat. Order is preserved and each stage runs its items one after another, so the output
equals the sequential loop's exactly. The first error in any stage stops the others and is re-raised in
the caller's thread.
"""

from __future__ import annotations

import contextlib
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
    """Seconds per stage; stages running in overlapped threads add their own time (thread-safe)."""

    def __init__(self, stages: Sequence[str] = ("decode", "detect")):
        self.seconds = {stage: 0.0 for stage in stages}
        self.started = time.perf_counter()  # wall time of the whole job: stages overlap, so their sum is more
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[stage] += time.perf_counter() - start
