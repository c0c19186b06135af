"""Exceptions raised by framepack_core.

Every error message names what is wrong, the offending value and what to do about it, so that
a ComfyUI user sees an actionable sentence instead of a traceback from deep inside torch.
"""


class FramePackError(ValueError):
    """Base class of the errors framepack_core raises on bad input."""


class CheckpointError(FramePackError):
    """A weights file or folder cannot be used as a FramePack transformer."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The given checkpoint path does not exist."""


class ConfigError(FramePackError):
    """A model configuration is inconsistent or incomplete."""


class InputError(FramePackError):
    """A tensor passed to the model or the engine has the wrong shape, dtype or values."""


class ResumeError(FramePackError):
    """A resume file is missing, damaged, or was written for other settings, another model or other inputs."""


class NumericalError(FramePackError):
    """Weights or a model output hold NaN or infinite values, so the result would be silently broken."""
