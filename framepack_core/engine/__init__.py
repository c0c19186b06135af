"""The generation engine: schedules, section plans, samplers, step caches, the section loop, conditioning
over time, validation and resume."""
