"""Weights from the Hugging Face Hub, fetched quickly or refused quickly.

``hub_reachable()`` answers in at most ``timeout`` seconds (default 3) and remembers its answer for a
minute; ``HF_HUB_OFFLINE=1`` answers "no" at once. ``cached_file(repo, filename)`` returns a file already
in the local Hub cache without any network. ``weights_available(...)`` says whether a weights file can be
had now (a local path, the cache, or a reachable Hub) and, if not, why, in plain words.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Optional, Tuple
from urllib.parse import urlparse

DEFAULT_TIMEOUT_S = 3.0
_CACHE_SECONDS = 60.0
_lock = threading.Lock()
_last: Optional[Tuple[float, bool]] = None


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for no network at all."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = DEFAULT_TIMEOUT_S, refresh: bool = False) -> bool:
    """One TCP connection to the Hub endpoint, within ``timeout`` seconds; the answer is kept a minute."""
    global _last
    if hub_offline():
        return False
    with _lock:
        if not refresh and _last is not None and time.monotonic() - _last[0] < _CACHE_SECONDS:
            return _last[1]
        url = urlparse(hub_endpoint())
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((url.hostname, port), timeout=timeout):
                ok = True
        except OSError:
            ok = False
        _last = (time.monotonic(), ok)
        return ok


def cached_file(repo_id: str, filename: str) -> Optional[Path]:
    """The file from the local Hub cache, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, (str, os.PathLike)) and Path(found).is_file() else None


def weights_available(repo_id: str, filename: str, local_path: Optional[str] = None,
                      timeout: float = DEFAULT_TIMEOUT_S) -> Tuple[bool, str]:
    """(True, "") when the weights can be had now: a local file, the Hub cache, or a reachable Hub.

    Otherwise (False, reason) with a plain-language reason (no flags, no environment variables).
    """
    if local_path:
        if Path(local_path).expanduser().is_file():
            return True, ""
        return False, f"the weights file {local_path} does not exist"
    if cached_file(repo_id, filename) is not None:
        return True, ""
    if hub_reachable(timeout):
        return True, ""
    return False, "the weights cannot be downloaded on this server (no connection to the Hugging Face Hub)"
