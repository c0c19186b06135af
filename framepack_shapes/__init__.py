"""The procedural shapes world: a small trainable stand-in for real video, its demo, trainer and drift
experiments. Not part of the library: nothing in ``framepack_core`` imports it."""
