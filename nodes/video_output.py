"""FramePack Video Output: the settings of the sampler's streaming decode (``comfy_adapter.streaming_video``)."""

from __future__ import annotations

from comfy_api.latest import io

from ..comfy_adapter.sockets import VideoOutputSocket
from ..comfy_adapter.streaming_video import PIXEL_FORMATS


class FramePackVideoOutput(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackVideoOutput",
            display_name="FramePack Video Output",
            category="FramePack/video",
            description="Connect to the FramePack Sampler's video_output: the sampler then decodes every section as "
                        "soon as it is finished and appends it to an MP4 in the output folder, so a long video never "
                        "sits in memory as pixels. The growing video plays on the sampler while it runs.",
            inputs=[
                io.Vae.Input("vae", tooltip="The HunyuanVideo VAE (VAELoader)."),
                io.String.Input("filename_prefix", default="video/FramePack",
                                tooltip="Where the MP4 goes in the output folder, as in SaveVideo."),
                io.Int.Input("crf", default=16, min=0, max=51,
                             tooltip="H.264 quality: lower is better and larger (FramePack's demo uses 16)."),
                io.Combo.Input("pixel_format", options=list(PIXEL_FORMATS), default="yuv420p",
                               tooltip="yuv420p plays everywhere; yuv444p keeps full colour resolution."),
                io.Int.Input("tile_size", default=0, min=0, max=4096, step=32,
                             tooltip="0: ComfyUI decides (whole frames, tiles when memory runs out); otherwise decode "
                                     "in spatial tiles of this many pixels, for small GPUs."),
            ],
            outputs=[VideoOutputSocket.Output(tooltip="Settings for the FramePack Sampler's video_output input.")],
        )

    @classmethod
    def execute(cls, vae, filename_prefix, crf, pixel_format, tile_size) -> io.NodeOutput:
        return io.NodeOutput({"vae": vae, "filename_prefix": filename_prefix, "crf": crf,
                              "pixel_format": pixel_format, "tile_size": tile_size})
