"""FramePack in pure PyTorch: the packed transformer, checkpoint loading and the generation engine.

This package never imports ComfyUI; the node pack in ``nodes/`` adapts it.
"""

from .checkpoint import load_transformer
from .config import FramePackConfig, infer_config
from .errors import CheckpointError, CheckpointNotFoundError, ConfigError, FramePackError, InputError
from .layers import sdpa_attention
from .model import FramePackTransformer

__all__ = [
    "CheckpointError", "CheckpointNotFoundError", "ConfigError", "FramePackConfig", "FramePackError",
    "FramePackTransformer", "InputError", "infer_config", "load_transformer", "sdpa_attention",
]
