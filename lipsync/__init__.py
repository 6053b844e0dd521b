"""Diff2Lip Studio: lip-sync any face video to any speech track with Diff2Lip.

Public API::

    from lipsync import Diff2LipUNetModel, Diff2LipPipeline, load_pipeline

Heavy modules (torch, diffusers) are imported on first use, so ``import lipsync.audio`` stays light.
"""

from importlib import import_module

from .errors import (  # noqa: F401
    AudioTooShortError,
    CheckpointMismatchError,
    InvalidMediaError,
    LipSyncError,
    NoAudioError,
    NoFaceError,
    NoVideoStreamError,
    OutputPathError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"

_LAZY = {
    "Diff2LipUNetModel": "unet_diff2lip",
    "Diff2LipPipeline": "pipeline_diff2lip",
    "Diff2LipPipelineOutput": "pipeline_diff2lip",
    "load_pipeline": "loading",
    "LipSyncEngine": "engine",
    "JobOptions": "engine",
    "JobReport": "engine",
}

__all__ = sorted(_LAZY) + [
    "AudioTooShortError",
    "CheckpointMismatchError",
    "InvalidMediaError",
    "LipSyncError",
    "NoAudioError",
    "NoFaceError",
    "NoVideoStreamError",
    "OutputPathError",
    "WeightsUnavailableError",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'lipsync' has no attribute {name!r}")
