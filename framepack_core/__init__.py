"""FramePack in pure PyTorch: the packed transformer, checkpoint loading and the generation engine.

This package never imports ComfyUI; the node pack in ``nodes/`` adapts it.
"""

from .model.checkpoint import load_transformer
from .engine.conditioning import TextConditioning, parse_timestamped_prompts
from .model.config import FramePackConfig, infer_config
from .errors import CheckpointError, CheckpointNotFoundError, ConfigError, FramePackError, InputError, ResumeError
from .engine.generate import (GenerationInputs, GenerationSettings, GenerationState, SectionJob, TransformerSectionSampler,
                       generate, section_step_cache)
from .model.layers import sdpa_attention
from .model.transformer import FramePackTransformer
from .model.packing import CleanGroup
from .engine.planning import PlanError, SectionPlan, plan_sections, section_count
from .engine.resume import ResumeWriter, fingerprint, load_resume, save_resume
from .engine.sampling import FlowDenoiser, apply_cfg, flow_sigmas, sample_euler, sample_unipc
from .engine.schedules import MODES, ScheduleChoice, ScheduleError, choose_schedule, get_schedule, parse_schedule
from .engine.stitch import soft_append
from .engine.step_caches import MagCache, TeaCache

__all__ = [
    "CheckpointError", "CheckpointNotFoundError", "CleanGroup", "ConfigError", "FlowDenoiser", "FramePackConfig",
    "FramePackError", "FramePackTransformer", "GenerationInputs", "GenerationSettings", "GenerationState", "InputError",
    "MagCache", "MODES", "PlanError", "ResumeError", "ResumeWriter", "ScheduleChoice", "ScheduleError", "SectionJob", "SectionPlan", "TeaCache", "TextConditioning",
    "TransformerSectionSampler", "apply_cfg", "choose_schedule", "fingerprint", "flow_sigmas", "generate", "get_schedule", "infer_config",
    "load_resume", "load_transformer", "parse_schedule", "parse_timestamped_prompts", "plan_sections", "sample_euler", "sample_unipc",
    "save_resume", "sdpa_attention", "section_count", "section_step_cache", "soft_append",
]
