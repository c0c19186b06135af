"""The pack's own socket types."""

from comfy_api.latest import io

# framepack_core.engine.schedules.ScheduleChoice: parsed once by the schedule node, one layout per sampling mode
ScheduleSocket = io.Custom("FRAMEPACK_SCHEDULE")
# [(start_seconds, end_seconds or None, CONDITIONING), ...]
PromptsSocket = io.Custom("FRAMEPACK_PROMPTS")
# [(seconds, LATENT), ...]
KeyframesSocket = io.Custom("FRAMEPACK_KEYFRAMES")
# {"vae", "filename_prefix", "crf", "pixel_format", "tile_size"}: the FramePack Video Output node's settings
VideoOutputSocket = io.Custom("FRAMEPACK_VIDEO_OUTPUT")
