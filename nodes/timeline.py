"""Conditioning-over-time nodes: timestamped prompts and keyframes."""

from __future__ import annotations

from comfy_api.latest import io

from ..framepack_core import InputError, parse_timestamped_prompts
from ..framepack_core.engine.validation import check_number
from ..comfy_adapter.sockets import KeyframesSocket, PromptsSocket


class FramePackTimestampedPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackTimestampedPrompts",
            display_name="FramePack Timestamped Prompts",
            category="FramePack/conditioning",
            description="Prompts that change over the video: '[0s: a man stands] [2s-4s: he waves] [5s: he walks "
                        "away]'. Each section uses the prompt active at its start time.",
            inputs=[
                io.Clip.Input("clip", tooltip="DualCLIPLoader of type hunyuan_video."),
                io.String.Input("text", multiline=True, default="[0s: ]",
                                tooltip="Entries '[start: prompt]' or '[start-end: prompt]' with times in seconds; one "
                                        "entry must start at 0s. After an entry's end the previous prompt returns."),
            ],
            outputs=[PromptsSocket.Output(tooltip="The encoded prompts, for the FramePack sampler's prompts input.")],
        )

    @classmethod
    def execute(cls, clip, text) -> io.NodeOutput:
        if clip is None:
            raise InputError("clip is not connected; connect a DualCLIPLoader of type hunyuan_video.")
        entries = parse_timestamped_prompts(text)
        encoded = [(e.start, e.end, clip.encode_from_tokens_scheduled(clip.tokenize(e.text))) for e in entries]
        return io.NodeOutput(encoded)


class FramePackKeyframes(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackKeyframes",
            display_name="FramePack Keyframe",
            category="FramePack/conditioning",
            description="Adds a keyframe: the section that reaches this time is guided towards this image. Chain "
                        "several nodes for several keyframes. Works in the anti-drifting modes.",
            inputs=[
                io.Latent.Input("latent", tooltip="The keyframe image, VAEEncode'd at the same bucket size as the start."),
                io.Float.Input("seconds", default=2.0, min=0.0, max=3600.0, step=0.1,
                               tooltip="When the keyframe should be reached, in seconds from the start."),
                KeyframesSocket.Input("keyframes", optional=True, tooltip="Earlier keyframes to add this one to."),
            ],
            outputs=[KeyframesSocket.Output(tooltip="All keyframes so far, for the FramePack sampler.")],
        )

    @classmethod
    def execute(cls, latent, seconds, keyframes=None) -> io.NodeOutput:
        check_number("seconds", seconds, 0, 3600, " It is the keyframe's time from the start of the video.")
        existing = list(keyframes or [])
        if any(abs(s - seconds) < 1e-9 for s, _ in existing):
            raise InputError(f"there is already a keyframe at {seconds}s; give each keyframe its own time.")
        return io.NodeOutput(sorted(existing + [(seconds, latent)], key=lambda k: k[0]))
