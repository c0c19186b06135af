"""Image nodes: FramePack's resolution buckets and colour-drift correction."""

from __future__ import annotations

import comfy.utils
from comfy_api.latest import io

from ..framepack_core.engine.buckets import nearest_bucket
from ..framepack_core.engine.color import match_colors
from ..framepack_core.engine.validation import check_number


class FramePackBucket(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackBucket",
            display_name="FramePack Resize to Bucket",
            category="FramePack/image",
            description="Resizes and centre-crops an image to the FramePack bucket (about resolution x resolution "
                        "pixels, multiples of 16) closest to its aspect ratio, as the reference does before encoding.",
            inputs=[
                io.Image.Input("image", tooltip="The start (or end / keyframe) image."),
                io.Int.Input("resolution", default=640, min=128, max=2048, step=16,
                             tooltip="Base resolution of the bucket set; FramePack was trained at 640."),
                io.Combo.Input("upscale_method", options=["lanczos", "bicubic", "bilinear", "area", "nearest-exact"],
                               default="lanczos", tooltip="Resampling filter (the reference uses Lanczos)."),
            ],
            outputs=[
                io.Image.Output(tooltip="The resized and cropped image."),
                io.Int.Output(display_name="width", tooltip="Bucket width in pixels."),
                io.Int.Output(display_name="height", tooltip="Bucket height in pixels."),
            ],
        )

    @classmethod
    def execute(cls, image, resolution, upscale_method) -> io.NodeOutput:
        height, width = nearest_bucket(image.shape[1], image.shape[2], resolution)
        samples = image.movedim(-1, 1)
        resized = comfy.utils.common_upscale(samples, width, height, upscale_method, "center").movedim(1, -1)
        return io.NodeOutput(resized.clamp(0, 1), width, height)


class FramePackColorMatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackColorMatch",
            display_name="FramePack Colour Drift Correction",
            category="FramePack/image",
            description="Matches every frame's Lab colour statistics to a reference (the start image), undoing the "
                        "slow colour and contrast drift of long videos.",
            inputs=[
                io.Image.Input("images", tooltip="The decoded video frames."),
                io.Image.Input("reference", tooltip="The image whose colours to keep, usually the start image."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="0 leaves the frames unchanged, 1 matches them fully."),
            ],
            outputs=[io.Image.Output(tooltip="The corrected frames.")],
        )

    @classmethod
    def execute(cls, images, reference, strength) -> io.NodeOutput:
        check_number("strength", strength, 0, 1, " 0 leaves the frames unchanged, 1 matches them fully.")
        return io.NodeOutput(match_colors(images, reference, strength))
