"""The pack's own socket types."""

from comfy_api.latest import io

# {"schedule": name or paper string or None, "latent_window_size": int}
ScheduleSocket = io.Custom("FRAMEPACK_SCHEDULE")
# [(start_seconds, end_seconds or None, CONDITIONING), ...]
PromptsSocket = io.Custom("FRAMEPACK_PROMPTS")
# [(seconds, LATENT), ...]
KeyframesSocket = io.Custom("FRAMEPACK_KEYFRAMES")
