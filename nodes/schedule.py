"""The frame-schedule node: the schedule as one parsed value, and a picture of what it does."""

from __future__ import annotations

import numpy
import torch
from comfy_api.latest import io, ui

from ..framepack_core import InputError, plan_sections, section_count
from ..framepack_core.engine.planning import MAX_SECONDS
from ..framepack_core.engine.schedule_picture import draw_schedule_picture
from ..framepack_core.engine.schedules import (DEFAULT_LATENT_WINDOW_SIZE, MAX_LATENT_WINDOW_SIZE, MODES, UNIFORM_DEFAULT,
                                               ScheduleChoice, choose_schedule)
from ..comfy_adapter.sockets import ScheduleSocket

NAMED = ("default", "standard", "inverted", "uniform", "custom")


class FramePackScheduleNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackSchedule",
            display_name="FramePack Schedule",
            category="FramePack/sampling",
            description="How the history is compressed into each section's context. 'default' is the layout the "
                        "chosen sampling mode's checkpoint was trained with; custom strings use the paper's "
                        "notation, e.g. f1k1_x_g9_f1k1f2k2f16k4_td. Shows a picture of one section's packed context.",
            inputs=[
                io.Combo.Input("schedule", options=list(NAMED), default="default",
                               tooltip="default: the mode's released layout. standard: nearer frames get more tokens "
                                       "(1 at 1x2x2, 2 at 2x4x4, 16 at 4x8x8). inverted: the start frame always keeps "
                                       "full resolution. uniform: every context frame at one kernel. custom: the text "
                                       "below."),
                io.Int.Input("latent_window_size", default=DEFAULT_LATENT_WINDOW_SIZE, min=1,
                             max=MAX_LATENT_WINDOW_SIZE,
                             tooltip="Latent frames generated per section (9 = 33 video frames). The released models "
                                     "were trained with 9."),
                io.Combo.Input("uniform_kernel", options=["k1", "k2", "k4", "k8"], default=UNIFORM_DEFAULT[0],
                               tooltip="Kernel of the uniform schedule: k1 = 1x2x2, k2 = 2x4x4, k4 = 4x8x8, k8 = 8x16x16."),
                io.Int.Input("uniform_frames", default=UNIFORM_DEFAULT[1], min=1, max=128,
                             tooltip="Context frames of the uniform schedule."),
                io.String.Input("custom", default="", multiline=False,
                                tooltip="A schedule in the paper's notation (used when schedule is 'custom'): fNkM = N "
                                        "frames at kernel kM, gN = generate N frames, x = skip, td/ta/tc = tail "
                                        "delete/append/compress."),
                # The picture's settings: optional and last, so saved workflows and API prompts keep loading.
                io.Int.Input("preview_section", default=1, min=1, max=100000, optional=True,
                             tooltip="The section the picture shows, in generation order (1 = the first one "
                                     "sampled). Only the picture uses it."),
                io.Combo.Input("preview_mode", options=list(MODES), default="inverted_anti_drifting", optional=True,
                               tooltip="The sampling mode the picture is drawn for (set it to the sampler's). Only the "
                                       "picture uses it."),
                io.Float.Input("preview_seconds", default=5.0, min=0.1, max=MAX_SECONDS, step=0.1, optional=True,
                               tooltip="The video length the picture's section belongs to, in seconds at 30 fps (the "
                                       "sampler's length). Only the picture uses it."),
                io.Int.Input("preview_width", default=640, min=16, max=4096, step=16, optional=True,
                             tooltip="Video width in pixels the token counts are drawn for. Only the picture uses it."),
                io.Int.Input("preview_height", default=608, min=16, max=4096, step=16, optional=True,
                             tooltip="Video height in pixels the token counts are drawn for. Only the picture uses it."),
            ],
            outputs=[ScheduleSocket.Output(tooltip="The schedule, for the FramePack sampler.")],
        )

    @classmethod
    def execute(cls, schedule, latent_window_size, uniform_kernel, uniform_frames, custom, preview_section=1,
                preview_mode="inverted_anti_drifting", preview_seconds=5.0, preview_width=640,
                preview_height=608) -> io.NodeOutput:
        choice = chosen_schedule(schedule, latent_window_size, uniform_kernel, uniform_frames, custom)
        picture = section_picture(choice, preview_mode, preview_seconds, preview_section, preview_width,
                                  preview_height)
        return io.NodeOutput(choice, ui=ui.PreviewImage(picture, cls=cls))


def chosen_schedule(schedule, latent_window_size, uniform_kernel, uniform_frames, custom) -> ScheduleChoice:
    """The node's widgets as one parsed schedule; a bad custom text fails here, pointing at the bad token."""
    if schedule == "custom":
        if not custom.strip():
            raise InputError("schedule is 'custom' but the custom text is empty; write a schedule such as "
                             "f1k1_x_g9_f1k1f2k2f16k4_td, or pick a named schedule.")
        return choose_schedule(custom, latent_window_size)
    if schedule == "uniform":
        return choose_schedule("uniform", latent_window_size, kernel=uniform_kernel, frames=uniform_frames)
    return choose_schedule(schedule, latent_window_size)


def section_picture(choice: ScheduleChoice, mode: str, seconds: float, section: int, width: int,
                    height: int) -> torch.Tensor:
    """The picture of one section of a ``seconds`` long video, as a ComfyUI IMAGE batch of one."""
    plans = plan_sections(mode, section_count(seconds, choice.latent_window_size), schedule=choice)
    if not 1 <= section <= len(plans):
        raise InputError(f"preview_section is {section}, but a {seconds:g} s video at window "
                         f"{choice.latent_window_size} has {len(plans)} section(s): pick 1 to {len(plans)}, or make "
                         "preview_seconds longer.")
    image = draw_schedule_picture(plans[section - 1], height // 8, width // 8)
    return torch.from_numpy(numpy.asarray(image)).float().div(255).unsqueeze(0)
