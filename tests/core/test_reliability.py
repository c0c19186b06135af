"""Reliability: adversarial cases, one test (or parametrised case) each, by class.

1 silent wrong results, 2 obscure errors, 3 super-linear parsers, 4 paths outside the model folders, 6 resource
bounds, 7 miswiring. (Classes 0 and 5, resume files and a read-only disk, belong to the resume tests.) Every
case must end in a clear error naming the input, its value and what to do, or in a correct result; none may
return a silently wrong one, raise from deep inside torch, or hang.
"""

import dataclasses
import json
import math
import os
import time

import pytest
import torch
from safetensors.torch import save_file

from bench.parser_scaling import PARSERS, seconds_per_call
from framepack_core import CheckpointError, FramePackConfig, InputError, load_transformer, parse_timestamped_prompts
from framepack_core.model.checkpoint import INDEX_NAME
from framepack_core.errors import NumericalError
from framepack_core.engine.generate import GenerationSettings, TransformerSectionSampler, generate
from framepack_core.model.lora import convert_lora, read_lora
from framepack_core.engine.planning import PlanError, plan_sections
from framepack_core.engine.schedules import MAX_SCHEDULE_CHARS, MAX_SCHEDULE_GROUPS, ScheduleError, parse_schedule
from framepack_core.engine import validation
from framepack_core.engine.validation import check_image_embeddings, keyframes_by_frame
from framepack_core.numerics import finite
from tests.builders import random_inputs, random_prompt

H = W = 8
QUICK = GenerationSettings(num_sections=2, latent_window_size=2, steps=1)
NAN, INF = float("nan"), float("inf")


def make_inputs(**changes):
    return random_inputs(height=H, width=W, **changes)


def latent(batch=1, frames=1, value=0.0):
    return torch.full((batch, 16, frames, H, W), value)


def no_sampling(job):
    raise AssertionError("the input should have been refused before sampling")


def refused(error, fragments, inputs=None, settings=QUICK, sampler=no_sampling):
    with pytest.raises(error) as info:
        generate(sampler, inputs or make_inputs(), settings)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    return str(info.value)


@pytest.fixture(scope="module")
def tiny_state(tiny_weights_path):
    from safetensors.torch import load_file

    return load_file(tiny_weights_path)


# ============================================================================ 1. silent wrong results

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_weights_with_nan_or_inf_are_refused_naming_the_tensor(tmp_path, tiny_state, dtype, bad):
    state = {k: v.to(dtype, copy=True) if k != "proj_out.weight" else v for k, v in tiny_state.items()}
    state["transformer_blocks.1.attn.to_k.weight"][3, 5] = bad
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(NumericalError) as info:
        load_transformer(tmp_path / "bad.safetensors")
    assert "transformer_blocks.1.attn.to_k.weight" in str(info.value) and "download it again" in str(info.value)


@pytest.mark.parametrize("dtype, pattern", [(torch.float8_e4m3fn, 0x7F), (torch.float8_e5m2, 0x7C),
                                            (torch.float8_e5m2, 0xFE)])
def test_fp8_weights_with_nan_or_inf_are_refused(tmp_path, tiny_state, dtype, pattern):
    state = dict(tiny_state)
    weight = tiny_state["single_transformer_blocks.0.proj_mlp.weight"].to(dtype)
    weight.view(torch.uint8)[0, 1] = pattern
    state["single_transformer_blocks.0.proj_mlp.weight"] = weight
    save_file(state, str(tmp_path / "fp8.safetensors"))
    with pytest.raises(NumericalError, match="single_transformer_blocks.0.proj_mlp.weight"):
        load_transformer(tmp_path / "fp8.safetensors")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float8_e5m2])
def test_weights_that_overflow_the_requested_dtype_are_refused(tmp_path, tiny_state, dtype):
    state = dict(tiny_state)
    state["transformer_blocks.0.ff.net.2.weight"] = tiny_state["transformer_blocks.0.ff.net.2.weight"].clone()
    state["transformer_blocks.0.ff.net.2.weight"][0, 0] = 1e6
    save_file(state, str(tmp_path / "big.safetensors"))
    with pytest.raises(NumericalError, match="transformer_blocks.0.ff.net.2.weight overflows when converted"):
        load_transformer(tmp_path / "big.safetensors", dtype=dtype)
    assert load_transformer(tmp_path / "big.safetensors").transformer_blocks[0].ff.net[2].weight[0, 0] == 1e6


def test_finite_weights_of_every_dtype_pass(tiny_state):
    weight = tiny_state["transformer_blocks.0.attn.to_q.weight"]
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.float8_e4m3fn, torch.float8_e5m2):
        assert finite(weight.to(dtype))
    assert finite(torch.full((4,), 3e38)) and finite(torch.zeros(0)) and not finite(torch.tensor([3e38, NAN]))


@pytest.fixture(scope="module")
def shapes(tiny_state):
    return {k: tuple(v.shape) for k, v in tiny_state.items()}


def pair(layer, out_dim, in_dim, rank=4, up="lora_up.weight", down="lora_down.weight"):
    g = torch.Generator().manual_seed(out_dim * 7 + in_dim)
    return {f"{layer}.{up}": torch.randn(out_dim, rank, generator=g),
            f"{layer}.{down}": torch.randn(rank, in_dim, generator=g)}


def test_lora_that_fits_nowhere_by_shape_is_refused(shapes):
    lora = {**pair("lora_unet_transformer_blocks_0_attn_to_q", 64, 64),
            **pair("lora_unet_transformer_blocks_0_attn_to_k", 48, 32)}
    with pytest.raises(InputError) as info:
        convert_lora(lora, shapes)
    text = str(info.value)
    assert "0 of 2 layers applied" in text and "do not fit the model's shapes" in text and "another size" in text


def test_lora_report_lists_applied_misfit_and_unmatched_layers(shapes):
    lora = {**pair("lora_unet_transformer_blocks_0_attn_to_q", 32, 32),
            **pair("lora_unet_transformer_blocks_0_attn_to_k", 32, 40),
            **pair("lora_unet_input_blocks_0_proj", 8, 8)}
    report = convert_lora(lora, shapes)["report"]
    assert report.applied == ["lora_unet_transformer_blocks_0_attn_to_q"]
    assert list(report.misfit) == ["lora_unet_transformer_blocks_0_attn_to_k"]
    assert "40 columns" in report.misfit["lora_unet_transformer_blocks_0_attn_to_k"]
    assert report.unmatched == ["lora_unet_input_blocks_0_proj"]
    assert "1 of 3 layers applied" in report.summary("x.safetensors")


def test_lora_with_mismatched_ranks_does_not_fit(shapes):
    lora = pair("lora_unet_transformer_blocks_0_attn_to_q", 32, 32)
    lora["lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight"] = torch.randn(3, 32)
    with pytest.raises(InputError, match="different ranks"):
        convert_lora(lora, shapes)


@pytest.mark.parametrize("bad", [NAN, INF])
def test_lora_with_nan_weights_is_refused_at_apply(shapes, bad):
    lora = pair("lora_unet_transformer_blocks_0_attn_to_q", 32, 32)
    lora["lora_unet_transformer_blocks_0_attn_to_q.lora_up.weight"][0, 0] = bad
    with pytest.raises(InputError, match="NaN or infinite"):
        convert_lora(lora, shapes)


@pytest.mark.parametrize("name, inputs, fragment", [
    ("start latent batch 2", lambda: make_inputs(start_latent=latent(batch=2)), "(2, 16, 1, 8, 8)"),
    ("end latent batch 3", lambda: make_inputs(end_latent=latent(batch=3)), "batch of 3"),
    ("keyframe batch 2", lambda: make_inputs(keyframes={4: latent(batch=2)}), "batch of 2"),
    ("text batch 2", lambda: make_inputs(prompts=random_prompt(batch=2)), "batch of 2 prompts"),
    ("negative batch 2", lambda: make_inputs(negative=random_prompt(batch=2)), "batch of 2 prompts"),
    ("image embeddings batch 2", lambda: make_inputs(image_embeddings=torch.zeros(2, 6, 24)), "batch of 2"),
])
def test_batches_are_refused_not_silently_cut(name, inputs, fragment):
    refused(InputError, [fragment], inputs())


def test_history_batch_2_is_refused():
    refused(InputError, ["history", "batch of 2"], make_inputs(history=latent(batch=2, frames=3)),
            dataclasses.replace(QUICK, mode="vanilla"))


@pytest.mark.parametrize("field, value, fragment", [
    ("distilled_cfg", NAN, "distilled_cfg must be a finite number"),
    ("distilled_cfg", INF, "distilled_cfg must be a finite number"),
    ("real_cfg", NAN, "real_cfg must be a finite number"),
    ("cfg_rescale", 5.0, "cfg_rescale must be a finite number from 0 to 1, got 5.0"),
    ("cfg_rescale", NAN, "cfg_rescale"),
    ("prompt_blend_seconds", -1.0, "prompt_blend_seconds must be a finite number from 0"),
    ("teacache_threshold", 1e9, "teacache_threshold must be >= 0 and at most 1"),
    ("magcache_threshold", INF, "magcache_threshold must be >= 0 and at most 1"),
    ("num_sections", True, "num_sections must be an integer"),
    ("num_sections", 2.0, "num_sections must be an integer"),
    ("interpolate_image_embeddings", "no", "interpolate_image_embeddings must be True or False, got 'no'"),
    ("interpolate_image_embeddings", 0, "interpolate_image_embeddings must be True or False"),
    ("shift", NAN, "shift must be a finite number"),
    ("shift", 0.0, "shift must be a finite number"),
    ("steps", True, "steps must be an integer"),
    ("latent_window_size", True, "latent_window_size must be an integer"),
    ("schedule", 5, "schedule must be None, a name"),
])
def test_bad_settings_through_the_python_api(field, value, fragment):
    refused(InputError, [fragment, repr(value)], settings=dataclasses.replace(QUICK, **{field: value}))


@pytest.mark.parametrize("times, frame", [((1.0, 1.03), 8), ((0.45, 0.5), 4), ((0.0, 0.01), 1)])
def test_keyframes_on_one_latent_frame_name_both_times(times, frame):
    with pytest.raises(InputError) as info:
        keyframes_by_frame([(t, latent()) for t in times])
    text = str(info.value)
    assert f"{times[0]:g} s and {times[1]:g} s" in text and f"latent frame {frame}" in text


def test_keyframes_in_one_section_are_refused():
    """0.3 s and 0.9 s are latent frames 3 and 8: one section of 9 frames, one target slot."""
    frames = keyframes_by_frame([(0.3, latent()), (0.9, latent())])
    assert sorted(frames) == [3, 8]
    refused(InputError, ["latent frames 3 (0.30 s) and 8 (0.97 s)", "one section (frames 2..10)"],
            make_inputs(keyframes=frames), GenerationSettings(num_sections=2, steps=1))


def test_keyframe_in_the_end_frames_section_is_refused():
    refused(InputError, ["keyframe at latent frame 4", "end frame"],
            make_inputs(keyframes={4: latent()}, end_latent=latent()), QUICK)


@pytest.mark.parametrize("frame", [1])
def test_keyframe_no_section_can_reach_is_refused(frame):
    refused(InputError, [f"keyframe at latent frame {frame}", "would be ignored"], make_inputs(keyframes={frame: latent()}))


def test_keyframes_one_section_apart_are_accepted():
    assert sorted(keyframes_by_frame([(0.3, latent()), (1.3, latent())])) == [3, 10]


def test_nan_model_output_stops_the_run_naming_the_section():
    finished = []

    def nan_second_section(job):
        value = NAN if job.plan.index == 1 else 0.0
        return torch.full((1, 16, job.plan.latent_window_size, H, W), value)

    with pytest.raises(NumericalError) as info:
        generate(nan_second_section, make_inputs(), QUICK, on_section=lambda plan, *_: finished.append(plan.index))
    assert "section 2 of 2" in str(info.value) and finished == [0]


def test_section_output_check_passes_finite_output(model):
    video = generate(TransformerSectionSampler(model), make_inputs(), QUICK)
    assert video.isfinite().all()


# ============================================================================ 2. obscure errors -> clear ones

@pytest.mark.parametrize("inputs, fragment", [
    (lambda: make_inputs(prompts=random_prompt(width=40)), "text states are 40 wide but this FramePack model takes 32"),
    (lambda: make_inputs(prompts=random_prompt(pooled=20)), "pooled vector are 20 wide but this FramePack model takes 16"),
    (lambda: make_inputs(negative=random_prompt(width=40)), "the negative prompt is 40 / 16 wide"),
    (lambda: make_inputs(image_embeddings=torch.zeros(1, 6, 30)), "30 channels wide"),
    (lambda: make_inputs(image_embeddings=torch.zeros(6, 24)), "(1, tokens, width), got (6, 24)"),
    (lambda: make_inputs(end_image_embeddings=torch.zeros(1, 6, 30)), "end_image_embeddings has shape"),
])
def test_wrong_widths_against_the_model_config(model, inputs, fragment):
    refused(InputError, [fragment], inputs(), sampler=TransformerSectionSampler(model))


def test_prompts_of_different_widths_with_blending():
    refused(InputError, ["40 / 16 wide", "the same text encoder"],
            make_inputs(prompts=[(0.0, None, random_prompt()), (0.2, None, random_prompt(width=40))]),
            dataclasses.replace(QUICK, prompt_blend_seconds=0.5))


@pytest.mark.parametrize("frames", [2, 3])
def test_keyframe_and_end_latents_of_several_frames(frames):
    refused(InputError, [f"has {frames} latent frames", "single image"], make_inputs(keyframes={3: latent(frames=frames)}))
    refused(InputError, [f"has {frames} latent frames"], make_inputs(end_latent=latent(frames=frames)))


@pytest.mark.parametrize("seed", [1.5, "7", 2**64, -1, None, True])
def test_bad_seeds_in_the_python_api(seed):
    refused(InputError, ["seed must be an integer from 0 to 18446744073709551615", repr(seed)],
            settings=dataclasses.replace(QUICK, seed=seed))


@pytest.mark.parametrize("seed", [2**63, 2**64 - 1])
def test_large_seeds_work(seed):
    video = generate(lambda job: torch.zeros(1, 16, 2, H, W) + job.noise.mean(), make_inputs(),
                     dataclasses.replace(QUICK, seed=seed))
    assert video.isfinite().all()


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\xff" * 8 + b"{}", None])
def test_garbage_or_truncated_lora_file(tmp_path, content):
    path = tmp_path / "lora.safetensors"
    if content is None:  # a real LoRA cut in half
        save_file(pair("lora_unet_transformer_blocks_0_attn_to_q", 32, 32), str(path))
        content = path.read_bytes()[:len(path.read_bytes()) // 2]
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a readable safetensors file.*download it again"):
        read_lora(path)


def test_pickle_lora_is_refused(tmp_path):
    (tmp_path / "lora.pt").write_bytes(b"x")
    with pytest.raises(InputError, match="pickle"):
        read_lora(tmp_path / "lora.pt")


def deep_json(depth):
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("name", ["config.json", INDEX_NAME])
def test_json_nested_100000_levels(tmp_path, tiny_state, name):
    folder = tmp_path / "model"
    folder.mkdir()
    save_file(tiny_state, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / name).write_text(deep_json(100_000))
    with pytest.raises(CheckpointError, match="damaged"):
        load_transformer(folder)


def test_deep_config_in_file_metadata(tmp_path, tiny_state):
    save_file(tiny_state, str(tmp_path / "m.safetensors"), metadata={"config": deep_json(100_000)})
    with pytest.raises(CheckpointError, match="nested too deeply"):
        load_transformer(tmp_path / "m.safetensors")


# ============================================================================ 3. parsers in linear time

def growth(function, make, n):
    """t(4n) / t(n); a linear parser gives about 4, a quadratic one 16, a cubic one 64. Three tries, the best."""
    ratios = []
    for _ in range(3):
        ratios.append(seconds_per_call(function, make(4 * n), 0.02) / seconds_per_call(function, make(n), 0.02))
        if ratios[-1] < 8:
            break
    return min(ratios)


@pytest.mark.parametrize("parser, pattern", [(parser, pattern) for parser, (_, patterns, _) in PARSERS.items()
                                             for pattern in patterns])
def test_parsers_scale_linearly(parser, pattern):
    """The fuzz-found patterns of bench.parser_scaling (which measures the exponents) at a quarter of the bound."""
    function, patterns, bound = PARSERS[parser]
    assert growth(function, patterns[pattern], bound // 4) < 8


@pytest.mark.parametrize("text", ["f1k1_" * 300 + "g9", "x" * (MAX_SCHEDULE_CHARS + 1), "f1k1" * 1000 + "_g9"])
def test_schedules_beyond_the_bounds_are_refused(text):
    with pytest.raises(ScheduleError, match=f"more than the ({MAX_SCHEDULE_GROUPS}|{MAX_SCHEDULE_CHARS}) accepted"):
        parse_schedule(text)


def test_prompt_text_beyond_the_bound_is_refused():
    with pytest.raises(InputError, match="more than the 10000"):
        parse_timestamped_prompts("[" * 10_001)


@pytest.mark.parametrize("text, fragment", [
    ("[" * 5000, "is never closed"),
    ("[0s:" * 2000, "is never closed"),
    ("[0s: a] [-1s: b]", "bad time"),
    ("[0s: a] [1s b]", "has no ':'"),
    ("[0s: a] ]", "cannot read"),
    ("[[0s: a]", "bad time"),
])
def test_fuzz_found_prompt_patterns_get_clear_errors(text, fragment):
    with pytest.raises(InputError) as info:
        parse_timestamped_prompts(text)
    assert fragment in str(info.value) and len(str(info.value)) < 400


def test_prompts_may_hold_colons_and_open_brackets():
    entries = parse_timestamped_prompts("[0s: a: b] [1.5s-2s: c [d]")
    assert [(e.start, e.end, e.text) for e in entries] == [(0.0, None, "a: b"), (1.5, 2.0, "c [d")]


# ============================================================================ 4. paths outside the model folders

def sharded_folder(tmp_path, tiny_state, outside_name):
    """A diffusers folder whose index sends one shard's tensors to ``outside_name``."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({}))
    keys = sorted(tiny_state)
    save_file({k: tiny_state[k] for k in keys[1:]}, str(folder / "inside.safetensors"))
    save_file({keys[0]: tiny_state[keys[0]]}, str(tmp_path / "outside.safetensors"))
    weight_map = {k: "inside.safetensors" for k in keys[1:]}
    weight_map[keys[0]] = outside_name(tmp_path)
    (folder / INDEX_NAME).write_text(json.dumps({"weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("outside_name", [lambda root: "../outside.safetensors",
                                          lambda root: str(root / "outside.safetensors"),
                                          lambda root: "sub/../../outside.safetensors"],
                         ids=["dotdot", "absolute", "nested dotdot"])
def test_index_shards_outside_the_folder_are_refused(tmp_path, tiny_state, outside_name):
    with pytest.raises(CheckpointError, match="outside the model folder"):
        load_transformer(sharded_folder(tmp_path, tiny_state, outside_name))


def test_index_shard_symlink_leading_outside_is_refused(tmp_path, tiny_state):
    folder = sharded_folder(tmp_path, tiny_state, lambda root: "link.safetensors")
    (folder / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")
    with pytest.raises(CheckpointError, match="outside the model folder"):
        load_transformer(folder)


@pytest.mark.parametrize("name", [None, 3, ""])
def test_index_shard_names_that_are_not_names(tmp_path, tiny_state, name):
    folder = sharded_folder(tmp_path, tiny_state, lambda root: name)
    with pytest.raises(CheckpointError, match="not a file name"):
        load_transformer(folder)


def fifo(path):
    os.mkfifo(path)
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
@pytest.mark.parametrize("where", ["single file", "folder weights", "shard", "config.json"])
def test_fifo_named_like_a_checkpoint_is_refused_at_once(tmp_path, tiny_state, where):
    if where == "single file":
        target = fifo(tmp_path / "model.safetensors")
    else:
        target = tmp_path / "model"
        target.mkdir()
        (target / "config.json").write_text("{}")
        if where == "folder weights":
            fifo(target / "diffusion_pytorch_model.safetensors")
        elif where == "shard":
            fifo(target / "a.safetensors")
            (target / INDEX_NAME).write_text(json.dumps({"weight_map": {k: "a.safetensors" for k in tiny_state}}))
        else:
            (target / "config.json").unlink()
            fifo(target / "config.json")
            save_file(tiny_state, str(target / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_transformer(target)  # a read of the FIFO would block this test forever


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_lora_is_refused_at_once(tmp_path):
    with pytest.raises(InputError, match="not a regular file"):
        read_lora(fifo(tmp_path / "lora.safetensors"))


# ============================================================================ 6. resource bounds

def test_text_to_video_4096_for_an_hour_is_refused_at_once(monkeypatch):
    monkeypatch.setattr(validation, "physical_memory", lambda: 64 * 2**30)
    settings = GenerationSettings(mode="vanilla", num_sections=2700, steps=1)
    inputs = make_inputs(start_latent=torch.zeros(1, 16, 1, 512, 512), keyframes={})
    start = time.perf_counter()
    message = refused(InputError, ["379.7 GiB", "24301 latent frames", "4096x4096 px", "shorter or smaller"],
                      inputs, settings)
    assert "decoding" in message and time.perf_counter() - start < 60  # planned and refused, nothing allocated


@pytest.mark.parametrize("schedule", ["f1k512_g9", "f1k256_g9", "f16k1h1024w1024_g9"])
def test_huge_kernels_are_refused_with_their_cost(model, schedule):
    settings = GenerationSettings(mode="vanilla", num_sections=1, schedule=schedule, steps=1)
    refused(InputError, ["RoPE table of about", "GiB", "padded to the kernel's multiples", "smaller kernels"],
            make_inputs(), settings, TransformerSectionSampler(model))


def test_ordinary_kernels_pass_the_cost_check(model):
    settings = GenerationSettings(mode="vanilla", num_sections=1, schedule="f1k1_td_f2k8f16k4f2k2f1k1_g2", steps=1)
    assert generate(TransformerSectionSampler(model), make_inputs(), settings).isfinite().all()


def test_27000_sections_with_a_long_custom_schedule_are_refused_before_planning():
    schedule = "f1k1_td_" + "f1k1" * 200 + "_g1"
    start = time.perf_counter()
    with pytest.raises(PlanError) as info:
        plan_sections("vanilla", 27000, 1, schedule)
    assert "27000 sections" in str(info.value) and "GiB" in str(info.value)
    assert time.perf_counter() - start < 10


def test_growing_tails_on_a_long_video_are_refused():
    with pytest.raises(PlanError, match="tails hold every earlier frame"):
        plan_sections("vanilla", 2700, 9, "f1k1_ta_f16k4f2k2f1k1_g9")


@pytest.mark.parametrize("tokens", [4097, 30_000])
def test_too_many_text_tokens_are_refused_with_their_cost(tokens):
    message = refused(InputError, [f"{tokens} text tokens", "GiB per head", "Shorten the prompt"],
                      make_inputs(prompts=random_prompt(length=tokens)))
    assert f"{tokens ** 2 * 4 / 2**30:.1f} GiB" in message


def test_very_long_sections_are_warned_about(caplog):
    inputs = make_inputs(start_latent=torch.zeros(1, 16, 1, 256, 256), keyframes={})

    def stop(job):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(stop, inputs, GenerationSettings(mode="vanilla", num_sections=1, steps=1))
    assert "image tokens" in caplog.text


# ============================================================================ 7. miswiring that can be checked

REAL = FramePackConfig()


@pytest.mark.parametrize("tokens", [256, 196, 730])
def test_a_siglip_of_another_size_is_refused(tokens):
    with pytest.raises(InputError, match=f"has {tokens} image tokens.*729"):
        check_image_embeddings("clip_vision_output", torch.zeros(1, tokens, 1152), REAL)


@pytest.mark.parametrize("width", [768, 1024])
def test_a_siglip_of_another_width_is_refused(width):
    with pytest.raises(InputError, match=f"{width} channels wide.*1152"):
        check_image_embeddings("clip_vision_output", torch.zeros(1, 729, width), REAL)


def test_framepacks_siglip_passes():
    check_image_embeddings("clip_vision_output", torch.zeros(1, 729, 1152), REAL)
    assert math.isclose(validation.SIGLIP_TOKENS, 27 * 27)
