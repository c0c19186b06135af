"""Fuzzing the readers of untrusted input: checkpoint headers, resume files and timestamped prompts.

Every case must end in the reader's own error (CheckpointError, ResumeError, InputError) or a correct result:
never another exception, a hang or a crash. Examples are derandomized, so a run is reproducible; the number
of cases per test is ``max_examples``. (The schedule parser's fuzz tests live in test_schedules.py.)
"""

import dataclasses
import json
import logging
import re
import struct
from decimal import Decimal

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save

from framepack_core import CheckpointError, FramePackError, InputError, load_transformer, parse_timestamped_prompts
from framepack_core.model.checkpoint import save_config_metadata, strip_prefix
from framepack_core.engine.conditioning import TextConditioning
from framepack_core.model.config import infer_config
from framepack_core.errors import ResumeError
from framepack_core.engine.generate import GenerationInputs, GenerationSettings, initial_state
from framepack_core.model.transformer import FramePackTransformer
from framepack_core.engine.resume import load_resume, save_resume

log = logging.getLogger(__name__)

FUZZ = dict(derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
DTYPES = ["F32", "F16", "BF16", "F64", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16", "I8", "U8", "BOOL", "f32", "", "X"]
ODD_NUMBERS = [0, 1, -1, 3, 2**31, 2**53 + 1, 2**63, 2**64, 10**30, 1.5, "2", None, [1], True]
BYTE_EDITS = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 2**20),
                                st.integers(0, 255)), min_size=1, max_size=4)


def escapes(strategy, check, max_examples: int) -> dict:
    """Run ``check`` on derandomized cases; return the escaping exceptions, one example case per kind.

    Escapes are collected rather than raised so that one failing run names every kind at once, with an
    example of each (Hypothesis would stop at the first, shrink it, and write a patch file into the repo).
    """
    found, count = {}, [0]

    @settings(max_examples=max_examples, **FUZZ)
    @given(strategy)
    def run(case):
        count[0] += 1
        try:
            check(case)
        except Exception as err:  # noqa: BLE001  (anything but the reader's own error is what we look for)
            where = err.__traceback__
            while where.tb_next is not None:
                where = where.tb_next
            found.setdefault(f"{type(err).__name__} in {where.tb_frame.f_code.co_name}",
                             f"{str(err)[:200]} <- case {repr(case)[:300]}")

    run()
    log.info("%s: %d cases, %d kinds of escape", check.__name__, count[0], len(found))
    for kind, example in found.items():
        log.warning("%s: %s", kind, example)
    return found


def split_file(data: bytes) -> tuple[dict, bytes]:
    """(header JSON, tensor bytes) of a safetensors file."""
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), data[8 + length:]


def join_file(header, body: bytes, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + body


def edit_bytes(data: bytes, edits) -> bytes:
    data = bytearray(data)
    for kind, at, value in edits:
        at %= len(data) + 1
        if kind == "insert":
            data[at:at] = bytes([value])
        elif at < len(data):
            if kind == "flip":
                data[at] ^= 1 << (value % 8)
            else:
                del data[at]
    return bytes(data)


def edit_header(data: bytes, edits) -> bytes:
    length = struct.unpack("<Q", data[:8])[0]
    return join_file(edit_bytes(data[8:8 + length], edits), data[8 + length:])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """One folder for all cases: each overwrites the same file."""
    return tmp_path_factory.mktemp("fuzz")


# ----------------------------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def small_checkpoint(tiny_weights_path) -> dict:
    """The tiny model cut to one block of each kind (~1 MB), with and without a config in its metadata."""
    state = {k: v for k, v in load_file(tiny_weights_path).items() if not re.search(r"blocks\.1\.", k)}
    config = save_config_metadata(infer_config({k: tuple(v.shape) for k, v in state.items()}))
    return {"with_config": save(state, config), "plain": save(state, {"format": "pt"})}


@pytest.fixture(scope="module")
def load_or_refuse(scratch):
    """check(data): loading ``data`` as a checkpoint raises CheckpointError or gives exactly the file's tensors."""
    path = scratch / "fuzzed.safetensors"

    def load_or_refuse(data: bytes):
        path.write_bytes(data)
        try:
            model = load_transformer(path)
        except CheckpointError:
            return
        assert isinstance(model, FramePackTransformer)
        stored = {strip_prefix(k): v for k, v in load_file(path).items()}
        loaded = model.state_dict()
        assert set(loaded) == set(stored)
        for key, tensor in loaded.items():
            assert torch.equal(tensor, stored[key].to(tensor.dtype)), key

    return load_or_refuse


def test_fuzz_checkpoint_header_bytes(small_checkpoint, load_or_refuse):
    """Bytes of the JSON header flipped, inserted or deleted (names, dtypes, shapes, offsets, metadata)."""
    files = st.sampled_from(sorted(small_checkpoint.values()))
    assert not escapes(st.builds(edit_header, files, BYTE_EDITS), load_or_refuse, 150)


def test_fuzz_checkpoint_truncated_or_wrong_header_length(small_checkpoint, load_or_refuse):
    header, body = split_file(small_checkpoint["with_config"])
    lengths = st.one_of(st.none(), st.sampled_from([0, 1, 7, 2**32, 2**63, 2**64 - 1]), st.integers(0, 20_000))
    files = st.builds(lambda length, cut: join_file(header, body, length)[:cut], lengths,
                      st.one_of(st.integers(0, 12_000), st.integers(0, len(body))))
    assert not escapes(files, load_or_refuse, 80)


@st.composite
def field_edits(draw, header: dict):
    """One structural change to a tensor entry or the header itself."""
    header = json.loads(json.dumps(header))
    name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    entry = header[name]
    kind = draw(st.sampled_from(["dtype", "shape value", "offsets", "rename", "drop", "duplicate", "entry type",
                                 "metadata"]))
    if kind == "dtype":
        entry["dtype"] = draw(st.sampled_from(DTYPES))
    elif kind == "shape value" and entry["shape"]:
        entry["shape"][draw(st.integers(0, len(entry["shape"]) - 1))] = draw(st.sampled_from(ODD_NUMBERS))
    elif kind == "offsets":
        entry["data_offsets"] = [draw(st.sampled_from(ODD_NUMBERS + [v + 4, v - 4])) for v in entry["data_offsets"]]
    elif kind == "rename":
        header[draw(st.sampled_from(["model.diffusion_model." + name, name + "x", name.replace("0", "1"), ""]))] = \
            header.pop(name)
    elif kind == "drop":
        del header[name]
    elif kind == "duplicate":
        header["transformer." + name] = entry
    elif kind == "entry type":
        header[name] = draw(st.sampled_from([None, [], "F32", 3, {"dtype": "F32"}]))
    else:
        header["__metadata__"] = draw(st.sampled_from([None, [], {"format": 1}, {"config": "{"}, {"config": "[]"},
                                                       {"config": '{"num_layers": 9}'}, {"config": "null"}]))
    return header


def test_fuzz_checkpoint_header_fields(small_checkpoint, load_or_refuse):
    """Dtypes, shape values, offsets, names and entries changed structurally (the JSON stays valid)."""
    header, body = split_file(small_checkpoint["with_config"])
    assert not escapes(st.builds(join_file, field_edits(header), st.just(body)), load_or_refuse, 120)


def test_fuzz_checkpoint_shape_ranks(small_checkpoint, load_or_refuse):
    """Shapes reshaped to another rank of the same size, in a file whose config is inferred from the shapes."""
    header, body = split_file(small_checkpoint["plain"])
    names = sorted(k for k in header if k != "__metadata__")

    def reshaped(case):
        name, how = case
        changed = json.loads(json.dumps(header))
        shape = changed[name]["shape"]
        changed[name]["shape"] = {"append 1": shape + [1], "prepend 1": [1] + shape,
                                  "flatten": [int(torch.tensor(shape).prod())]}[how]
        load_or_refuse(join_file(changed, body))

    found = escapes(st.tuples(st.sampled_from(names), st.sampled_from(["append 1", "prepend 1", "flatten"])),
                    reshaped, 60)
    assert not found, found


def test_fuzz_checkpoint_config_metadata(small_checkpoint, load_or_refuse):
    """The config stored in the file's metadata given values of the wrong type or range."""
    header, body = split_file(small_checkpoint["with_config"])
    config = json.loads(header["__metadata__"]["config"])

    def config_value(case):
        field, value = case
        changed = json.loads(json.dumps(header))
        changed["__metadata__"]["config"] = json.dumps({**config, field: value})
        load_or_refuse(join_file(changed, body))

    fields = st.sampled_from(["mlp_ratio", "rope_axes_dim", "num_layers", "patch_size", "rope_theta",
                              "guidance_embeds", "attention_head_dim", "text_embed_dim"])
    values = st.sampled_from([0, 1, -1, 3, 1.5, "2", None, [1], True, "a", -4.0, [4, 6], ["4", "6", "6"],
                              [4.5, 6, 6], {}, 2**31, 10**30, 1e300])
    found = escapes(st.tuples(fields, values), config_value, 60)
    assert not found, found


# ----------------------------------------------------------------------------------------------- resume files

RESUME_SETTINGS = GenerationSettings(num_sections=5, latent_window_size=2, steps=2, seed=3)
FINGERPRINT = "ab" * 32


@pytest.fixture(scope="module")
def resume_file(scratch) -> tuple:
    """(bytes, state) of a valid resume file after two sections of an 8 x 8 latent run."""
    g = torch.Generator().manual_seed(0)
    cond = TextConditioning(torch.randn(1, 5, 32, generator=g), torch.ones(1, 5, dtype=torch.bool),
                            torch.randn(1, 16, generator=g))
    inputs = GenerationInputs(torch.randn(1, 16, 1, 8, 8, generator=g), cond, torch.randn(1, 6, 24, generator=g))
    state = initial_state(inputs, RESUME_SETTINGS.plans(), RESUME_SETTINGS)
    state.video.normal_(generator=g)
    state.next_section = 2
    path = scratch / "valid.safetensors"
    save_resume(path, state, RESUME_SETTINGS, FINGERPRINT)
    return path.read_bytes(), state


@pytest.fixture(scope="module")
def resume_or_refuse(scratch, resume_file):
    """check(data): loading ``data`` as a resume file raises ResumeError or gives exactly the saved state."""
    path, original = scratch / "fuzzed.resume.safetensors", resume_file[1]

    def resume_or_refuse(data: bytes):
        path.write_bytes(data)
        try:
            state = load_resume(path, RESUME_SETTINGS, FINGERPRINT)
        except ResumeError:
            return
        assert state.next_section == original.next_section
        assert torch.equal(state.video, original.video)
        assert torch.equal(state.generator_state, original.generator_state)

    return resume_or_refuse


def test_fuzz_resume_header_bytes(resume_file, resume_or_refuse):
    assert not escapes(st.builds(edit_header, st.just(resume_file[0]), BYTE_EDITS), resume_or_refuse, 150)


def test_fuzz_resume_truncated_or_flipped_data(resume_file, resume_or_refuse):
    data = resume_file[0]
    damaged = st.builds(lambda cut, flip: edit_bytes(data, [("flip", flip, 0)] if flip is not None else [])[:cut],
                        st.one_of(st.integers(0, 2_000), st.integers(0, len(data))),
                        st.one_of(st.none(), st.integers(0, len(data) - 1)))
    assert not escapes(damaged, resume_or_refuse, 80)


def test_fuzz_resume_fields(resume_file, resume_or_refuse):
    """Metadata values replaced and tensor entries changed, in a well-formed safetensors file."""
    header, body = split_file(resume_file[0])

    def changed(key, value, tensor):
        out = json.loads(json.dumps(header))
        out["__metadata__"][key] = value
        if tensor == "video dtype":
            out["video"]["dtype"] = "I32"
        elif tensor == "video shape":
            out["video"]["shape"] = [1, 16, 11, 16, 4]
        elif tensor == "generator shape":
            out["generator_state"]["shape"] = [2, out["generator_state"]["shape"][0] // 2]
        elif tensor == "drop":
            del out["generator_state"]
        elif tensor == "extra":
            out["more"] = {"dtype": "U8", "shape": [0], "data_offsets": [len(body), len(body)]}
        return join_file(out, body)

    keys = st.sampled_from(["format", "version", "next_section", "history_frames", "settings", "fingerprint",
                            "checksum", "extra"])
    values = st.one_of(st.sampled_from(["", "1", "0", "-1", "999999999999", "1e3", " 2", "null", "{}", "[]",
                                        "ab" * 32, '{"seed": 3}', "\u00e9"]), st.text(max_size=20))
    tensors = st.sampled_from([None, "video dtype", "video shape", "generator shape", "drop", "extra"])
    assert not escapes(st.builds(changed, keys, values, tensors), resume_or_refuse, 150)


# ----------------------------------------------------------------------------------------------- prompts

PROMPT_ALPHABET = "[]:-s.0123456789 ab\n\t"
VALID_PROMPTS = ["a cat", "[0s: a cat]", "[0s: a cat] [2s-4s: it jumps] [5.5s: it sleeps]", "[0s-1s: a] [1s: b: c]"]


def check_parsed(text: str, entries) -> None:
    """A parse result is well formed, and writing it back and parsing again gives the same entries."""
    if "[" not in text:
        assert [(e.start, e.end, e.text) for e in entries] == [(0.0, None, text.strip())]
        return
    assert entries and entries[0].start == 0
    starts = [e.start for e in entries]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for e in entries:
        assert e.text and e.text == e.text.strip() and "]" not in e.text
        assert e.end is None or e.end > e.start
    exact = lambda seconds: format(Decimal(seconds), "f")  # noqa: E731  (the decimal expansion is exact)
    written = " ".join(f"[{exact(e.start)}s{'' if e.end is None else '-' + exact(e.end) + 's'}: {e.text}]"
                       for e in entries)
    assert parse_timestamped_prompts(written) == entries


def parse_or_refuse(text: str) -> None:
    try:
        entries = parse_timestamped_prompts(text)
    except InputError:
        return
    check_parsed(text, entries)


@settings(max_examples=300, **FUZZ)
@given(st.text(alphabet=PROMPT_ALPHABET, max_size=40))
def test_fuzz_prompt_random_strings(text):
    parse_or_refuse(text)


@settings(max_examples=150, **FUZZ)
@given(text=st.sampled_from(VALID_PROMPTS),
       edits=st.lists(st.tuples(st.sampled_from(["insert", "delete", "flip"]), st.integers(0, 80),
                                st.sampled_from([ord(c) for c in PROMPT_ALPHABET + "\u00e9x"])), max_size=4))
def test_fuzz_prompt_mutated_valid_strings(text, edits):
    chars = list(text)
    for kind, at, value in edits:
        at %= len(chars) + 1
        if kind == "insert":
            chars.insert(at, chr(value))
        elif at < len(chars):
            chars[at:at + 1] = [] if kind == "delete" else [chr(value)]
    parse_or_refuse("".join(chars))


def test_fuzz_prompt_unusual_unicode_and_sizes():
    for text in ["\x00", "[0s:\x00]", "[\u0660s: arabic digit]", "[0s: a]" * 2000, "[" * 5000, "]" * 5000,
                 "[0s: " + "x" * 100_000 + "]", "[99999999999999999999999999s: late] [0s: a]"]:
        parse_or_refuse(text)


# ----------------------------------------------------------------------------------------------- settings and inputs

class Sampled(Exception):
    """Raised by the section sampler: the run got past every check."""


def sample_nothing(job):
    raise Sampled


ODD_VALUES = [float("nan"), float("inf"), -float("inf"), -1, 0, 0.5, 1, 3, 1e9, 2**63, 2**64, True, False, "1", "no",
              None, [1], 1.5]
SETTING_FIELDS = ["num_sections", "latent_window_size", "schedule", "steps", "distilled_cfg", "real_cfg", "cfg_rescale",
                  "shift", "sampler", "seed", "teacache_threshold", "magcache_threshold", "prompt_blend_seconds",
                  "interpolate_image_embeddings", "mode"]


def fuzz_inputs():
    g = torch.Generator().manual_seed(0)
    cond = TextConditioning(torch.randn(1, 5, 32, generator=g), torch.ones(1, 5, dtype=torch.bool),
                            torch.randn(1, 16, generator=g))
    return GenerationInputs(start_latent=torch.randn(1, 16, 1, 8, 8, generator=g), prompts=cond,
                            image_embeddings=torch.randn(1, 6, 24, generator=g))


def run_or_refuse(case) -> None:
    """``case`` is (settings, a function making the inputs): building them may already refuse."""
    from framepack_core.engine.generate import generate

    settings, make_inputs = case
    try:
        generate(sample_nothing, make_inputs(), settings)
    except (FramePackError, Sampled):
        return


def test_fuzz_settings_get_clear_errors():
    """Any value in any setting (up to three at once): refused with the layer's own error, or sampled."""
    base = GenerationSettings(num_sections=2, latent_window_size=2, steps=1)
    changes = st.dictionaries(st.sampled_from(SETTING_FIELDS), st.sampled_from(ODD_VALUES), min_size=1, max_size=3)
    cases = st.builds(lambda c: (dataclasses.replace(base, **c), fuzz_inputs), changes)
    assert not escapes(cases, run_or_refuse, 300)


def test_fuzz_input_shapes_get_clear_errors():
    """Tensors of random shapes for every input: refused with the layer's own error, or sampled."""
    dims = st.lists(st.sampled_from([0, 1, 2, 3, 5, 6, 8, 16, 24, 32]), min_size=1, max_size=5)
    fields = st.sampled_from(["start_latent", "image_embeddings", "end_latent", "end_image_embeddings", "history",
                              "keyframe", "text", "pooled"])
    settings = GenerationSettings(mode="anti_drifting", num_sections=2, latent_window_size=2, steps=1)

    def changed(field, shape):
        inputs, tensor = fuzz_inputs(), torch.zeros(shape)
        if field in ("text", "pooled"):
            return dataclasses.replace(inputs, prompts=dataclasses.replace(inputs.prompts, **{field: tensor}))
        if field == "keyframe":
            return dataclasses.replace(inputs, keyframes={3: tensor})
        return dataclasses.replace(inputs, **{field: tensor})

    cases = st.builds(lambda field, shape: (settings, lambda: changed(field, shape)), fields, dims)
    assert not escapes(cases, run_or_refuse, 300)
