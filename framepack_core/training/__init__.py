"""Training FramePack transformers: the section objective on the inference packing, LoRA in musubi-tuner's format,
checkpoints that resume exactly, data parallelism with torch.distributed, and cached datasets of real clips.

Never imports ComfyUI or the shapes world; a ``BatchSource`` (``trainer.BatchSource``) supplies the batches.
"""
