"""FramePack for SamplerCustomAdvanced: conditioning, SAMPLER and SIGMAS nodes around core's guiders and noise."""

from __future__ import annotations

from comfy_api.latest import io

from ..comfy_adapter.custom_sampler import FramePackSectionLoop, attach_inputs, framepack_sigmas
from ..comfy_adapter.section_sampler import SAMPLER_NAMES, framepack_sampler
from ..comfy_adapter.sockets import KeyframesSocket, ScheduleSocket
from .sampler import sampling_mode_input

SCHEDULE_TOOLTIP = ("Frame schedule and latent window size from the FramePack Schedule node; default: the mode's "
                    "released layout, window 9. Give the SAMPLER and the SIGMAS node the same one.")


class FramePackImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackImageToVideo",
            display_name="FramePack Image To Video",
            category="FramePack/custom_sampling",
            description="Attaches the start image (latent and SigLIP encoding), an optional end frame and keyframes, "
                        "and the distilled guidance to the positive and negative conditioning, for CFGGuider or "
                        "BasicGuider with the FramePack Section Sampler in SamplerCustomAdvanced.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="The prompt: CLIPTextEncode on a DualCLIPLoader of type "
                                                          "hunyuan_video."),
                io.Conditioning.Input("negative", tooltip="The negative prompt, used by CFGGuider when its cfg is "
                                                          "above 1 (CLIPTextEncode of an empty text, as FramePack "
                                                          "does)."),
                io.Float.Input("distilled_cfg", default=10.0, min=1.0, max=32.0, step=0.1,
                               tooltip="Distilled guidance scale fed to the model (FramePack's default 10); the "
                                       "guider's cfg is the real CFG."),
                io.Latent.Input("start_latent", optional=True,
                                tooltip="The start image, VAEEncode'd at a FramePack bucket size (one frame). Empty: "
                                        "text to video."),
                io.ClipVisionOutput.Input("clip_vision_output", optional=True,
                                          tooltip="SigLIP encoding of the start image (FramePack Encode Start Image, "
                                                  "or CLIPVisionEncode with crop 'none'). Empty: zeros."),
                io.Latent.Input("end_latent", optional=True,
                                tooltip="An end frame (VAEEncode'd, same size as the start) for the anti-drifting "
                                        "modes."),
                KeyframesSocket.Input("keyframes", optional=True,
                                      tooltip="Keyframe latents at chosen times (FramePack Keyframes), for the "
                                              "anti-drifting modes."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive", tooltip="For the guider's positive input."),
                     io.Conditioning.Output(display_name="negative", tooltip="For the guider's negative input.")],
        )

    @classmethod
    def execute(cls, positive, negative, distilled_cfg, start_latent=None, clip_vision_output=None, end_latent=None,
                keyframes=None) -> io.NodeOutput:
        images = dict(start_latent=start_latent, clip_vision_output=clip_vision_output, end_latent=end_latent,
                      keyframes=keyframes)
        return io.NodeOutput(attach_inputs(positive, distilled_cfg, **images),
                             attach_inputs(negative, distilled_cfg, **images))


class FramePackSectionSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackSectionSampler",
            display_name="FramePack Section Sampler",
            category="FramePack/custom_sampling",
            description="FramePack's section loop as a SAMPLER for SamplerCustomAdvanced: the video is generated "
                        "section by section, each sampled with the SIGMAS (steps per section = their length - 1) "
                        "and the inner sampler through the guider. The length comes from the latent "
                        "(EmptyHunyuanLatentVideo), rounded to whole sections; the noise is drawn per section from "
                        "the NOISE's seed, as FramePack Sampler draws it.",
            inputs=[
                sampling_mode_input(),
                io.Combo.Input("sampler_name", options=list(SAMPLER_NAMES), default="unipc_bh1",
                               tooltip="The sampler of each section: FramePack's flow UniPC (bh1 is the reference) "
                                       "or Euler. A connected sampler input overrides this."),
                io.Float.Input("cfg_rescale", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Rescales the guided prediction towards the positive one's std (0 = off); "
                                       "acts when the guider's cfg is above 1."),
                ScheduleSocket.Input("schedule", optional=True, tooltip=SCHEDULE_TOOLTIP),
                io.Sampler.Input("sampler", optional=True,
                                 tooltip="Any ComfyUI SAMPLER (KSamplerSelect) for each section instead of "
                                         "sampler_name."),
            ],
            outputs=[io.Sampler.Output(tooltip="For SamplerCustomAdvanced's sampler input.")],
        )

    @classmethod
    def execute(cls, sampling_mode, sampler_name, cfg_rescale, schedule=None, sampler=None) -> io.NodeOutput:
        inner = sampler or framepack_sampler(sampler_name)
        return io.NodeOutput(FramePackSectionLoop(sampling_mode, schedule, inner, cfg_rescale))


class FramePackSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackSigmas",
            display_name="FramePack Sigmas",
            category="FramePack/custom_sampling",
            description="FramePack's shifted flow schedule for one section of this latent: steps + 1 sigmas from 1 "
                        "to 0, the shift automatic from the section's token count unless set.",
            inputs=[
                io.Latent.Input("latent", tooltip="The latent to sample (EmptyHunyuanLatentVideo): its height and "
                                                  "width set the token count."),
                io.Int.Input("steps", default=25, min=1, max=200, tooltip="Sampling steps per section (25 in "
                                                                          "FramePack)."),
                io.Float.Input("shift", default=0.0, min=0.0, max=100.0, step=0.01,
                               tooltip="Timestep shift; 0 = FramePack's automatic shift from the token count (7.0 "
                                       "at the 640 buckets). A ModelSamplingSD3 node does not change these sigmas: "
                                       "set the shift here."),
                ScheduleSocket.Input("schedule", optional=True, tooltip=SCHEDULE_TOOLTIP),
            ],
            outputs=[io.Sigmas.Output(tooltip="For SamplerCustomAdvanced's sigmas input.")],
        )

    @classmethod
    def execute(cls, latent, steps, shift, schedule=None) -> io.NodeOutput:
        return io.NodeOutput(framepack_sigmas(latent, steps, shift, schedule))
