"""Fine-tune FramePack on a folder of real clips.

    python -m framepack_core.training cache --clips clips/ --cache cache/ [--resolution 640] [--clip-frames 125]
    python -m framepack_core.training train --cache cache/ --run-dir runs/lora --init-weights FramePackI2V_HY.safetensors \\
        --lora-rank 32 --lora-alpha 32 --base-storage float8_e4m3fn --gradient-checkpointing ...
    torchrun --nproc_per_node 8 -m framepack_core.training train ...   (the same, data-parallel)

Only the stand-in encoders (``data.StandInEncoders``) are built in; the real ones (HunyuanVideo VAE, llava-llama3
and CLIP-L, SigLIP) plug in through ``data.Encoders`` and are not part of this module yet.
"""

from __future__ import annotations

import argparse
import logging

from ..model.checkpoint import open_checkpoint, resolve_config
from ..errors import InputError
from . import cli
from .data import CachedClips, StandInEncoders, cache_dataset

ENCODERS = {"stand-in": StandInEncoders}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m framepack_core.training", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cache = commands.add_parser("cache", help="encode a folder of captioned videos once (resumable)")
    cache.add_argument("--clips", required=True, help="folder of .mp4/.webm videos with same-named caption .txt files")
    cache.add_argument("--cache", required=True, help="folder for the cached safetensors files")
    cache.add_argument("--encoders", default="stand-in", choices=sorted(ENCODERS))
    cache.add_argument("--resolution", type=int, default=640, help="bucket base resolution (FramePack: 640)")
    cache.add_argument("--clip-frames", type=int, default=125, help="pixel frames per cached clip (4 k + 1)")
    train = commands.add_parser("train", help="train on a cache (full or LoRA)")
    train.add_argument("--cache", required=True, help="the folder written by the cache command")
    train.add_argument("--encoders", default="stand-in", choices=sorted(ENCODERS))
    cli.add_arguments(train)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    encoders = ENCODERS[args.encoders]()
    if args.command == "cache":
        cache_dataset(args.clips, args.cache, encoders, resolution=args.resolution, clip_frames=args.clip_frames)
        return
    if not (args.config or args.init_weights):
        raise InputError("give the model: --init-weights (its config is read from the file) or --config.")
    default = resolve_config(open_checkpoint(args.init_weights), None) if args.init_weights else None
    cli.run(args, cli.config_from(args, default), CachedClips(args.cache, encoders.name))


if __name__ == "__main__":
    main()
