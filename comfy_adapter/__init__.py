"""ComfyUI glue: the FramePack transformer as a native ComfyUI model, latent and conditioning conversion,
the section sampler on ComfyUI's samplers, resume files and the pack's socket types. ``nodes/`` holds only
node classes built on these."""
