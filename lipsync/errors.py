"""Named exceptions. Every message says what is wrong and what to do about it."""


class LipSyncError(Exception):
    """Base class for every error a user can act on."""


class InvalidMediaError(LipSyncError):
    """A file is missing, unreadable or not a media file ffmpeg can decode."""


class NoVideoStreamError(InvalidMediaError):
    """The file decodes, but holds no video stream."""


class NoAudioError(InvalidMediaError):
    """The file decodes, but holds no audio stream (or only silence of zero length)."""


class AudioTooShortError(LipSyncError):
    """The audio is shorter than one mel window (0.2 s)."""


class NoFaceError(LipSyncError):
    """No face was found in any frame."""


class OutputPathError(LipSyncError):
    """The output path cannot be written."""


class WeightsUnavailableError(LipSyncError):
    """Model weights could not be found or downloaded."""


class CheckpointMismatchError(LipSyncError):
    """A checkpoint's keys or shapes do not match the model."""
