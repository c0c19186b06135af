#!/usr/bin/env bash
# Gathers what bench_gpu.py needs on a GPU machine that cannot download anything, into bench/gpu/carry/
# (ignored by git; pass it to the device tool's `carry`, 64 MiB in all):
#   carry/comfyui/           ComfyUI's source (no .git, models, inputs, outputs, user data or custom nodes)
#   carry/wheels/            wheels of diffusers and of the small packages ComfyUI imports that a plain
#                            PyTorch install lacks (pure-Python ones install anywhere)
#   carry/requirements.txt   what to install from those wheels on the device (pip --no-index)
# Usage: bash bench/gpu/prepare_carry.sh [COMFYUI_SOURCE=/work/comfyui]
set -euo pipefail
comfyui=${1:-/work/comfyui}
carry="$(cd "$(dirname "$0")" && pwd)/carry"
python=${PYTHON:-python3}
test -f "$comfyui/comfy/model_management.py" || { echo "$comfyui is not a ComfyUI source folder" >&2; exit 1; }
rm -rf "$carry"
mkdir -p "$carry/comfyui" "$carry/wheels"
tar -C "$comfyui" --exclude=.git --exclude=models --exclude=input --exclude=output --exclude=user \
    --exclude=custom_nodes --exclude=__pycache__ --exclude=tests --exclude=tests-unit -cf - . | tar -C "$carry/comfyui" -xf -
# diffusers and what it imports, then what ComfyUI imports beyond torch and numpy (transformers, scipy, av and
# the torchvision family are too large for the carry limit: where the device lacks them the ComfyUI row records
# the missing module as its skip reason).
packages="diffusers huggingface_hub filelock importlib_metadata zipp regex requests urllib3 idna certifi
  charset_normalizer pillow einops torchsde trampoline safetensors psutil pyyaml"
printf "%s\n" $packages > "$carry/requirements.txt"
# --no-deps: torch, numpy and friends are on the device already; only these small ones travel.
"$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$carry/wheels" $packages
du -sh "$carry" "$carry/comfyui" "$carry/wheels"
size=$(du -sm "$carry" | cut -f1)
if [ "$size" -gt 64 ]; then echo "carry/ is ${size} MiB, over the device tool's 64 MiB: drop wheels the device has" >&2; exit 1; fi
