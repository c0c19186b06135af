"""Step caches as MODEL patches: FramePack TeaCache and FramePack MagCache (as core's EasyCache node is one)."""

from __future__ import annotations

from comfy_api.latest import io

from ..framepack_core.engine.step_caches import StepCacheChoice
from ..comfy_adapter.section_sampler import with_step_cache

NEEDS = " Works with real_cfg 1 (one model call per step); a sampler's own cache widget is then ignored."


def step_cache_schema(node_id: str, name: str, description: str, default: float, tooltip: str) -> io.Schema:
    return io.Schema(
        node_id=node_id,
        display_name=f"FramePack {name}",
        category="FramePack/sampling",
        description=description + NEEDS,
        inputs=[io.Model.Input("model", tooltip="The FramePack model to patch (from Load FramePack Model)."),
                io.Float.Input("threshold", default=default, min=0.0, max=1.0, step=0.01, tooltip=tooltip)],
        outputs=[io.Model.Output(tooltip=f"The model with {name}: connect it to a FramePack sampler.")],
    )


class FramePackTeaCache(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return step_cache_schema(
            "FramePackTeaCache", "TeaCache",
            "Skips the transformer blocks on sampling steps whose input barely changed, reusing the last residual "
            "(TeaCache with HunyuanVideo's rescaling). The first and last step of each section always compute.",
            0.15, "Accumulated relative input change that forces a computed step: 0 = off, 0.15 ~2x faster "
                  "(hands may get slightly worse).")

    @classmethod
    def execute(cls, model, threshold) -> io.NodeOutput:
        return io.NodeOutput(with_step_cache(model, StepCacheChoice("teacache", threshold)))


class FramePackMagCache(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return step_cache_schema(
            "FramePackMagCache", "MagCache",
            "Skips the transformer blocks while the estimated change of the model's residual stays small "
            "(MagCache, magnitude ratios estimated online); the first fifth of each section's steps and its last "
            "step always compute.",
            0.1, "Accumulated error estimate of the skipped steps that forces a computed step: 0 = off, 0.1 usual.")

    @classmethod
    def execute(cls, model, threshold) -> io.NodeOutput:
        return io.NodeOutput(with_step_cache(model, StepCacheChoice("magcache", threshold)))
