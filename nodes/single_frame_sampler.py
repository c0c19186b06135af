"""The single-frame sampler node: one-frame inference and reference editing."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..framepack_core import GenerationSettings
from ..framepack_core.engine.single_frame import SingleFrameRequest, sample_single_frame
from ..framepack_core.engine.validation import check_settings
from ..comfy_adapter.section_sampler import SAMPLER_NAMES, ComfySectionSampler, framepack_sampler
from ..comfy_adapter.latents import image_embeddings, latent_frames, text_conditioning, to_comfy_latent


class FramePackSingleFrameSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackSingleFrameSampler",
            display_name="FramePack Single Frame Sampler",
            category="FramePack/sampling",
            description="Generates one frame: the start image some time later (one-frame inference), or, with a "
                        "reference image at a far index, the start image edited towards the reference "
                        "(kisekaeichi-style). Masks choose which parts of each control image are used.",
            inputs=[
                io.Model.Input("model", tooltip="The FramePack model."),
                io.Conditioning.Input("positive", tooltip="The prompt (CLIPTextEncode, hunyuan_video)."),
                io.Latent.Input("start_latent", tooltip="The start image (VAEEncode), control at index 0."),
                io.ClipVisionOutput.Input("clip_vision_output", tooltip="SigLIP encoding of the start image."),
                io.Int.Input("target_index", default=1, min=1, max=64,
                             tooltip="RoPE time index of the generated frame: larger = further in time."),
                io.Int.Input("steps", default=25, min=1, max=200, tooltip="Sampling steps."),
                io.Float.Input("distilled_cfg", default=10.0, min=1.0, max=32.0, step=0.1,
                               tooltip="Distilled guidance scale."),
                io.Int.Input("seed", default=31337, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed."),
                io.Combo.Input("sampler_name", options=list(SAMPLER_NAMES), default="unipc_bh1",
                               tooltip="FramePack's UniPC or Euler."),
                io.Latent.Input("reference_latent", optional=True,
                                tooltip="A reference image (VAEEncode, same size) for reference editing."),
                io.Int.Input("reference_index", default=10, min=1, max=64, optional=True,
                             tooltip="RoPE time index of the reference control (10 in the kisekaeichi recipe)."),
                io.Mask.Input("start_mask", optional=True, tooltip="Where the start image is used (1) or ignored (0)."),
                io.Mask.Input("reference_mask", optional=True,
                              tooltip="Where the reference image is used (1) or ignored (0)."),
                io.Boolean.Input("use_2x_4x_context", default=False, optional=True,
                                 tooltip="Also feed (empty) 2x and 4x context groups, as in video sampling."),
            ],
            outputs=[io.Latent.Output(tooltip="One latent frame, for VAEDecode.")],
        )

    @classmethod
    def execute(cls, model, positive, start_latent, clip_vision_output, target_index, steps, distilled_cfg, seed,
                sampler_name, reference_latent=None, reference_index=10, start_mask=None, reference_mask=None,
                use_2x_4x_context=False) -> io.NodeOutput:
        config = model.model.diffusion_model.config
        controls = [latent_frames(start_latent, "start_latent", frames=1)]
        indices, masks = [0], [None if start_mask is None else start_mask[0]]
        if reference_latent is not None:
            controls.append(latent_frames(reference_latent, "reference_latent", frames=1))
            indices.append(reference_index)
            masks.append(None if reference_mask is None else reference_mask[0])
        request = SingleFrameRequest(controls, indices, target_index, masks, use_2x_4x_context, use_2x_4x_context)
        settings = GenerationSettings(steps=steps, distilled_cfg=distilled_cfg, seed=seed, sampler=sampler_name)
        check_settings(settings)  # POST /prompt lets NaN through ComfyUI's min/max checks
        sampler = ComfySectionSampler(model, framepack_sampler(sampler_name), steps)
        frame = sample_single_frame(sampler, request, text_conditioning(positive, "positive", config),
                                    image_embeddings(clip_vision_output, "clip_vision_output", config), settings)
        return io.NodeOutput(to_comfy_latent(frame.to(torch.float32)))
