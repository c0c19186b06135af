"""Test-only ComfyUI nodes standing in for the text and image encoders, which have no small weights.

They produce conditioning of the tiny reference model's sizes (text 32, pooled 16, SigLIP 24 channels),
deterministic in a seed so the host tests can compare runs.
"""

import torch
from comfy_api.latest import ComfyExtension, io


def generator(seed):
    return torch.Generator().manual_seed(seed)


class StubClip:
    """A CLIP stand-in: tokenize() keeps the text, encoding is seeded by the text."""

    def tokenize(self, text):
        return text

    def encode_from_tokens_scheduled(self, tokens):
        g = generator(sum(map(ord, tokens)))
        return [[torch.randn(1, 3 + len(tokens) % 5, 32, generator=g), {"pooled_output": torch.randn(1, 16, generator=g)}]]


class StubClipVisionOutput:
    def __init__(self, seed):
        self.last_hidden_state = torch.randn(1, 6, 24, generator=generator(seed))


class FramePackTestTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FramePackTestTextEncode", category="_for_testing",
                         inputs=[io.Int.Input("seed", default=0)], outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, seed):
        g = generator(seed)
        return io.NodeOutput([[torch.randn(1, 5, 32, generator=g), {"pooled_output": torch.randn(1, 16, generator=g)}]])


class FramePackTestClip(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FramePackTestClip", category="_for_testing", outputs=[io.Clip.Output()])

    @classmethod
    def execute(cls):
        return io.NodeOutput(StubClip())


class FramePackTestClipVision(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FramePackTestClipVision", category="_for_testing",
                         inputs=[io.Int.Input("seed", default=0)], outputs=[io.ClipVisionOutput.Output()])

    @classmethod
    def execute(cls, seed):
        return io.NodeOutput(StubClipVisionOutput(seed))


class FramePackTestLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FramePackTestLatent", category="_for_testing",
                         inputs=[io.Int.Input("seed", default=0), io.Int.Input("frames", default=1)],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, seed, frames):
        return io.NodeOutput({"samples": torch.randn(1, 16, frames, 8, 8, generator=generator(seed))})


class StubExtension(ComfyExtension):
    async def get_node_list(self):
        return [FramePackTestTextEncode, FramePackTestClip, FramePackTestClipVision, FramePackTestLatent]


async def comfy_entrypoint():
    return StubExtension()
