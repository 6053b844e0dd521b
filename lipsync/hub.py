"""Weights from the Hugging Face Hub (and other download hosts), fetched quickly or refused quickly.

``hub_reachable()`` answers in at most ``timeout`` seconds (default 3, or ``$LIPSYNC_HUB_TIMEOUT``) and
remembers its answer for a minute; ``HF_HUB_OFFLINE=1`` answers "no" at once. ``cached_file(repo, filename)``
returns a file already in the local Hub cache without any network. ``weights_available(...)`` says whether a
weights file can be had now (a local path, the cache, or a reachable Hub) and, if not, why, in plain words.
``hub_file(repo, filename, ...)`` returns the file (cache, else download) or raises one clear
``WeightsUnavailableError`` within seconds when the Hub is out of reach, instead of huggingface_hub's
minute of retries. ``require_download(url)`` does the same quick check for a file that torch.hub downloads
(face_alignment's S3FD weights). Proxies set in the environment (``HTTPS_PROXY``, ``NO_PROXY``) are honoured.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Dict, Optional, Tuple
from urllib.parse import quote, urlparse
from urllib.request import getproxies, proxy_bypass

from lipsync.errors import WeightsUnavailableError

DEFAULT_TIMEOUT_S = 3.0
TIMEOUT_ENV = "LIPSYNC_HUB_TIMEOUT"
_CACHE_SECONDS = 60.0
_lock = threading.Lock()
_answers: Dict[Tuple[str, int], Tuple[float, bool]] = {}  # (host, port) -> (when, reachable)


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for no network at all."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_endpoint() -> str:
    """The Hub's base URL: ``$HF_ENDPOINT`` or https://huggingface.co (no trailing slash)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def default_timeout() -> float:
    """Seconds a reachability check may take: ``$LIPSYNC_HUB_TIMEOUT`` if it is a positive number, else 3."""
    try:
        value = float(os.environ.get(TIMEOUT_ENV, ""))
    except ValueError:
        return DEFAULT_TIMEOUT_S
    return value if value > 0 else DEFAULT_TIMEOUT_S


def _first_hop(url: str) -> Tuple[str, int]:
    """(host, port) that a download of ``url`` connects to first: the proxy set for its scheme, or its host."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    proxy = getproxies().get(parsed.scheme)
    if proxy and not proxy_bypass(host):
        target = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return target.hostname or "", target.port or (443 if target.scheme == "https" else 80)
    return host, parsed.port or (443 if parsed.scheme == "https" else 80)


def url_reachable(url: str, timeout: Optional[float] = None, refresh: bool = False) -> bool:
    """Whether one TCP connection to the host of ``url`` (or its proxy) opens within ``timeout`` seconds.

    Name look-up failures, refusals and time-outs all answer False. Answers are kept a minute per host.
    """
    timeout = default_timeout() if timeout is None else timeout
    key = _first_hop(url)
    with _lock:
        known = _answers.get(key)
        if not refresh and known is not None and time.monotonic() - known[0] < _CACHE_SECONDS:
            return known[1]
        try:
            with socket.create_connection(key, timeout=timeout):
                ok = True
        except (OSError, UnicodeError):  # UnicodeError: a malformed host name
            ok = False
        _answers[key] = (time.monotonic(), ok)
        return ok


def hub_reachable(timeout: Optional[float] = None, refresh: bool = False) -> bool:
    """One TCP connection to the Hub endpoint, within ``timeout`` seconds; the answer is kept a minute.

    False at once under ``HF_HUB_OFFLINE=1``.
    """
    if hub_offline():
        return False
    return url_reachable(hub_endpoint(), timeout, refresh)


def cached_file(repo_id: str, filename: str) -> Optional[Path]:
    """The file from the local Hub cache, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, (str, os.PathLike)) and Path(found).is_file() else None


def weights_available(repo_id: str, filename: str, local_path: Optional[str] = None,
                      timeout: Optional[float] = None) -> Tuple[bool, str]:
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


def _http_status(url: str, timeout: float) -> Optional[int]:
    """Status of one HEAD request to ``url`` (redirects are answers, not followed), or None without answer."""
    import http.client
    import urllib.error
    import urllib.request

    class _Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # a redirect to the CDN already means "it is there"
            return None

    try:
        from huggingface_hub.utils import build_hf_headers

        headers = build_hf_headers()  # a token for gated or private repos, when the user has one
    except Exception:  # no usable token configuration: ask without one
        headers = {}
    request = urllib.request.Request(url, method="HEAD", headers=headers)
    try:
        with urllib.request.build_opener(_Stay).open(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError, http.client.HTTPException):
        return None


def hub_file(repo_id: str, filename: str, *, what: str, remedy: str, timeout: Optional[float] = None,
             download: bool = True) -> Optional[Path]:
    """Local path of ``filename`` from the Hub repo ``repo_id``: the cached copy, else a download.

    Before any download, one TCP connection (``timeout`` seconds) and one HEAD request say whether the Hub
    answers and has the file; huggingface_hub's own retries (a minute of them) are never reached offline.

    Args:
        repo_id, filename: where the file lives on the Hub.
        what: what the file is, for the message ("the Diff2Lip weights").
        remedy: what the user can do instead, for the message ("pass --checkpoint PATH").
        timeout: seconds for the reachability check (default ``default_timeout()``).
        download: False only checks: returns the cached path, or None when the Hub has the file (a download
            would be tried), and raises as below otherwise.
    Raises:
        WeightsUnavailableError: one line naming the repo, the file, why (offline, Hub out of reach, no such
            file, failed download) and ``remedy``; within about ``timeout`` seconds when the Hub is out of reach.
    """
    found = cached_file(repo_id, filename)
    if found is not None:
        return found
    timeout = default_timeout() if timeout is None else timeout
    why = None
    if hub_offline():
        why = "it is not in the local Hub cache and HF_HUB_OFFLINE is set"
    elif not hub_reachable(timeout):
        why = (f"it is not in the local Hub cache and the Hub ({hub_endpoint()}) cannot be reached "
               f"(no connection within {timeout:g} s)")
    else:
        url = f"{hub_endpoint()}/{repo_id}/resolve/main/{quote(filename)}"
        status = _http_status(url, max(timeout, 10.0))  # a slow answer is still an answer: no false refusals
        if status is not None and 400 <= status < 500:
            why = f"the Hub ({hub_endpoint()}) has no such file (HTTP {status})"
    if why is None and not download:
        return None
    if why is None:
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(repo_id=repo_id, filename=filename))
        except Exception as exc:  # HTTP, DNS, cache and permission errors all mean "not available"
            reason = str(exc).splitlines()[0] if str(exc) else ""
            why = f"the download failed ({type(exc).__name__}: {reason})".replace(": )", ")")
    raise WeightsUnavailableError(
        f"could not get {what}: '{filename}' from the Hugging Face Hub repo '{repo_id}': {why}. {remedy}"
    )


def require_download(url: str, timeout: Optional[float] = None) -> None:
    """Return at once when torch.hub can have ``url``: already in its cache, or its host answers.

    Otherwise raise ``ConnectionError`` (an ``OSError``) naming the host, within about ``timeout``
    seconds, before torch.hub starts a download that would hang or fail slowly.
    """
    import torch.hub

    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if cached.is_file():
        return
    timeout = default_timeout() if timeout is None else timeout
    if not url_reachable(url, timeout):
        host, port = _first_hop(url)
        raise ConnectionError(f"no connection to {host}:{port} within {timeout:g} s")
