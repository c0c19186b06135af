"""The section loop: runs a whole FramePack video from a start latent and conditioning, in any mode and schedule.

Each section of the plan gathers its clean context from the video latents generated so far, draws its noise
from one CPU generator (one draw per section, in generation order, as the reference does), is sampled, and
lands in the video buffer. Sampling a section is delegated to a section sampler (``TransformerSectionSampler``
for the core transformer; the ComfyUI nodes bring one that samples through ComfyUI), so the loop is the same
everywhere. All latents are in model space (VAE latents times 0.476986).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable

import torch

from .conditioning import TextConditioning, blend, frame_time, interpolation_weight, prompt_for_time
from ..errors import InputError
from ..model.config import CLEAN_PROJECTIONS, PROJECTION_BY_LABEL
from ..model.packing import CleanGroup
from .planning import SectionPlan, plan_sections
from .schedules import Schedule, get_schedule
from .sampling import FlowDenoiser, flow_sigmas, sample_euler, sample_unipc
from .step_caches import StepCache, StepCacheChoice
from .validation import (MAX_SECTIONS, SAMPLERS, check_costs, check_finite, check_image_embeddings, check_latent,
                         check_keyframe_sections, check_model_widths, check_same_widths, check_section_output,
                         check_settings, check_text, history_frames, is_number)

log = logging.getLogger(__name__)

__all__ = ["MAX_SECTIONS", "SAMPLERS", "GenerationInputs", "GenerationSettings", "GenerationState", "SectionJob",
           "TransformerSectionSampler", "check_settings", "generate", "section_step_cache", "validate_run"]


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """How to generate: sampling mode, section layout and sampler settings (the reference's defaults)."""

    mode: str = "inverted_anti_drifting"
    num_sections: int = 4
    latent_window_size: int | None = None
    schedule: object = None  # None (the mode's default), a name, a paper string, a Schedule or a ScheduleChoice
    steps: int = 25
    distilled_cfg: float = 10.0
    real_cfg: float = 1.0
    cfg_rescale: float = 0.0
    shift: float | None = None
    sampler: str = "unipc_bh1"
    seed: int = 31337
    teacache_threshold: float = 0.0
    magcache_threshold: float = 0.0
    prompt_blend_seconds: float = 0.0
    interpolate_image_embeddings: bool = False

    @functools.cached_property
    def frame_schedule(self) -> Schedule:
        """The mode's schedule, resolved once per settings (a ScheduleChoice is only looked up, a string parsed)."""
        return get_schedule(self.schedule, self.mode, self.latent_window_size)

    def plans(self, history_frames: int = 1) -> list[SectionPlan]:
        """Every section's plan, computed once per settings and history length: the loop, resume and the streaming
        output share it (an hour of video takes seconds to plan)."""
        computed = self.__dict__.setdefault("_plans", {})  # beside the frozen fields, as cached_property keeps its value
        if history_frames not in computed:
            computed[history_frames] = plan_sections(self.mode, self.num_sections, self.latent_window_size,
                                                     self.frame_schedule, history_frames=history_frames)
        return list(computed[history_frames])


@dataclasses.dataclass
class GenerationInputs:
    """What to generate from. ``prompts`` is one TextConditioning or timed entries ``(start_s, end_s, cond)``.

    ``keyframes`` maps latent frame numbers to (1, 16, 1, H, W) latents that the section ending at (or
    containing) that frame is guided towards; ``history`` (1, 16, K, H, W) is an existing video to extend.
    """

    start_latent: torch.Tensor
    prompts: object
    image_embeddings: torch.Tensor
    negative: TextConditioning | None = None
    end_latent: torch.Tensor | None = None
    end_image_embeddings: torch.Tensor | None = None
    keyframes: dict = dataclasses.field(default_factory=dict)
    history: torch.Tensor | None = None

    def timed_prompts(self) -> list:
        if isinstance(self.prompts, TextConditioning):
            return [(0.0, None, self.prompts)]
        return sorted(self.prompts, key=lambda p: p[0])


@dataclasses.dataclass
class SectionJob:
    """Everything a section sampler needs for one section."""

    plan: SectionPlan
    noise: torch.Tensor
    sigmas: torch.Tensor
    model_inputs: dict
    positive: TextConditioning
    negative: TextConditioning | None
    image_embeddings: torch.Tensor
    settings: GenerationSettings
    step_callback: Callable | None = None


@dataclasses.dataclass
class GenerationState:
    """The loop's state between sections: enough to continue a run exactly (see ``generate(resume=...)``)."""

    video: torch.Tensor
    next_section: int
    generator_state: torch.Tensor


SectionSampler = Callable[[SectionJob], torch.Tensor]


def section_step_cache(settings: GenerationSettings, choice: StepCacheChoice | None = None) -> StepCache | None:
    """A new section's step cache: ``choice`` (a model patch's) or else the settings' thresholds.

    None when neither asks for one, or when real CFG makes two model calls per step.
    """
    choice = choice or settings_step_cache(settings)
    if choice is None:
        return None
    if settings.real_cfg != 1:
        log.warning("Step caching is off: it needs one model call per step, and real CFG %s makes two.",
                    settings.real_cfg)
        return None
    return choice.new_cache(settings.steps)


def settings_step_cache(settings: GenerationSettings) -> StepCacheChoice | None:
    if settings.magcache_threshold > 0:
        return StepCacheChoice("magcache", settings.magcache_threshold)
    if settings.teacache_threshold > 0:
        return StepCacheChoice("teacache", settings.teacache_threshold)
    return None


# The section samplers by name (validation.SAMPLERS): the k-diffusion sampling function and its options.
SAMPLER_FUNCTIONS = {"unipc_bh1": (sample_unipc, {"variant": "bh1"}), "unipc_bh2": (sample_unipc, {"variant": "bh2"}),
                     "euler": (sample_euler, {})}


class TransformerSectionSampler:
    """Samples sections with a core ``FramePackTransformer`` and the core samplers (and optional TeaCache)."""

    def __init__(self, model):
        self.model = model
        self.config = model.config  # generate() checks the inputs' widths against it

    def __call__(self, job: SectionJob) -> torch.Tensor:
        settings = job.settings
        cache = section_step_cache(settings)
        positive = {**job.positive.model_inputs(), "image_embeddings": job.image_embeddings}
        negative = None if job.negative is None else {**job.negative.model_inputs(),
                                                     "image_embeddings": job.image_embeddings}
        denoiser = FlowDenoiser(self.model, positive, negative, shared={**job.model_inputs, "cache": cache},
                                distilled_cfg=settings.distilled_cfg, real_cfg=settings.real_cfg,
                                cfg_rescale=settings.cfg_rescale)
        function, options = SAMPLER_FUNCTIONS[settings.sampler]
        return function(denoiser, job.noise, job.sigmas, callback=job.step_callback, **options)


def generate(sample_section: SectionSampler, inputs: GenerationInputs, settings: GenerationSettings, *,
             on_section: Callable | None = None, on_step: Callable | None = None,
             resume: GenerationState | None = None) -> torch.Tensor:
    """Generate the video latents (1, 16, frames, H, W), float32, in temporal order.

    ``on_section(plan, latents, state)`` runs after every section (previews, partial saves, resume files);
    ``on_step(done, total, denoised)`` after every sampling step, with ``total = sections x steps``.
    ``resume`` continues from a state passed to ``on_section``; the result equals an uninterrupted run.
    """
    plans = validate_run(sample_section, inputs, settings)
    if resume is not None:
        check_resume(resume, plans, inputs)
    total_steps = len(plans) * settings.steps
    # A copy: the caller's resume state stays as it was, so it can start another run.
    state = initial_state(inputs, plans, settings) if resume is None else dataclasses.replace(
        resume, video=resume.video.clone(), generator_state=resume.generator_state.clone())
    generator = torch.Generator("cpu")
    generator.set_state(state.generator_state)
    prompts = inputs.timed_prompts()
    for plan in plans[state.next_section:]:
        _, _, _, height, width = state.video.shape
        window = plan.latent_window_size
        noise = torch.randn((1, 16, window, height, width), generator=generator, dtype=torch.float32)
        sigmas = flow_sigmas(settings.steps, seq_len=window * height * width // 4, shift=settings.shift)
        offset = plan.index * settings.steps

        def step_callback(info, offset=offset):
            if on_step is not None:
                on_step(offset + info["i"] + 1, total_steps, info["denoised"])

        job = SectionJob(plan, noise, sigmas, context_inputs(plan, state.video, inputs),
                         section_prompt(prompts, plan, settings), inputs.negative,
                         section_image_embeddings(inputs, plan, settings), settings, step_callback)
        latents = sample_section(job).float().to(state.video.device)
        check_section_output(plan, latents)
        state.video[:, :, plan.position:plan.position + window] = latents
        state.next_section = plan.index + 1
        state.generator_state = generator.get_state()
        if on_section is not None:
            on_section(plan, latents, state)
    return state.video


def validate_run(sample_section: SectionSampler, inputs: GenerationInputs, settings: GenerationSettings) -> list:
    """Every check ``generate`` makes before any work (settings, inputs, widths, costs); returns the plans.

    Callers that allocate for a run before calling ``generate`` (resume files) call it first.
    """
    check_settings(settings)
    plans = settings.plans(history_frames(inputs.history))
    check_inputs(inputs, plans)
    config = getattr(sample_section, "config", None)
    if config is not None:
        check_model_widths(inputs, config)
    check_costs(plans, *inputs.start_latent.shape[-2:], config)
    return plans


def initial_state(inputs: GenerationInputs, plans, settings) -> GenerationState:
    total = plans[0].total_latent_frames
    start = inputs.start_latent.float().cpu()
    video = torch.zeros((1, 16, total) + tuple(start.shape[-2:]), dtype=torch.float32)
    if inputs.history is not None:
        video[:, :, :inputs.history.shape[2]] = inputs.history.float().cpu()
    else:
        video[:, :, :1] = start
    return GenerationState(video, 0, torch.Generator("cpu").manual_seed(settings.seed).get_state())


# ------------------------------------------------------------------------------------------- context

def context_inputs(plan: SectionPlan, video: torch.Tensor, inputs: GenerationInputs) -> dict:
    """The transformer's ``latent_indices`` and ``clean_groups`` for one section, gathered from the video buffer.

    A layout the reference's three clean tensors can carry is merged into one group per projection in the
    reference's order (4x, 2x, 1x), so that it packs exactly as the reference does; others keep the plan's groups.
    """
    groups = [gather(group, video) for group in plan.groups]
    guide_towards_targets(plan, groups, video, inputs)
    latent_indices = torch.tensor([plan.latent_indices])
    if plan.reference_compatible:
        return {"latent_indices": latent_indices, "clean_groups": merged_per_projection(plan, groups)}
    clean = []
    for group, latents in zip(plan.groups, groups):
        if group.reduce == "mean":
            latents = latents.mean(dim=2, keepdim=True)
        clean.append(CleanGroup(PROJECTION_BY_LABEL[group.proj].name, latents, torch.tensor([group.indices]),
                                group.pre_pool))
    return {"latent_indices": latent_indices, "clean_groups": clean}


def merged_per_projection(plan: SectionPlan, groups: list) -> list:
    """One CleanGroup per projection the plan uses, its groups' frames concatenated in plan order."""
    merged = []
    for projection in CLEAN_PROJECTIONS:
        members = [(group, latents) for group, latents in zip(plan.groups, groups) if group.proj == projection.label]
        if members:
            latents = torch.cat([latents for _, latents in members], dim=2)
            indices = torch.tensor([[i for group, _ in members for i in group.indices]])
            merged.append(CleanGroup(projection.name, latents, indices))
    return merged


def gather(group, video: torch.Tensor) -> torch.Tensor:
    """Stack a group's source frames (zeros for frames not generated) into (1, 16, F, H, W)."""
    frames = [video[:, :, f:f + 1] if f is not None else torch.zeros_like(video[:, :, :1]) for f in group.sources]
    if not frames:
        return video[:, :, :0]
    return torch.cat(frames, dim=2)


def target_slot(plan: SectionPlan):
    """(group number, frame) of the full-resolution context slot right after the window, or None.

    It is the inverted layout's "post" frame and anti-drifting's planned endpoint: the end frame and
    keyframes are placed there to pull the section towards them.
    """
    for number, group in enumerate(plan.groups):
        if group.side == "right" and group.proj == "1x" and group.placement in ("adjacent", "after_skip"):
            return number
    return None


def guide_towards_targets(plan: SectionPlan, groups: list, video: torch.Tensor, inputs: GenerationInputs) -> None:
    end = plan.position + plan.latent_window_size
    slot = target_slot(plan)
    if slot is None:
        return
    keyframe = [f for f in inputs.keyframes if plan.position < f <= end]
    if keyframe:
        groups[slot][:, :, :1] = inputs.keyframes[max(keyframe)].float()
    elif inputs.end_latent is not None and end == plan.total_latent_frames and plan.groups[slot].sources[0] is None:
        groups[slot][:, :, :1] = inputs.end_latent.float()


def section_prompt(prompts: list, plan: SectionPlan, settings: GenerationSettings) -> TextConditioning:
    index, weight = prompt_for_time(prompts, frame_time(plan.position), settings.prompt_blend_seconds)
    if weight < 1:
        return blend(prompts[index - 1][2], prompts[index][2], weight)
    return prompts[index][2]


def section_image_embeddings(inputs: GenerationInputs, plan: SectionPlan, settings: GenerationSettings):
    if not settings.interpolate_image_embeddings or inputs.end_image_embeddings is None:
        return inputs.image_embeddings
    weight = interpolation_weight(plan.position, plan.total_latent_frames, plan.latent_window_size)
    return torch.lerp(inputs.image_embeddings.float(), inputs.end_image_embeddings.float(), weight).to(
        inputs.image_embeddings.dtype)


# ------------------------------------------------------------------------------------------- validation

def check_inputs(inputs: GenerationInputs, plans: list) -> None:
    start = inputs.start_latent
    if not torch.is_tensor(start) or start.ndim != 5 or start.shape[:3] != (1, 16, 1):
        shape = tuple(start.shape) if torch.is_tensor(start) else type(start).__name__
        raise InputError(f"start_latent must be one latent frame (1, 16, 1, H, W), got {shape}; "
                         "VAE-encode a single image (FramePack bucket size).")
    size = tuple(start.shape[-2:])
    if not isinstance(inputs.keyframes, dict):
        raise InputError(f"keyframes must be a dict {{latent frame: latent}}, got {type(inputs.keyframes).__name__}; "
                         "validation.keyframes_by_frame builds one from (seconds, latent) pairs.")
    check_image_embeddings("image_embeddings", inputs.image_embeddings)
    if size[0] % 2 or size[1] % 2:
        raise InputError(f"the latent size {size} must be even; resize the image with the FramePack bucket node.")
    named = {"end_latent": inputs.end_latent, "history": inputs.history,
             **{f"keyframe at frame {f}": k for f, k in inputs.keyframes.items()}}
    for name, latent in named.items():
        if latent is not None:
            check_latent(name, latent, size, frames=None if name == "history" else 1)
    total = plans[0].total_latent_frames
    for frame in inputs.keyframes:
        if not isinstance(frame, int) or not 1 <= frame < total:
            raise InputError(f"keyframe at latent frame {frame!r} is outside the video (frames 1..{total - 1}); "
                             "place keyframes within the video's length.")
    if inputs.keyframes and target_slot(plans[0]) is None:
        raise InputError(f"keyframes need a context slot after the window, which the {plans[0].mode} layout lacks; "
                         "use inverted_anti_drifting or anti_drifting.")
    if inputs.end_latent is not None and target_slot(plans[0]) is None:
        raise InputError(f"an end frame needs a context slot after the window, which the {plans[0].mode} layout "
                         "lacks; use inverted_anti_drifting or anti_drifting.")
    check_keyframe_sections(inputs.keyframes, plans, inputs.end_latent is not None)
    end_embeddings = inputs.end_image_embeddings
    if end_embeddings is not None and (inputs.image_embeddings is None
                                       or end_embeddings.shape != inputs.image_embeddings.shape):
        shape = None if inputs.image_embeddings is None else tuple(inputs.image_embeddings.shape)
        raise InputError(f"end_image_embeddings has shape {tuple(end_embeddings.shape)} but image_embeddings is "
                         f"{shape}: encode the start and end images with the same CLIP vision model.")
    for name, tensor in (("start_latent", start), ("image_embeddings", inputs.image_embeddings),
                         ("end_image_embeddings", end_embeddings), *named.items()):
        check_finite(name, tensor)
    check_prompts(inputs, frame_time(total))


def check_prompts(inputs: GenerationInputs, video_end: float) -> None:
    """Prompts are one TextConditioning or (start_s, end_s or None, TextConditioning) entries within the video."""
    entries = [(0.0, None, inputs.prompts)] if isinstance(inputs.prompts, TextConditioning) else inputs.prompts
    well_formed = isinstance(entries, (list, tuple)) and all(
        isinstance(e, (list, tuple)) and len(e) == 3 and is_number(e[0]) and (e[1] is None or is_number(e[1]))
        and isinstance(e[2], TextConditioning) for e in entries)
    if not well_formed:
        raise InputError(f"prompts must be one TextConditioning or a list of (start_s, end_s or None, "
                         f"TextConditioning) entries, got {type(inputs.prompts).__name__}: {str(inputs.prompts)[:80]}.")
    prompts = inputs.timed_prompts()
    if not prompts or prompts[0][0] != 0:
        raise InputError("the prompts must start at 0 s so that every section has one.")
    for start, _, cond in prompts:
        if start >= video_end:
            raise InputError(f"a prompt starts at {start:g} s but the video ends at {video_end:.2f} s: move it "
                             "earlier, or make the video longer (more sections).")
        check_text(f"the prompt at {start:g} s", cond)
    named = [(f"the prompt at {start:g} s", cond) for start, _, cond in prompts]
    if inputs.negative is not None:
        check_text("the negative prompt", inputs.negative)
        named.append(("the negative prompt", inputs.negative))
    check_same_widths(named)


def check_resume(state: GenerationState, plans: list, inputs: GenerationInputs) -> None:
    """A resume state must be one of this run: same video buffer shape and a section of its plan."""
    expected = (1, 16, plans[0].total_latent_frames) + tuple(inputs.start_latent.shape[-2:])
    shape = tuple(state.video.shape) if torch.is_tensor(state.video) else type(state.video).__name__
    if shape != expected:
        raise InputError(f"the resume state's video has shape {shape} but these inputs and settings make "
                         f"{expected}: resume with the inputs and settings of the interrupted run.")
    if not isinstance(state.next_section, int) or not 0 <= state.next_section <= len(plans):
        raise InputError(f"the resume state's next_section is {state.next_section!r}, outside 0..{len(plans)}: "
                         "resume with the settings of the interrupted run.")
    if not bool(torch.isfinite(state.video).all()):
        raise InputError("the resume state's video contains NaN or infinite latents: the interrupted run had already "
                         "gone wrong, and continuing it would finish a broken video. Start a new generation (and "
                         "check the model and its inputs).")
