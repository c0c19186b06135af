"""One node that encodes the start image both ways FramePack needs, so the right wiring is the easy one."""

from __future__ import annotations

from comfy_api.latest import io

from ..framepack_core import InputError
from ..framepack_core.engine.validation import SIGLIP_TOKENS, SIGLIP_WIDTH, check_image_embeddings


def encode_start_image(image, vae, clip_vision):
    """(LATENT, CLIP_VISION_OUTPUT) of one image, encoded as FramePack's demo does.

    The VAE encodes the image as it is (VAEEncode). SigLIP sees the whole image squashed to its 384 x 384 input,
    never a centre crop: FramePack's demo runs the SigLIP image processor, which resizes without cropping, and
    that is ComfyUI's CLIPVisionEncode with crop 'none' (its default 'center' gives another embedding).
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise InputError(f"the start image must be one image (1, H, W, C), got a batch of shape {tuple(image.shape)}; "
                         "pick one with ImageFromBatch.")
    height, width = image.shape[1:3]
    if height % 16 or width % 16:
        raise InputError(f"the start image is {width}x{height} px, not multiples of 16; resize it with FramePack "
                         "Resize to Bucket first.")
    latent = {"samples": vae.encode(image[:, :, :, :3])}
    encoded = clip_vision.encode_image(image, crop=False)
    states = encoded["last_hidden_state"]
    if states.shape[-1] == SIGLIP_WIDTH:
        check_image_embeddings("the CLIP vision encoding", states)
    return latent, encoded


class FramePackEncodeStartImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackEncodeStartImage",
            display_name="FramePack Encode Start Image",
            category="FramePack/conditioning",
            description="Encodes the start (or end / keyframe) image for the FramePack sampler: the VAE latent and "
                        "the SigLIP image embedding, the latter without a centre crop, as FramePack's demo does. Use "
                        "it instead of VAEEncode + CLIPVisionEncode, whose default crop 'center' changes the result.",
            inputs=[
                io.Image.Input("image",
                               tooltip="One image, resized to a FramePack bucket (FramePack Resize to Bucket)."),
                io.Vae.Input("vae", tooltip="The HunyuanVideo VAE (VAELoader, hunyuan_video_vae_bf16)."),
                io.ClipVision.Input("clip_vision",
                                    tooltip=f"FramePack's image encoder: CLIPVisionLoader with "
                                            f"sigclip_vision_patch14_384 ({SIGLIP_TOKENS} tokens of width "
                                            f"{SIGLIP_WIDTH}; another SigLIP is refused)."),
            ],
            outputs=[
                io.Latent.Output(display_name="start_latent", tooltip="The image's latent, for start_latent (or "
                                                                      "end_latent / a keyframe)."),
                io.ClipVisionOutput.Output(display_name="clip_vision_output",
                                           tooltip="The image's SigLIP encoding (uncropped), for clip_vision_output "
                                                   "(or end_clip_vision_output)."),
            ],
        )

    @classmethod
    def execute(cls, image, vae, clip_vision) -> io.NodeOutput:
        return io.NodeOutput(*encode_start_image(image, vae, clip_vision))
