"""Finding the weights of the training-only networks (LPIPS' VGG16 and heads, the lip-sync expert), fast.

:func:`find_weights` tries, in order: the path given by a flag, an environment variable, files already on
disk (caches, installed packages), the Hugging Face Hub (only when :func:`lipsync.hub.hub_reachable` says
it answers), and a plain URL (only when its host accepts a TCP connection within a few seconds). Anything
else raises :class:`~lipsync.errors.WeightsUnavailableError` naming the flag and where to get the file;
nothing here retries or waits long.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple
from urllib.parse import urlparse

from lipsync.errors import WeightsUnavailableError
from lipsync.hub import DEFAULT_TIMEOUT_S, cached_file, hub_offline, hub_reachable, url_reachable


@dataclass(frozen=True)
class WeightsSource:
    """Where one weights file can come from.

    what: the name users read ("LPIPS VGG16 backbone"); flag / env_var: how a user passes a path;
    url: a direct download (saved as ``cache_dir/cache_name``); hub_repo / hub_filename: the same file on the
    Hugging Face Hub; local_candidates: files to use when they exist (e.g. an installed package's copy);
    elsewhere: another place to get it, in words (named in the error only).
    """

    what: str
    flag: str
    env_var: str
    url: Optional[str] = None
    cache_name: Optional[str] = None
    hub_repo: Optional[str] = None
    hub_filename: Optional[str] = None
    local_candidates: Tuple[Path, ...] = field(default_factory=tuple)
    elsewhere: Optional[str] = None

    def where_to_get(self) -> str:
        """The places to download the file from, in words."""
        places = []
        if self.url:
            places.append(self.url)
        if self.hub_repo and self.hub_filename:
            places.append(f"the Hugging Face Hub repo '{self.hub_repo}' (file '{self.hub_filename}')")
        if self.elsewhere:
            places.append(self.elsewhere)
        return " or ".join(places) if places else "the original release"


def weights_cache_dir() -> Path:
    """torch.hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), shared with torchvision's downloads."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def download_url(url: str, dest: Path, timeout: float = 30.0) -> Path:
    """Stream ``url`` into ``dest`` through a temporary file in the same folder (never a partial ``dest``).

    ``timeout`` bounds each network read, not the whole transfer.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, length=1 << 20)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def find_weights(source: WeightsSource, path: Optional[os.PathLike | str] = None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """The local path of ``source``'s weights file, downloading it if that can be done now.

    Args:
        source: where the file can come from.
        path: a user-given file (from ``source.flag``); None -> ``source.env_var`` -> caches -> downloads.
        timeout: seconds allowed for each reachability check.
    Raises WeightsUnavailableError naming ``source.flag``, the environment variable and where to get the file.
    """
    remedy = (f"download it from {source.where_to_get()} on a machine with internet access and pass "
              f"{source.flag} PATH (or set {source.env_var}=PATH)")
    origin = source.flag
    if path is None and os.environ.get(source.env_var):
        path, origin = os.environ[source.env_var], f"the environment variable {source.env_var}"
    if path is not None:
        given = Path(path).expanduser()
        if not given.is_file():
            raise WeightsUnavailableError(
                f"the {source.what} weights file {str(given)!r} given by {origin} does not exist; {remedy}")
        return given

    candidates: List[Path] = list(source.local_candidates)
    if source.cache_name:
        candidates.append(weights_cache_dir() / source.cache_name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if source.hub_repo and source.hub_filename:
        cached = cached_file(source.hub_repo, source.hub_filename)
        if cached is not None:
            return cached

    reasons: List[str] = []
    if source.url and source.cache_name:
        if url_reachable(source.url, timeout):
            try:
                return download_url(source.url, weights_cache_dir() / source.cache_name)
            except (OSError, urllib.error.URLError) as exc:
                reasons.append(f"downloading {source.url} failed ({type(exc).__name__}: {exc})")
        else:
            reasons.append(f"{urlparse(source.url).hostname} cannot be reached")
    if source.hub_repo and source.hub_filename:
        if hub_reachable(timeout):
            from huggingface_hub import hf_hub_download

            try:
                return Path(hf_hub_download(source.hub_repo, source.hub_filename))
            except Exception as exc:  # offline, HTTP, not-found and cache errors all mean "not available"
                first = str(exc).splitlines()[0] if str(exc) else ""
                reasons.append(f"the Hub download failed ({type(exc).__name__}: {first})")
        else:
            reasons.append("the Hugging Face Hub is offline" if hub_offline()
                           else "the Hugging Face Hub cannot be reached")
    why = "; ".join(reasons) if reasons else "no local copy was found"
    raise WeightsUnavailableError(f"the {source.what} weights are not available ({why}); {remedy}")

