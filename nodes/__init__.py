"""ComfyUI nodes of the FramePack pack: thin adapters over ``framepack_core``."""

from comfy_api.latest import ComfyExtension, io

from .timeline import FramePackKeyframes, FramePackTimestampedPrompts
from .custom_sampling import FramePackImageToVideo, FramePackSectionSampler, FramePackSigmas
from .encode import FramePackEncodeStartImage
from .image import FramePackBucket, FramePackColorMatch
from .loader import FramePackModelLoader
from .lora_loader import FramePackLoraLoader
from .sampler import FramePackSampler
from .schedule import FramePackScheduleNode
from .single_frame_sampler import FramePackSingleFrameSampler
from .step_cache import FramePackMagCache, FramePackTeaCache
from .video_output import FramePackVideoOutput

NODES = [FramePackModelLoader, FramePackLoraLoader, FramePackBucket, FramePackScheduleNode, FramePackSampler, FramePackTimestampedPrompts,
         FramePackKeyframes, FramePackSingleFrameSampler, FramePackColorMatch, FramePackEncodeStartImage,
         FramePackVideoOutput, FramePackImageToVideo, FramePackSectionSampler, FramePackSigmas, FramePackTeaCache, FramePackMagCache]


class FramePackExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> FramePackExtension:
    return FramePackExtension()
