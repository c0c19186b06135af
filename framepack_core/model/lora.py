"""LoRA files for FramePack: every common key format mapped onto the FramePack parameter names.

Supported: musubi-tuner FramePack LoRAs (``lora_unet_transformer_blocks_0_attn_to_q``), diffusers / PEFT
(``transformer.transformer_blocks.0.attn.to_q.lora_A``), generic (``diffusion_model.<name>.lora_down``), and
HunyuanVideo LoRAs in the original key naming (musubi-tuner ``lora_unet_double_blocks_0_img_attn_qkv``,
diffusion-pipe ``transformer.double_blocks.0.img_attn_qkv``), whose fused q/k/v (and single-block
q/k/v/mlp) layers are split onto FramePack's separate projections. The result uses ComfyUI's generic
``diffusion_model.<name>.lora_up/lora_down/alpha`` keys, so ComfyUI applies it like any LoRA.
"""

from __future__ import annotations

import dataclasses
import os
import re

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .checkpoint import check_regular_file
from ..errors import InputError
from ..numerics import finite

# HunyuanVideo original names -> FramePack names; a list means a fused layer split in that order.
DOUBLE = {
    "img_attn_qkv": ["attn.to_q", "attn.to_k", "attn.to_v"], "img_attn_proj": "attn.to_out.0",
    "img_mlp.fc1": "ff.net.0.proj", "img_mlp.fc2": "ff.net.2", "img_mod.linear": "norm1.linear",
    "txt_attn_qkv": ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"], "txt_attn_proj": "attn.to_add_out",
    "txt_mlp.fc1": "ff_context.net.0.proj", "txt_mlp.fc2": "ff_context.net.2", "txt_mod.linear": "norm1_context.linear",
}
SINGLE = {"linear1": ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"], "linear2": "proj_out",
          "modulation.linear": "norm.linear"}
PREFIXES = ("diffusion_model.", "transformer.", "model.diffusion_model.", "base_model.model.")
SUFFIXES = {"lora_down.weight": "down", "lora_A.weight": "down", "lora_up.weight": "up", "lora_B.weight": "up",
            "alpha": "alpha"}


def split_key(key: str):
    """'<layer>.<suffix>' -> (layer, 'down' | 'up' | 'alpha'), or None for keys that are not LoRA weights."""
    for suffix, role in SUFFIXES.items():
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], role
    return None


def original_name_targets(layer: str):
    """HunyuanVideo original layer name -> list of FramePack module names (or None)."""
    match = re.match(r"^(double|single)_blocks[._](\d+)[._](.+)$", layer)
    if not match:
        return None
    kind, index, rest = match.groups()
    table, block = (DOUBLE, "transformer_blocks") if kind == "double" else (SINGLE, "single_transformer_blocks")
    for name, target in table.items():
        if rest in (name, name.replace(".", "_")):
            targets = target if isinstance(target, list) else [target]
            return [f"{block}.{index}.{t}" for t in targets]
    return None


def resolve(layer: str, module_names: dict):
    """A LoRA layer name -> FramePack module names; ``module_names`` maps underscore forms to dotted names."""
    for prefix in PREFIXES:
        if layer.startswith(prefix):
            layer = layer[len(prefix):]
            break
    if layer.startswith("lora_unet_"):
        layer = layer[len("lora_unet_"):]
        if layer in module_names:
            return [module_names[layer]]
    if layer in module_names.values():
        return [layer]
    return original_name_targets(layer)


def read_lora(path) -> dict:
    """A LoRA's tensors from a regular ``.safetensors`` file; any problem is an InputError naming the file."""
    path = os.fspath(path)
    if not str(path).lower().endswith(".safetensors"):
        raise InputError(f"LoRA {path} is not a .safetensors file; only safetensors are read because pickle files "
                         "can run code. Convert it or get the .safetensors release.")
    check_regular_file(path, "LoRA", InputError)
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"LoRA {path} is not a readable safetensors file ({err}); it is truncated or corrupt: "
                         "download it again.") from None


@dataclasses.dataclass
class LoraReport:
    """What became of each layer of a LoRA: applied, not fitting the model's shapes, or matching nothing."""

    applied: list
    misfit: dict  # layer -> why its shapes do not fit
    unmatched: list

    def summary(self, name: str) -> str:
        total = len(self.applied) + len(self.misfit) + len(self.unmatched)
        text = f"LoRA {name}: {len(self.applied)} of {total} layers applied"
        if self.misfit:
            layer = sorted(self.misfit)[0]
            text += f"; {len(self.misfit)} do not fit the model's shapes (e.g. {layer}: {self.misfit[layer]})"
        if self.unmatched:
            text += f"; {len(self.unmatched)} match no FramePack weight (e.g. {sorted(self.unmatched)[:3]})"
        return text


def misfit(weights: dict, rows: list, columns: set) -> str | None:
    """Why a layer's down/up pair does not fit its targets (out rows ``rows``, in columns), or None."""
    up, down = weights["up"], weights["down"]
    if up.ndim != 2 or down.ndim != 2:
        return f"lora_up {tuple(up.shape)} and lora_down {tuple(down.shape)} are not matrices"
    if up.shape[1] != down.shape[0]:
        return f"lora_up {tuple(up.shape)} and lora_down {tuple(down.shape)} have different ranks"
    if up.shape[0] != sum(rows):
        return f"lora_up has {up.shape[0]} rows, the weight(s) {sum(rows)}"
    if len(columns) != 1 or down.shape[1] not in columns:
        return f"lora_down has {down.shape[1]} columns, the weight {sorted(columns)}"
    return None


def convert_lora(lora: dict, shapes: dict) -> dict:
    """Convert a LoRA state dict to FramePack names in ComfyUI's generic format.

    ``shapes`` maps the model's weight names (``transformer_blocks.0.attn.to_q.weight`` ...) to shapes; it decides
    how fused layers split. Returns the state dict and a ``LoraReport``. Raises InputError when no layer fits
    (nothing would change: the run would look like a success without the LoRA) or a tensor is not finite.
    """
    modules = {k[: -len(".weight")]: v for k, v in shapes.items() if k.endswith(".weight")}
    underscored = {name.replace(".", "_"): name for name in modules}
    layers: dict = {}
    for key, tensor in lora.items():
        parts = split_key(key)
        if parts is not None:
            layers.setdefault(parts[0], {})[parts[1]] = tensor
    out, report = {}, LoraReport([], {}, [])
    for layer, weights in layers.items():
        targets = resolve(layer, underscored)
        if not targets or any(t not in modules for t in targets) or {"up", "down"} - set(weights):
            report.unmatched.append(layer)
            continue
        rows = [modules[t][0] for t in targets]
        why = misfit(weights, rows, {tuple(modules[t])[1] if len(modules[t]) > 1 else None for t in targets})
        if why is not None:
            report.misfit[layer] = why
            continue
        for role, tensor in weights.items():
            if tensor.is_floating_point() and not finite(tensor):
                raise InputError(f"the LoRA's {role} tensor of layer {layer} holds NaN or infinite values; the LoRA "
                                 "is damaged (or from a diverged training run): download it again.")
        report.applied.append(layer)
        for target, part in zip(targets, torch.split(weights["up"], rows, dim=0)):
            out[f"diffusion_model.{target}.lora_up.weight"] = part.contiguous()
            out[f"diffusion_model.{target}.lora_down.weight"] = weights["down"]
            if "alpha" in weights:
                out[f"diffusion_model.{target}.alpha"] = weights["alpha"]
    if not out and report.misfit:
        raise InputError(f"{report.summary('file')}: none of its layers fits this model, so it would change nothing. "
                         "It was trained for a model of another size; use a LoRA made for this FramePack model.")
    if not out:
        sample = sorted(layers)[:3] or sorted(lora)[:3]
        raise InputError(
            f"the LoRA matches no FramePack weight (its layers are named like {sample}). It may be for another "
            "model (Flux, Wan, SD...); FramePack takes FramePack and HunyuanVideo LoRAs.")
    return {"state_dict": out, "report": report, "unmatched": sorted(report.unmatched), "layers": len(layers)}
