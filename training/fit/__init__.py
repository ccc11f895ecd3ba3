"""Fitting a generator: the run's config, loop, iteration steps, losses, checkpoints, log,
and the generator file it writes (warm starts from an ONNX model too)."""
