"""The FramePack LoRA loader: FramePack and HunyuanVideo LoRAs of every common key format."""

from __future__ import annotations

import logging

import comfy.sd
import folder_paths
from comfy_api.latest import io
from ..framepack_core import InputError
from ..framepack_core.model.lora import convert_lora, read_lora
from ..framepack_core.engine.validation import check_number
from .loader import listed_file

log = logging.getLogger(__name__)


class FramePackLoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackLoraLoader",
            display_name="FramePack LoRA Loader",
            category="FramePack/loaders",
            description="Applies a LoRA to a FramePack model. Besides what LoraLoaderModelOnly reads, it maps "
                        "HunyuanVideo LoRAs in the original key naming (fused q/k/v layers) onto FramePack's weights. "
                        "It reports how many layers applied, did not fit the model's shapes or matched nothing "
                        "(in the console), and refuses a LoRA of which no layer fits.",
            inputs=[
                io.Model.Input("model", tooltip="The FramePack model."),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="A .safetensors LoRA from models/loras."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="How strongly the LoRA changes the model (0 = not at all)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with the LoRA applied (the input model is unchanged).")],
        )

    @classmethod
    def execute(cls, model, lora_name, strength) -> io.NodeOutput:
        if lora_name not in folder_paths.get_filename_list("loras"):
            raise InputError(f"LoRA {lora_name!r} is not in models/loras; pick one from the list.")
        check_number("strength", strength, -10, 10, " 1 = the LoRA as trained, 0 = off.")
        lora = read_lora(listed_file("loras", lora_name))
        shapes = {k: tuple(v.shape) for k, v in model.model.diffusion_model.state_dict().items()}
        converted = convert_lora(lora, shapes)
        report = converted["report"]
        if report.misfit or report.unmatched:
            log.warning("FramePack %s; only the applied layers change the model.", report.summary(lora_name))
        else:
            log.info("FramePack %s.", report.summary(lora_name))
        patched, _ = comfy.sd.load_lora_for_models(model, None, converted["state_dict"], strength, 0)
        return io.NodeOutput(patched)
