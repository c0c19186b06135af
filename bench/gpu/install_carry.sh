#!/usr/bin/env bash
# On the GPU machine: install the carried wheels one by one (bench/gpu/carry, made by prepare_carry.sh).
# A wheel that does not fit this machine's Python is reported and skipped, never stopping the benchmark:
# the rows that need it record the missing module.
carry="$(cd "$(dirname "$0")" && pwd)/carry"
for package in $(cat "$carry/requirements.txt"); do
    python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('${package//-/_}'.replace('pyyaml', 'yaml').replace('pillow', 'PIL')) is None)" 2>/dev/null && continue
    python -m pip install -q --no-index --no-deps --find-links "$carry/wheels" "$package" || echo "install_carry: $package not installed" >&2
done
