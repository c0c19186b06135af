"""FramePack for ComfyUI.

ComfyUI imports this package and calls ``comfy_entrypoint``. Outside ComfyUI (tests, scripts) importing it
does nothing: the FramePack implementation itself is the pure-PyTorch ``framepack_core`` package.
"""

import importlib.util

if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint  # noqa: F401  (ComfyUI's custom-node loader looks this name up)
