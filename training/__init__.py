"""Training package (needs the ``train`` extra: torch), by stage: ``data`` (sources,
preparation, patches, degradations), ``archs``, ``fit`` (two-stage ESRGAN training, losses),
``evaluate`` (held-out split and the unseen benchmark, through sr_engine) and ``export``
(ONNX, model cards, TensorRT); ``cli`` holds ``srnode train``, ``bundled`` the recipes of
the bundled models."""
