"""The pack's own socket types."""

from comfy_api.latest import io

# framepack_core.engine.schedules.ScheduleChoice: parsed once by the schedule node, one layout per sampling mode
ScheduleSocket = io.Custom("FRAMEPACK_SCHEDULE")
# [(start_seconds, end_seconds or None, CONDITIONING), ...]
PromptsSocket = io.Custom("FRAMEPACK_PROMPTS")
# [(seconds, LATENT), ...]
KeyframesSocket = io.Custom("FRAMEPACK_KEYFRAMES")
