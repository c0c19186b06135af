"""The FramePack sampler node: a whole video, section by section, in any sampling mode."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..framepack_core import MODES, GenerationSettings, generate, section_count
from ..framepack_core.engine.conditioning import FPS
from ..framepack_core.engine.generate import initial_state, validate_run
from ..framepack_core.engine.resume import CONTINUE, STOP, ResumeWriter, load_resume
from ..framepack_core.engine.schedules import choose_schedule
from ..comfy_adapter.section_sampler import SAMPLER_NAMES, ComfySectionSampler, framepack_sampler, step_cache_choice
from ..comfy_adapter.run_inputs import (build_inputs, chained, comfy_latent_in_place, history_frames, patched_shift,
                                        warn_on_mode_mismatch)
from ..comfy_adapter.resume_files import AUTO, chosen_path, remove_old_runs, resume_choices, run_fingerprint
from ..comfy_adapter.sockets import KeyframesSocket, PromptsSocket, ScheduleSocket, VideoOutputSocket
from ..comfy_adapter.streaming_video import (check_video_output_is_fed, finished_output, keep_partial, start_streaming)

log = logging.getLogger(__name__)

def sampling_mode_input():
    """The sampling-mode combo of the FramePack samplers (the all-in-one and the Section Sampler)."""
    return io.Combo.Input("sampling_mode", options=list(MODES), default="inverted_anti_drifting",
                          tooltip="inverted_anti_drifting: generate backwards towards the start image "
                                  "(FramePackI2V_HY). vanilla: forward, section after section (FramePack_F1). "
                                  "anti_drifting: plan the end first, then fill in towards it.")


class FramePackSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackSampler",
            display_name="FramePack Sampler",
            category="FramePack/sampling",
            description="Generates a video section by section with FramePack: each section sees a packed context of "
                        "constant size, so every section costs the same however long the video. Output is a video "
                        "LATENT for VAEDecodeTiled.",
            inputs=[
                io.Model.Input("model", tooltip="The FramePack model from Load FramePack Model."),
                io.Conditioning.Input("positive", tooltip="The prompt: CLIPTextEncode on a DualCLIPLoader of type "
                                                          "hunyuan_video. Not TextEncodeHunyuanVideo_ImageToVideo: "
                                                          "its other system prompt gives other states, which "
                                                          "cannot be detected here."),
                io.Latent.Input("start_latent", optional=True,
                                tooltip="The start image, VAEEncode'd at a FramePack bucket size (one frame). Leave "
                                        "empty for text-to-video (then width and height are used)."),
                io.ClipVisionOutput.Input("clip_vision_output", optional=True,
                                          tooltip="SigLIP encoding of the start image: FramePack Encode Start Image, "
                                                  "or CLIPVisionEncode with crop 'none' (its default 'center' "
                                                  "changes the result). Checked: width and 729 tokens. Empty: zeros "
                                                  "(text-to-video)."),
                sampling_mode_input(),
                io.Float.Input("length", default=5.0, min=0.1, max=3600.0, step=0.1,
                               tooltip="Video length, in seconds at 30 fps or in frames (see length_unit). It is "
                                       "rounded to whole sections of 4 x latent_window_size frames."),
                io.Combo.Input("length_unit", options=["seconds", "frames"], default="seconds",
                               tooltip="Whether length counts seconds (30 fps) or pixel frames."),
                io.Int.Input("steps", default=25, min=1, max=200, tooltip="Sampling steps per section (25 in FramePack)."),
                io.Float.Input("distilled_cfg", default=10.0, min=1.0, max=32.0, step=0.1,
                               tooltip="Distilled guidance scale fed to the model (FramePack's default 10)."),
                io.Float.Input("real_cfg", default=1.0, min=1.0, max=32.0, step=0.1,
                               tooltip="Real classifier-free guidance; 1 = off (one model call per step). Above 1 the "
                                       "negative prompt is used and sampling takes twice as long."),
                io.Float.Input("cfg_rescale", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Rescales the guided prediction towards the positive one's std (0 = off)."),
                io.Float.Input("shift", default=0.0, min=0.0, max=100.0, step=0.01,
                               tooltip="Timestep shift; 0 = the shift of a ModelSamplingSD3 node on the model if "
                                       "there is one, else FramePack's automatic shift from the token count (7.0 at "
                                       "the 640 buckets)."),
                io.Int.Input("seed", default=31337, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; one draw per section from a CPU generator, like the reference."),
                io.Combo.Input("sampler_name", options=list(SAMPLER_NAMES), default="unipc_bh1",
                               tooltip="FramePack's flow UniPC (bh1 is the reference) or Euler. A connected sampler "
                                       "input overrides this."),
                io.Float.Input("teacache_threshold", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="(legacy: use the FramePack TeaCache / MagCache node) TeaCache: skip steps "
                                       "whose input barely changed. 0 = off, 0.15 ~2x faster (hands may get slightly "
                                       "worse). Needs real_cfg 1."),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="Negative prompt, only used when real_cfg > 1. For an empty negative "
                                              "encode an empty text with CLIPTextEncode (what FramePack uses); "
                                              "ConditioningZeroOut gives other, all-zero states."),
                ScheduleSocket.Input("schedule", optional=True,
                                                      tooltip="Frame schedule and latent window size from the "
                                                              "FramePack Schedule node; default: the mode's released "
                                                              "layout, window 9."),
                io.Sampler.Input("sampler", optional=True, tooltip="Any ComfyUI SAMPLER to use instead of sampler_name."),
                io.Latent.Input("end_latent", optional=True,
                                tooltip="An end frame (VAEEncode'd, same size as the start) for the anti-drifting modes."),
                io.ClipVisionOutput.Input("end_clip_vision_output", optional=True,
                                          tooltip="SigLIP encoding of the end image, for image-embedding interpolation."),
                io.Boolean.Input("interpolate_image_embeddings", default=False, optional=True,
                                 tooltip="Blend the image embedding from the start to the end image over the video."),
                KeyframesSocket.Input("keyframes", optional=True,
                                                       tooltip="Keyframe latents at chosen times (FramePack Keyframes)."),
                PromptsSocket.Input("prompts", optional=True,
                                                     tooltip="Prompts over time (FramePack Timestamped Prompts); "
                                                             "replaces positive."),
                io.Float.Input("prompt_blend_seconds", default=0.0, min=0.0, max=60.0, step=0.1, optional=True,
                               tooltip="Blend each new prompt in over this many seconds."),
                io.Latent.Input("initial_latents", optional=True,
                                tooltip="An existing video's latents to extend (vanilla / anti_drifting): the new "
                                        "sections continue after its last frame."),
                io.Combo.Input("resume_file", options=resume_choices(), default=AUTO, optional=True,
                               tooltip="After every section the new section is saved to a run folder in "
                                       "output/framepack_resume (a small file per section). 'auto' continues a "
                                       "cancelled or crashed run of the same graph from its last finished section, "
                                       "and returns a finished one at once; 'off' neither saves nor resumes; or pick a "
                                       "saved run. The newest 3 finished and 5 unfinished runs are kept."),
                io.Int.Input("width", default=640, min=16, max=4096, step=16, optional=True,
                             tooltip="Text-to-video width in pixels (used only without start_latent)."),
                io.Int.Input("height", default=608, min=16, max=4096, step=16, optional=True,
                             tooltip="Text-to-video height in pixels (used only without start_latent)."),
                # Last, so workflows saved before it keep their widget values in place.
                io.Float.Input("magcache_threshold", default=0.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="(legacy: use the FramePack TeaCache / MagCache node) MagCache instead of "
                                       "TeaCache: skip steps while the estimated change of the model's residual "
                                       "stays small. 0 = off, 0.1 usual. Needs real_cfg 1 and teacache_threshold 0."),
                io.Combo.Input("resume_write_failure", options=[CONTINUE, STOP], default=CONTINUE, optional=True,
                               tooltip="When the resume folder cannot be written (read-only, full disk): 'continue' "
                                       "the run without saving sections (a cancel then starts over), or 'stop' it "
                                       "with a message naming the folder."),
                VideoOutputSocket.Input("video_output", optional=True,
                                        tooltip="FramePack Video Output: decode every section as it is finished into "
                                                "an MP4 (bounded memory, the growing video shown here, a playable "
                                                "partial video on cancel). Feeds the VIDEO output."),
            ],
            outputs=[io.Latent.Output(tooltip="The whole video's latents, for VAEDecodeTiled."),
                     io.Video.Output(tooltip="The MP4 written section by section (needs video_output), for "
                                             "SaveVideo or PreviewVideo.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo, io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, positive, sampling_mode, length, length_unit, steps, distilled_cfg, real_cfg, cfg_rescale,
                shift, seed, sampler_name, teacache_threshold, start_latent=None, clip_vision_output=None,
                negative=None, schedule=None, sampler=None, end_latent=None, end_clip_vision_output=None,
                interpolate_image_embeddings=False, keyframes=None, prompts=None, prompt_blend_seconds=0.0,
                initial_latents=None, resume_file=AUTO, width=640, height=608,
                magcache_threshold=0.0, resume_write_failure=CONTINUE, video_output=None) -> io.NodeOutput:
        check_video_output_is_fed(video_output, cls.hidden.prompt, cls.hidden.unique_id)
        config = model.model.diffusion_model.config
        schedule = schedule or choose_schedule()  # the mode's released layout, window 9
        window = schedule.latent_window_size
        seconds = length if length_unit == "seconds" else length / FPS
        shift = shift or patched_shift(model)
        settings = GenerationSettings(
            mode=sampling_mode, num_sections=section_count(seconds, window), latent_window_size=window,
            schedule=schedule, steps=steps, distilled_cfg=distilled_cfg, real_cfg=real_cfg,
            cfg_rescale=cfg_rescale, shift=shift or None, sampler=sampler_name, seed=seed,
            teacache_threshold=teacache_threshold, magcache_threshold=magcache_threshold,
            prompt_blend_seconds=prompt_blend_seconds,
            interpolate_image_embeddings=interpolate_image_embeddings)
        warn_on_mode_mismatch(model, sampling_mode)
        if step_cache_choice(model) is not None and (teacache_threshold > 0 or magcache_threshold > 0):
            log.warning("FramePack: the model has a FramePack %s node; the sampler's cache threshold is ignored.",
                        step_cache_choice(model).kind)
        inputs = build_inputs(config, positive, negative, start_latent, clip_vision_output, end_latent,
                              end_clip_vision_output, keyframes, prompts, initial_latents, width, height, real_cfg)
        total_steps = settings.num_sections * settings.steps
        section_sampler = ComfySectionSampler(model, sampler or framepack_sampler(sampler_name), total_steps)
        validate_run(section_sampler, inputs, settings)  # before anything is allocated or written
        run_fp = run_fingerprint(model, inputs, sampler)
        source, target = chosen_path(resume_file, run_fp, settings)
        resume = None if source is None else load_resume(source, settings, run_fp)
        if resume is not None:
            log.info("FramePack: resuming %s at section %d of %d", source, resume.next_section + 1,
                     settings.num_sections)
        writer = streaming = None
        start = resume or initial_state(inputs, settings.plans(history_frames(inputs)), settings)
        if target is not None:
            remove_old_runs(target, *([source] if source else []))
            writer = ResumeWriter(target, settings, run_fp, start, on_failure=resume_write_failure)
        if video_output is not None:
            saving = writer is not None and writer.run_id is not None
            streaming = start_streaming(video_output, settings.plans(history_frames(inputs)), start,
                                        target if saving else None, cls.hidden)
        del start  # generate makes its own video buffer: one buffer of the whole latent video at a time
        # The saved run stays after the video is finished, until the retention policy removes it: a crash in a
        # later node (a VAE decode out of memory) then costs no sampling.
        try:
            video = generate(section_sampler, inputs, settings, on_section=chained(writer, streaming), resume=resume)
        except BaseException:
            if streaming is not None:
                keep_partial(streaming, settings.num_sections)
            raise
        if streaming is None:
            return io.NodeOutput(comfy_latent_in_place(video), None)
        return finished_output(streaming, comfy_latent_in_place(video))
