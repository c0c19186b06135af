"""Nothing stays pinned after a failure inside a section or a cancel, and the model stays usable.

The runs plan a long video (a ~88 MB latent buffer, allocated up front) at a 48 x 48 latent (tens of MB of
activations per model call), and stop in the second section: anything that kept the loop's frames alive (a
stored traceback, a callback holding the state) would keep the buffer and show in the process RSS, and in
the census of live tensors, which does not depend on how the allocator returns memory to the system.
"""

import ctypes
import gc
import logging
import os

import psutil
import torch

from framepack_core.engine.generate import GenerationSettings, TransformerSectionSampler, generate
from tests.builders import random_inputs

log = logging.getLogger(__name__)

SIZE = 48
LONG = GenerationSettings(mode="inverted_anti_drifting", num_sections=300, latent_window_size=2, steps=2, seed=4)
SHORT = GenerationSettings(mode="inverted_anti_drifting", num_sections=2, latent_window_size=2, steps=2, seed=4)
RSS_TOLERANCE = 0.03
# The C library's symbols (dlopen of the program itself); glibc has malloc_trim, others do not.
LIBC = ctypes.CDLL(None) if os.name == "posix" else None


class Failure(RuntimeError):
    """Stands for an out-of-memory or driver error raised deep inside the model."""


class Cancel(Exception):
    pass


def make_inputs():
    return random_inputs(height=SIZE, width=SIZE)


def fail_inside_the_model(model):
    """Run LONG with the last block raising on its third call (section 1, step 1), activations in flight."""
    calls = []

    def hook(module, args, output):
        calls.append(1)
        if len(calls) == 3:
            raise Failure("simulated out of memory")

    handle = model.single_transformer_blocks[-1].register_forward_hook(hook)
    try:
        generate(TransformerSectionSampler(model), make_inputs(), LONG)
    except Failure:
        pass
    finally:
        handle.remove()


def cancel_after_section_one(model):
    def on_section(plan, latents, state):
        if plan.index == 1:
            raise Cancel

    try:
        generate(TransformerSectionSampler(model), make_inputs(), LONG, on_section=on_section)
    except Cancel:
        pass


def rss_mb() -> float:
    """Process RSS after gc and, on glibc, ``malloc_trim``: without it glibc keeps up to ~5% of freed heap
    pages mapped, varying from run to run, which would hide the few percent the test tolerates."""
    gc.collect()
    if hasattr(LIBC, "malloc_trim"):
        LIBC.malloc_trim(0)
    return psutil.Process().memory_info().rss / 2**20


def live_tensor_mb() -> float:
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.device.type == "cpu":  # type(): no proxy lookups
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values()) / 2**20


def test_failure_and_cancel_release_everything_and_the_model_stays_usable(model):
    fresh = generate(TransformerSectionSampler(model), make_inputs(), SHORT)
    fail_inside_the_model(model)  # warm-up: the allocator's pools and torch's caches reach their working size
    cancel_after_section_one(model)
    rss, tensors = rss_mb(), live_tensor_mb()

    fail_inside_the_model(model)
    after_failure, tensors_after_failure = rss_mb(), live_tensor_mb()
    cancel_after_section_one(model)
    after_cancel, tensors_after_cancel = rss_mb(), live_tensor_mb()

    log.info("RSS before %.1f MB, after a failure %.1f MB, after a cancel %.1f MB; live tensors %.2f / %.2f / "
             "%.2f MB", rss, after_failure, after_cancel, tensors, tensors_after_failure, tensors_after_cancel)
    assert tensors_after_failure == tensors and tensors_after_cancel == tensors
    assert after_failure <= rss * (1 + RSS_TOLERANCE) and after_cancel <= rss * (1 + RSS_TOLERANCE)
    again = generate(TransformerSectionSampler(model), make_inputs(), SHORT)
    torch.testing.assert_close(again, fresh, atol=0, rtol=0)
