"""Diff2Lip Studio: lip-sync any face video to any speech track with Diff2Lip.

Public API::

    from lipsync import Diff2LipUNetModel, Diff2LipPipeline, load_pipeline   # the model
    from lipsync import LipSyncEngine, JobOptions, JobReport                  # whole jobs on files

Heavy modules (torch, diffusers) are imported on first use, so ``import lipsync.media.audio`` stays light.

The package, in data-flow order (each subpackage's ``__init__`` says what it may import)::

    media/      probe, read and write video; audio and mel windows; detect, track, crop and paste faces
    model/      the UNet, the pipeline, loading and conversion of checkpoints, fast paths, presets
    job.py      a job's options, report and timeline
    engine.py   LipSyncEngine: the one place that touches files AND the pipeline
    scoring/    SyncNet (LSE-D/LSE-C), Wav2Lip for comparison, image metrics
    training/   dataset preparation, dataset, diffusion, losses, trainer
    app/        the Gradio page
    cli.py, batch.py, train.py, prepare.py, convert.py, evaluate.py: the commands
    errors.py, console.py, hub.py, checkpoints.py: used by all of the above
"""

from importlib import import_module

from lipsync.errors import (  # noqa: F401
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
    "Diff2LipUNetModel": "model.unet",
    "Diff2LipPipeline": "model.pipeline",
    "Diff2LipPipelineOutput": "model.pipeline",
    "load_pipeline": "model.loading",
    "LipSyncEngine": "engine",
    "JobOptions": "job",
    "JobReport": "job",
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
