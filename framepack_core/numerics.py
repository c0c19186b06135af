"""Tensor checks shared by the model loader and the engine."""

import torch


def finite(tensor: torch.Tensor) -> bool:
    """All values finite; fp8 has no isfinite kernel, so its NaN / inf bit patterns are tested instead."""
    if tensor.dtype == torch.float8_e4m3fn:  # NaN is S.1111.111; no inf
        return not bool(((tensor.view(torch.uint8) & 0x7F) == 0x7F).any())
    if tensor.dtype == torch.float8_e5m2:  # inf and NaN have the exponent 11111
        return not bool(((tensor.view(torch.uint8) & 0x7C) == 0x7C).any())
    if tensor.numel() == 0:
        return True
    # min and max propagate NaN and are +-inf when an inf is present: one vectorised pass without full-size
    # temporaries, about 30x faster than isfinite(t).all() on bf16 (bench.parser_scaling measures it).
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low) & torch.isfinite(high))
