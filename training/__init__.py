"""Training package (needs the ``train`` extra: torch): data, degradations, architectures,
losses, two-stage ESRGAN training, evaluation and export to ONNX / TensorRT."""
