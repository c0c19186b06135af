"""The GPU benchmark of the 13B FramePack transformer (``python -m bench.gpu.bench_gpu``)."""
