"""One context representation: the engine's CleanGroups, the reference's named inputs through ReferenceArguments,
one kernel-to-projection table, the step-cache choice of a model patch, and the shared time-input rounding."""

import pytest
import torch

from framepack_core import CleanGroup
from framepack_core.engine.generate import GenerationInputs, GenerationSettings, context_inputs, section_step_cache
from framepack_core.engine.planning import plan_sections
from framepack_core.engine.sampling import guidance_input, require_negative, time_inputs
from framepack_core.engine.schedules import PROJECTIONS, Kernel
from framepack_core.engine.step_caches import MagCache, StepCacheChoice, TeaCache
from framepack_core.errors import InputError
from framepack_core.model.config import CLEAN_PROJECTIONS
from framepack_core.model.transformer import ReferenceArguments


def test_one_kernel_to_projection_table():
    assert [p.name for p in CLEAN_PROJECTIONS] == ["proj_4x", "proj_2x", "proj"]  # the reference's order
    assert PROJECTIONS == {4: ("4x", "proj_4x"), 2: ("2x", "proj_2x"), 1: ("1x", "proj")}
    assert (Kernel.k(8).proj, Kernel.k(8).proj_name) == ("4x", "proj_4x")


@pytest.mark.parametrize("mode", ["inverted_anti_drifting", "vanilla", "anti_drifting"])
def test_released_layouts_become_one_group_per_projection_in_the_reference_order(mode):
    plan = plan_sections(mode, 3, 9)[1]
    video = torch.arange(plan.total_latent_frames, dtype=torch.float32).reshape(1, 1, -1, 1, 1).expand(1, 16, -1, 2, 2)
    start = video[:, :, :1].contiguous()
    groups = context_inputs(plan, video.contiguous(), GenerationInputs(start, None, None))["clean_groups"]
    assert [g.proj for g in groups] == ["proj_4x", "proj_2x", "proj"]
    for group, projection in zip(groups, CLEAN_PROJECTIONS):
        members = [g for g in plan.groups if g.proj == projection.label]
        assert group.indices.tolist() == [[i for g in members for i in g.indices]]
        frames = [f if f is not None else 0 for g in members for f in g.sources]  # unknown frames are zeros
        assert group.latents[0, 0, :, 0, 0].tolist() == frames


def test_named_inputs_and_clean_groups_give_the_same_output(model, args):
    named = ReferenceArguments(model)
    groups = named.pack_image_tokens(args["hidden_states"], args["latent_indices"],
                                     **{k: v for k, v in args.items() if k.startswith("clean_")})
    plain = {k: v for k, v in args.items() if not k.startswith("clean_")}
    clean = [(p.name, args[p.latents_arg], args[p.indices_arg]) for p in CLEAN_PROJECTIONS]
    with torch.no_grad():
        direct = model(**plain, clean_groups=[CleanGroup(*c) for c in clean])
        through_adapter = named(**args)
    assert torch.equal(direct, through_adapter)
    assert groups.tokens.shape[1] > args["hidden_states"][0, 0].numel() // 4  # the clean tokens are packed too


def test_a_model_patch_choice_takes_precedence_over_the_settings():
    settings = GenerationSettings(steps=6, teacache_threshold=0.2)
    assert isinstance(section_step_cache(settings), TeaCache)
    chosen = section_step_cache(settings, StepCacheChoice("magcache", 0.3))
    assert isinstance(chosen, MagCache) and chosen.threshold == 0.3 and chosen.steps == 6
    assert section_step_cache(GenerationSettings(steps=6)) is None
    assert section_step_cache(GenerationSettings(real_cfg=2.0), StepCacheChoice("teacache", 0.1)) is None


@pytest.mark.parametrize("kind, threshold, message", [("easycache", 0.1, "unknown step cache 'easycache'"),
                                                      ("teacache", float("nan"), "must be a finite number >= 0.*got nan"),
                                                      ("magcache", -1.0, "got -1.0")])
def test_bad_step_cache_choices_are_refused(kind, threshold, message):
    with pytest.raises(ValueError, match=message):
        StepCacheChoice(kind, threshold)


def test_time_inputs_round_to_the_compute_dtype_as_the_reference():
    timestep, guidance = time_inputs(torch.tensor([830.3033709526062]), guidance_input(10.0), torch.bfloat16)
    assert guidance.item() == 9984.0 and timestep.item() == torch.tensor(830.3033709526062).bfloat16().item()
    assert time_inputs(torch.tensor([1.5]), None, torch.float32)[1] is None
    assert guidance_input(6.5, 3).tolist() == [6500.0] * 3


def test_real_cfg_needs_a_negative_with_the_callers_advice():
    require_negative(1.0, None)
    with pytest.raises(InputError, match="real_cfg is 2.0, which needs negative conditioning; connect one"):
        require_negative(2.0, None, "connect one")
