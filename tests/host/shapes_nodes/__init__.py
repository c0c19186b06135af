"""Test-only ComfyUI node: the conditioning of a held-out shapes-world clip for the shapes model.

The shapes model's "encoders" are the procedural world's fixed functions (``framepack_shapes.world``), which no
ComfyUI encoder node computes; this node gives a clip's caption conditioning, start latent and start-image tokens.
"""

import sys
from pathlib import Path

from comfy_api.latest import ComfyExtension, io

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository: framepack_shapes

from framepack_shapes import world  # noqa: E402
from framepack_shapes.colour_lora import bouncing_clips  # noqa: E402


class StartImageTokens:
    def __init__(self, tokens):
        self.last_hidden_state = tokens


class FramePackTestShapesClip(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FramePackTestShapesClip", category="_for_testing",
                         inputs=[io.Int.Input("clip", default=0, min=0), io.Int.Input("frames", default=31, min=4)],
                         outputs=[io.Conditioning.Output(), io.Latent.Output(), io.ClipVisionOutput.Output()])

    @classmethod
    def execute(cls, clip, frames):
        spec = bouncing_clips(clip + 1, frames)[clip]
        start = world.encode_frames(world.render_clip(spec, 1))
        text = world.encode_caption(spec.caption)
        conditioning = [[text.text, {"pooled_output": text.pooled}]]
        return io.NodeOutput(conditioning, {"samples": start}, StartImageTokens(world.image_embeddings(start)))


class ShapesExtension(ComfyExtension):
    async def get_node_list(self):
        return [FramePackTestShapesClip]


async def comfy_entrypoint():
    return ShapesExtension()
