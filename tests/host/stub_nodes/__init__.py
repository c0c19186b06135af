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


class StubVideoVAE:
    """A VAE stand-in with the HunyuanVideo VAE's shapes: 16 latent channels, 8x space, causal 4x time (the first
    latent one frame, every later one four), so that section windows decode to the frames the real VAE gives."""

    def __init__(self, seed, width):
        with torch.random.fork_rng():  # seeded weights without touching the server's global generator
            torch.manual_seed(seed)
            self.first_stage_model = torch.nn.Sequential(torch.nn.Conv3d(16, width, 1), torch.nn.SiLU(),
                                                         torch.nn.Conv3d(width, 3, 1))

    def decode_raw(self, samples):
        """(B, 16, T, h, w) latents -> (B, 3, 4T-3, 8h, 8w) in [-1, 1], as the VAE's decoder returns them."""
        with torch.no_grad():
            x = self.first_stage_model(samples.float())
        x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)
        return torch.tanh(x.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4))

    @staticmethod
    def process_output(x):
        return ((x + 1) / 2).clamp(0, 1)

    def decode(self, samples):
        return self.process_output(self.decode_raw(samples)).movedim(1, -1)

    def decode_tiled(self, samples, tile_x=32, tile_y=32, overlap=8, tile_t=999, overlap_t=1):
        """Tiled as ComfyUI's VAE.decode_tiled_3d tiles (same helper, same buffers)."""
        import comfy.utils

        output = comfy.utils.tiled_scale_multidim(
            samples, self.decode_raw, tile=(tile_t, tile_x, tile_y), overlap=(overlap_t, overlap, overlap),
            upscale_amount=(lambda a: max(0, a * 4 - 3), 8, 8), out_channels=3,
            index_formulas=(lambda a: max(0, a * 4 - 3), 8, 8), output_device="cpu")
        return self.process_output(output).movedim(1, -1)

    def temporal_compression_decode(self):
        return 4

    def spacial_compression_decode(self):
        return 8


class FramePackTestVideoVAE(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FramePackTestVideoVAE", category="_for_testing",
                         inputs=[io.Int.Input("seed", default=0), io.Int.Input("width", default=8)],
                         outputs=[io.Vae.Output()])

    @classmethod
    def execute(cls, seed, width):
        return io.NodeOutput(StubVideoVAE(seed, width))


def sample_nothing(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """A SAMPLER that returns its input (the section's noise) without calling the model: the pipeline's own cost."""
    return x


class FramePackTestNoModelSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FramePackTestNoModelSampler", category="_for_testing", outputs=[io.Sampler.Output()])

    @classmethod
    def execute(cls):
        import comfy.samplers

        return io.NodeOutput(comfy.samplers.KSAMPLER(sample_nothing))


class StubExtension(ComfyExtension):
    async def get_node_list(self):
        return [FramePackTestTextEncode, FramePackTestClip, FramePackTestClipVision, FramePackTestLatent,
                FramePackTestVideoVAE, FramePackTestNoModelSampler]


async def comfy_entrypoint():
    return StubExtension()
