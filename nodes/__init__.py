"""ComfyUI nodes of the FramePack pack: thin adapters over ``framepack_core``."""

from comfy_api.latest import ComfyExtension, io

from .loader import FramePackModelLoader


class FramePackExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [FramePackModelLoader]


async def comfy_entrypoint() -> FramePackExtension:
    return FramePackExtension()
