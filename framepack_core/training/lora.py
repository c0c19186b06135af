"""LoRA adapters for training FramePack, saved in musubi-tuner's key format.

The adapters are forward hooks on the frozen base model's Linear layers (``out + scale x up(down(x))``), held in
their own module whose parameter names are musubi's (``lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight``),
so the base model's structure and state dict stay untouched and the adapter state dict *is* the file that
``FramePackLoraLoader`` and ComfyUI's ``LoraLoaderModelOnly`` read. The targets are musubi-tuner's FramePack
targets: every Linear layer of the dual- and single-stream blocks except the modulation (``norm*``) layers, that is
the attention projections and the MLPs.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from ..errors import InputError
from ..model.lora import read_lora

BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")
EXCLUDED = re.compile(r"(^|\.)norm")  # musubi's default exclude pattern ``.*(norm).*`` (the modulation layers)
STORAGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float8_e4m3fn": torch.float8_e4m3fn}


def target_modules(model: nn.Module) -> dict:
    """Name -> Linear of the layers musubi-tuner trains in a FramePack transformer."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and name.startswith(BLOCKS) and not EXCLUDED.search(name)}


def musubi_name(module_name: str) -> str:
    return "lora_unet_" + module_name.replace(".", "_")


class LoraLayer(nn.Module):
    """One adapter: ``lora_down`` (rank x in, Kaiming-uniform) then ``lora_up`` (out x rank, zero), times
    ``alpha / rank``; computed in the input's dtype from float32 master weights."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.lora_down = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device)
        self.lora_up = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device)
        nn.init.zeros_(self.lora_up.weight)
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.scale = alpha / rank

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.linear(x, self.lora_down.weight.to(x.dtype))
        return F.linear(hidden, self.lora_up.weight.to(x.dtype)) * self.scale


class LoraAdapters(nn.Module):
    """The adapters of one model, hooked into its target layers; ``state_dict()`` is the musubi file's content."""

    def __init__(self, model: nn.Module, rank: int, alpha: float, storage_dtype: str = "float32"):
        super().__init__()
        if not isinstance(rank, int) or rank < 1:
            raise InputError(f"LoRA rank must be a positive integer, got {rank!r}.")
        if not alpha > 0:
            raise InputError(f"LoRA alpha must be > 0 (musubi's default is 1; alpha = rank means scale 1), got {alpha!r}.")
        if storage_dtype not in STORAGE_DTYPES:
            raise InputError(f"base weight storage {storage_dtype!r} is not one of {sorted(STORAGE_DTYPES)}.")
        self.rank, self.alpha = rank, alpha
        targets = target_modules(model)
        if not targets:
            raise InputError("the model has no dual- or single-stream block Linear layers to put LoRA adapters on.")
        self.layers = nn.ModuleDict({musubi_name(name): LoraLayer(module, rank, alpha)
                                     for name, module in targets.items()})
        for param in model.parameters():
            param.requires_grad_(False)
        for name, module in targets.items():
            store_base_weight(module, STORAGE_DTYPES[storage_dtype])
            module.register_forward_hook(self.hook(self.layers[musubi_name(name)]))

    @staticmethod
    def hook(layer: LoraLayer):
        def add_delta(module, inputs, output):
            return output + layer.delta(inputs[0])
        return add_delta

    def musubi_state_dict(self) -> dict:
        """``lora_unet_<module>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``, contiguous float32."""
        return {key: value.detach().float().cpu().contiguous() for key, value in self.state_dict().items()}

    def state_dict(self, *args, **kwargs):
        # Without the ModuleDict's ``layers.`` prefix: the keys are musubi's.
        return {key[len("layers."):]: value for key, value in super().state_dict(*args, **kwargs).items()}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return super().load_state_dict({"layers." + key: value for key, value in state_dict.items()}, strict, assign)


def store_base_weight(module: nn.Linear, dtype: torch.dtype) -> None:
    """Keep a frozen base weight in ``dtype`` and cast it to the input's dtype in every call (as ComfyUI's
    manual-cast ops do), so bf16 or fp8 storage computes in float32."""
    if dtype == module.weight.dtype:
        return
    module.weight = nn.Parameter(module.weight.detach().to(dtype), requires_grad=False)

    def forward(x, module=module):
        bias = None if module.bias is None else module.bias.to(x.dtype)
        return F.linear(x, module.weight.to(x.dtype), bias)
    module.forward = forward


def save_lora(adapters: LoraAdapters, path, metadata: dict | None = None) -> None:
    """Write the adapters as a musubi-format ``.safetensors`` LoRA."""
    save_file(adapters.musubi_state_dict(), str(path), metadata=metadata)


def load_lora_adapters(model: nn.Module, path) -> LoraAdapters:
    """Hook a musubi-format LoRA file (as ``save_lora`` writes it) into ``model``; returns its adapters."""
    tensors = read_lora(path)
    downs = [v for k, v in tensors.items() if k.endswith(".lora_down.weight")]
    alphas = {float(v) for k, v in tensors.items() if k.endswith(".alpha")}
    if not downs or len(alphas) > 1:
        raise InputError(f"{path} is not a LoRA with one rank and alpha as save_lora writes it; load it with "
                         "FramePackLoraLoader instead.")
    rank = downs[0].shape[0]
    adapters = LoraAdapters(model, rank, alphas.pop() if alphas else float(rank))
    adapters.load_state_dict(tensors)
    return adapters
