"""Training a FramePack transformer on the procedural shapes world (``world``), with the generic trainer.

``ShapesSource`` is the shapes world's ``BatchSource``: a sample's key is its clip's seed, rendered for the step's
section plan, with the context gathered by the engine's ``context_inputs`` (``framepack_core.training.trainer``
draws the layouts, runs the loop, the checkpoints and the processes). The shipped shapes model was trained from
scratch in two stages (``models/framepack_shapes/TRAINING.md``, with this trainer's predecessor, whose random
stream differed), e.g.

    python -m framepack_shapes.train --run runs/framepack_shapes --steps 13000 --max-minutes 60 \\
        --learning-rate 0.0012 --time-shift 3 --motion-weight 4 \\
        --modes vanilla vanilla anti_drifting inverted_anti_drifting \\
        --export runs/framepack_shapes/framepack_shapes.safetensors

and the LoRA that teaches it the variant world, where objects change colour when they bounce
(``models/framepack_shapes_lora/``):

    python -m framepack_shapes.train --run runs/colour_lora --colour-on-bounce --init-weights \\
        models/framepack_shapes/framepack_shapes.safetensors --lora-rank 8 --lora-alpha 8 --steps 1500 \\
        --batch-size 8 --learning-rate 0.002 --warmup-steps 30 --ema-decay 0.99 --time-shift 3 --motion-weight 4 \\
        --low-noise-fraction 0.25 --sample-every 500 \\
        --export-lora models/framepack_shapes_lora/colour_on_bounce.safetensors

``torchrun --nproc_per_node N -m framepack_shapes.train --run-dir ...`` runs the same command data-parallel (gloo on
CPUs; ``--run-dir`` is ``--run`` under a name torchrun's own parser lets through).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import torch

from . import world
from framepack_core.engine.generate import GenerationInputs, context_inputs
from framepack_core.engine.planning import MODES
from framepack_core.model.config import FramePackConfig
from framepack_core.training import cli
from framepack_core.training.objective import Batch

log = logging.getLogger(__name__)

# The shipped model's size: trains on two CPU cores in well under an hour (about 2.8 M parameters).
SHAPES_CONFIG = FramePackConfig(
    num_attention_heads=4, attention_head_dim=32, rope_axes_dim=(8, 12, 12), num_layers=2, num_single_layers=2,
    num_refiner_layers=1, text_embed_dim=world.TEXT_DIM, pooled_projection_dim=world.TEXT_DIM,
    image_proj_dim=world.IMAGE_TOKEN_DIM, guidance_embeds=False)
SAMPLE_SECTIONS = 6


def make_batch(plan, specs: list, keys: list | None = None) -> Batch:
    """The batch of ``plan`` for the clips ``specs`` (ground-truth clips stand in for generated history)."""
    video = world.encode_frames(torch.stack([world.render_clip(s, plan.total_latent_frames) for s in specs]))
    start = video[:, :, :1]
    # Only the keyframe / end-frame fields are read: neither is used in training.
    context = context_inputs(plan, video, GenerationInputs(start_latent=start, prompts=None, image_embeddings=None))
    text = world.batch_captions([s.caption for s in specs])
    inputs = {**context, **text.model_inputs(), "image_embeddings": world.image_embeddings(start)}
    window = video[:, :, plan.position:plan.position + plan.latent_window_size]
    keys = list(range(len(specs))) if keys is None else keys
    return Batch(plan, inputs, window.contiguous(), video[:, :, plan.position - 1:plan.position].contiguous(), keys)


@dataclasses.dataclass(frozen=True)
class ShapesSource:
    """Training clips of the shapes world (or its colour-on-bounce variant); a sample's key is its clip seed."""

    colour_on_bounce: bool = False

    def make_batch(self, plan, group: int, keys: list) -> Batch:
        return make_batch(plan, [world.sample_clip(key, colour_on_bounce=self.colour_on_bounce) for key in keys], keys)

    def write_samples(self, model, folder: Path, step: int) -> None:
        """A held-out clip continued in every mode, as one GIF per mode (needs Pillow, the demo extra)."""
        from .demo import generate_clip, pillow_images, to_images, write_gif, decoded

        folder.mkdir(parents=True, exist_ok=True)
        spec = world.sample_clip(0, "test", colour_on_bounce=self.colour_on_bounce)
        for mode in MODES:
            video = to_images(decoded(generate_clip(model, spec, mode, SAMPLE_SECTIONS)))
            write_gif(folder / f"step{step:06d}_{mode}.gif", pillow_images(video))


# ------------------------------------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m framepack_shapes.train", description=__doc__.split("\n\n")[0])
    cli.add_arguments(parser)
    parser.add_argument("--colour-on-bounce", action="store_true",
                        help="train on the variant world where objects change colour when they bounce")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    cli.run(args, cli.config_from(args, SHAPES_CONFIG), ShapesSource(args.colour_on_bounce))


if __name__ == "__main__":
    main()
