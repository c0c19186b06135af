"""Random engine inputs shared by the core tests (seeded, so every test sees the same values)."""

import torch

from framepack_core import GenerationInputs, TextConditioning


def random_prompt(seed: int = 0, length: int = 5, width: int = 32, pooled: int = 16, batch: int = 1) -> TextConditioning:
    g = torch.Generator().manual_seed(seed)
    return TextConditioning(torch.randn(batch, length, width, generator=g),
                            torch.ones(batch, length, dtype=torch.bool), torch.randn(batch, pooled, generator=g))


def random_inputs(seed: int = 0, height: int = 8, width: int = 8, text_len: int = 5, **fields) -> GenerationInputs:
    """A prompt, a start latent (1, 16, 1, height, width) and 6 image-embedding tokens of 24, for the tiny
    test configs; ``fields`` replace or add GenerationInputs fields."""
    g = torch.Generator().manual_seed(seed)
    prompt = TextConditioning(torch.randn(1, text_len, 32, generator=g), torch.ones(1, text_len, dtype=torch.bool),
                              torch.randn(1, 16, generator=g))
    values = dict(start_latent=torch.randn(1, 16, 1, height, width, generator=g), prompts=prompt,
                  image_embeddings=torch.randn(1, 6, 24, generator=g))
    return GenerationInputs(**{**values, **fields})


def noise_sampler(job):
    """A stand-in section sampler: half the section's noise, so long runs take no model time."""
    return job.noise * 0.5
