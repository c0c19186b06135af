"""The FramePack transformer: config, layers and blocks, the packed context, weight loading and LoRA."""
