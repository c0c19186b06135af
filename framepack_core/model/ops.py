"""Layer classes that cast their weights to the input's dtype and device on every call.

They let weights be stored in one dtype (fp8, bf16) and computed in another, the way ComfyUI's
``comfy.ops.manual_cast`` does; ``load_transformer`` uses them when a checkpoint's storage dtypes differ
from the compute dtype. Inside ComfyUI, ``comfy.ops`` takes this role.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cast_like(param, x: torch.Tensor):
    if param is None or (param.dtype == x.dtype and param.device == x.device):
        return param
    return param.to(device=x.device, dtype=x.dtype)


class Linear(nn.Linear):
    def forward(self, x):
        return F.linear(x, cast_like(self.weight, x), cast_like(self.bias, x))


class Conv3d(nn.Conv3d):
    def forward(self, x):
        return self._conv_forward(x, cast_like(self.weight, x), cast_like(self.bias, x))


class LayerNorm(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, cast_like(self.weight, x), cast_like(self.bias, x), self.eps)


class RMSNorm(nn.RMSNorm):
    def forward(self, x):
        return F.rms_norm(x, self.normalized_shape, cast_like(self.weight, x), self.eps)


class CastOps:
    """An ``operations`` namespace for mixed storage and compute dtypes."""

    Linear = Linear
    Conv3d = Conv3d
    LayerNorm = LayerNorm
    RMSNorm = RMSNorm
