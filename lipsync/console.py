"""What a user sees on the console: logging set up once for the command lines, libraries kept quiet, and
plain progress lines when stderr is not a terminal (a log file, CI, a pipe).

* ``configure_logging()``: one handler on the root logger printing bare messages. huggingface_hub installs a
  handler of its own on its logger *and* lets records propagate to the root, so every line of it would print
  twice; its handler is removed and its level raised to errors. diffusers' chatter and progress bars are off.
* ``quiet_diffusers()``: a context in which diffusers neither warns nor draws progress bars (loading a
  pipeline prints "Loading pipeline components" bars and a "should be kept in float32: []" warning).
* ``PlainProgress``: the ``progress(stage, fraction, message)`` callback of ``LipSyncEngine.run`` as at most
  one line per stage and tenth, instead of a terminal progress bar's escape codes.
* ``command_name(default)``: the command as the user typed it (``lipsync``, ``python -m lipsync.cli``), for
  argparse's ``prog``: every command's "usage:" line names what was typed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Dict, Iterator, TextIO

_HANDLER_NAME = "lipsync-console"


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a record arrives (tests swap it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ and setStream assign it; stderr is always used
        pass


def configure_logging(level: int = logging.WARNING, fmt: str = "%(message)s") -> None:
    """Log to stderr through one handler (``fmt``, default bare messages, at ``level`` and above); safe to
    call again (the app: ``configure_logging(logging.INFO, "%(asctime)s %(levelname)s %(name)s: %(message)s")``).

    Library loggers are set so that no line is printed twice and no retry or download chatter reaches the
    user: huggingface_hub and diffusers only report errors, huggingface_hub's progress bars are shown only
    on a terminal. Imports neither diffusers nor torch (sets ``DIFFUSERS_VERBOSITY`` unless already set).
    """
    root = logging.getLogger()
    if not any(handler.get_name() == _HANDLER_NAME for handler in root.handlers):
        handler = _StderrHandler()
        handler.set_name(_HANDLER_NAME)
        root.addHandler(handler)
    for handler in root.handlers:
        if handler.get_name() == _HANDLER_NAME:
            handler.setFormatter(logging.Formatter(fmt))
    root.setLevel(level)

    import huggingface_hub.utils.logging as hub_logging

    hub_logging.set_verbosity_error()
    hub_logger = logging.getLogger("huggingface_hub")
    for handler in list(hub_logger.handlers):  # its records still reach the user once, through the root
        hub_logger.removeHandler(handler)
    if not _is_terminal(sys.stderr):
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()

    # diffusers takes seconds to import: tell it through its variable, read when it is imported, and set
    # it directly only if it is already loaded (a user's own DIFFUSERS_VERBOSITY wins)
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    if "diffusers" in sys.modules:
        from diffusers.utils import logging as diffusers_logging

        levels = diffusers_logging.log_levels
        diffusers_logging.set_verbosity(levels.get(os.environ["DIFFUSERS_VERBOSITY"], logging.ERROR))
        diffusers_logging.disable_progress_bar()


@contextlib.contextmanager
def quiet_diffusers() -> Iterator[None]:
    """Within the block diffusers logs only errors and draws no progress bars; both are restored after."""
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    bars = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity(max(verbosity, logging.ERROR))
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)
        if bars:
            diffusers_logging.enable_progress_bar()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def command_name(default: str) -> str:
    """The command that started this process, as the user typed it, for argparse's ``prog`` (the "usage:" line).

    ``lipsync --help`` (a console script) gives ``lipsync``; ``python -m lipsync.cli --help`` gives
    ``python -m lipsync.cli``, with the interpreter as typed (``python3 -m ...`` gives ``python3``);
    ``python app.py`` gives ``python app.py``. ``default`` (the command's ``python -m`` form) serves when
    something else started the process and calls the command's ``main()`` (pytest, ``python -c``, a program
    of the user's that imports it).
    """
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    typed = getattr(sys, "orig_argv", None) or ["python"]  # Python >= 3.10: the interpreter's own argv
    python = os.path.basename(typed[0]) or "python"
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:  # python -m NAME (a package runs as NAME.__main__)
        name = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        return f"{python} -m {name}" if name.split(".")[0] == "lipsync" else default
    if argv0.endswith(".py"):  # python path/to/script.py
        return f"{python} {argv0}"
    script = os.path.basename(argv0)  # a console script on the PATH: lipsync, lipsync-app, ...
    return script if script.startswith("lipsync") else default


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal (progress bars) rather than a file or pipe (plain lines)."""
    return _is_terminal(sys.stderr)


class PlainProgress:
    """``progress(stage, fraction, message)`` as plain lines ``"   detect:  40% frame 64 of 161"``.

    A line is written when a stage starts, each time it passes another tenth (``fraction`` in [0, 1]), and
    when it reaches 100 %; nothing else, so a log stays short and free of escape codes. A stage's start line
    waits for the next report: a job that fails at once (unreadable audio) prints its one error line only.
    """

    def __init__(self, enabled: bool = True, stream: TextIO | None = None):
        self.enabled = enabled
        self.stream = stream
        self._tenths: Dict[str, int] = {}
        self._pending: str | None = None  # a start line, written when the job goes on

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        if not self.enabled:
            return
        fraction = min(max(float(fraction), 0.0), 1.0)
        tenth = 10 if fraction >= 1.0 else int(fraction * 10)
        if stage in self._tenths and tenth <= self._tenths[stage]:
            return
        self._tenths[stage] = tenth
        stream = self.stream or sys.stderr
        if self._pending is not None:
            stream.write(self._pending)
            self._pending = None
        line = f"{stage:>9}: {fraction * 100:3.0f}% {message}".rstrip() + "\n"
        if tenth == 0:
            self._pending = line
            return
        stream.write(line)
        stream.flush()

    def close(self) -> None:
        """Nothing to clear (the same interface as the terminal progress bars)."""


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what native code writes to file descriptor 2 (TFLite's and absl's start-up lines)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
