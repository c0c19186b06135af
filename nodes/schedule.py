"""The frame-schedule node."""

from __future__ import annotations

from comfy_api.latest import io

from ..framepack_core import InputError, parse_schedule
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
                        "notation, e.g. f1k1_x_g9_f1k1f2k2f16k4_td.",
            inputs=[
                io.Combo.Input("schedule", options=list(NAMED), default="default",
                               tooltip="default: the mode's released layout. standard: nearer frames get more tokens "
                                       "(1 at 1x2x2, 2 at 2x4x4, 16 at 4x8x8). inverted: the start frame always keeps "
                                       "full resolution. uniform: every context frame at one kernel. custom: the text "
                                       "below."),
                io.Int.Input("latent_window_size", default=9, min=1, max=33,
                             tooltip="Latent frames generated per section (9 = 33 video frames). The released models "
                                     "were trained with 9."),
                io.Combo.Input("uniform_kernel", options=["k1", "k2", "k4", "k8"], default="k2",
                               tooltip="Kernel of the uniform schedule: k1 = 1x2x2, k2 = 2x4x4, k4 = 4x8x8, k8 = 8x16x16."),
                io.Int.Input("uniform_frames", default=12, min=1, max=128,
                             tooltip="Context frames of the uniform schedule."),
                io.String.Input("custom", default="", multiline=False,
                                tooltip="A schedule in the paper's notation (used when schedule is 'custom'): fNkM = N "
                                        "frames at kernel kM, gN = generate N frames, x = skip, td/ta/tc = tail "
                                        "delete/append/compress."),
            ],
            outputs=[ScheduleSocket.Output(tooltip="The schedule, for the FramePack sampler.")],
        )

    @classmethod
    def execute(cls, schedule, latent_window_size, uniform_kernel, uniform_frames, custom) -> io.NodeOutput:
        if schedule == "custom":
            if not custom.strip():
                raise InputError("schedule is 'custom' but the custom text is empty; write a schedule such as "
                                 "f1k1_x_g9_f1k1f2k2f16k4_td, or pick a named schedule.")
            parse_schedule(custom.strip(), latent_window_size)  # fail here, pointing at the bad token
            text = custom.strip()
        elif schedule == "uniform":
            text = f"uniform:{uniform_kernel}:{uniform_frames}"
        else:
            text = None if schedule == "default" else schedule
        return io.NodeOutput({"schedule": text, "latent_window_size": latent_window_size})
