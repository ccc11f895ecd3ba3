"""TensorRT engines for GPU hosts: :func:`tensorrt_command` / :func:`build_tensorrt_engine`.

TensorRT cannot be installed on the development machines, so this path is written against
TensorRT 10's documented API and ``trtexec`` flags but has **not been run**.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def tensorrt_command(
    onnx_path: str | Path,
    engine_path: str | Path,
    fp16: bool = True,
    min_hw: int = 16,
    opt_hw: int = 128,
    max_hw: int = 1024,
    max_batch: int = 8,
) -> list[str]:
    """The ``trtexec`` command that builds an engine with a dynamic [N, 1, H, W] profile."""
    cmd = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--minShapes=input:1x1x{min_hw}x{min_hw}",
        f"--optShapes=input:4x1x{opt_hw}x{opt_hw}",
        f"--maxShapes=input:{max_batch}x1x{max_hw}x{max_hw}",
    ]
    if fp16:
        cmd.append("--fp16")
    return cmd


def build_tensorrt_engine(
    onnx_path: str | Path, engine_path: str | Path, fp16: bool = True, **profile: int
) -> Path:
    """Build a TensorRT engine (GPU host with TensorRT 10). UNTESTED here: no TensorRT.

    Uses the Python API when ``tensorrt`` imports, else ``trtexec`` from the PATH.
    """
    engine_path = Path(engine_path)
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        trt = None
    if trt is None:
        if shutil.which("trtexec") is None:
            raise RuntimeError(
                "TensorRT is not installed (neither the tensorrt module nor trtexec); on a GPU "
                "host run: " + " ".join(tensorrt_command(onnx_path, engine_path, fp16, **profile))
            )
        subprocess.run(tensorrt_command(onnx_path, engine_path, fp16, **profile), check=True)
        return engine_path
    mn, op, mx, mb = (
        profile.get("min_hw", 16),
        profile.get("opt_hw", 128),
        profile.get("max_hw", 1024),
        profile.get("max_batch", 8),
    )
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    prof = builder.create_optimization_profile()
    prof.set_shape("input", (1, 1, mn, mn), (4, 1, op, op), (mb, 1, mx, mx))
    config.add_optimization_profile(prof)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError("TensorRT engine build failed")
    engine_path.write_bytes(bytes(blob))
    return engine_path
