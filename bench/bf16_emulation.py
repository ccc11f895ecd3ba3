"""Which nodes of a bundled trunk must stay fp32 for bf16 to keep stored units?

Emulates bf16 as OpenVINO's CPU plugin computes it (bf16 storage of weights and
activations, fp32 accumulation) in PyTorch, on any CPU: the weights and the input of each
convolution are rounded to bf16, so are its output and the output of each dense block and
RRDB (the residual stream), except for the modules kept in fp32. The error is the trunk's
residual against fp32, on the card's calibration slices, before data consistency, in
stored units (HU for CT). The plain fp32 skip and sum (``sr_engine.precision.SkipSplit``)
add no error.

    .venv/bin/python bench/bf16_emulation.py --model ct-x2

Never run as a test; the table is quoted in docs/engine.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIRST, BODY = ("conv_first",), ("conv_body",)
HR = ("conv_up1", "conv_hr", "conv_last")
VARIANTS = [  # (label, modules kept in fp32, residual stream in fp32)
    ("none (openvino-bf16)", (), False),
    ("residual sums", (), True),
    ("the three upsampling/output convolutions", HR, False),
    ("first convolution", FIRST, False),
    ("first and long-skip convolutions, upsampling/output convolutions", FIRST + BODY + HR, False),
    ("first and long-skip convolutions, residual sums (openvino-bf16-precise)", FIRST + BODY, True),
]


def main() -> int:
    import torch
    from torch import nn

    from sr_engine.cpu import cpu_model
    from sr_engine.fidelity import calibration_slices
    from sr_engine.intensity import IntensityMap
    from sr_engine.model_card import load_card
    from sr_engine.registry import bundled_model_dir
    from training.fit.generator import load_generator
    from training.fit.warmstart import generator_from_onnx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ct-x2", help="bundled model name")
    ap.add_argument("--slices", type=int, default=3, help="calibration slices to use")
    args = ap.parse_args()
    torch.set_num_threads(1)

    card_path = bundled_model_dir() / f"{args.model}.json"
    card = load_card(card_path)
    with tempfile.TemporaryDirectory() as tmp:
        generator_from_onnx(card_path, Path(tmp) / "generator.pt")
        net, _ = load_generator(Path(tmp) / "generator.pt")
    net.eval()
    inputs, spans = [], []
    for s in calibration_slices(card)[: args.slices]:
        m = IntensityMap.fit(card.intensity, s.meta, s.pixels)
        inputs.append(torch.from_numpy(m.forward(s.pixels).astype(np.float32))[None, None])
        spans.append(
            float(
                m.inverse(np.ones((1, 1), np.float32))[0, 0]
                - m.inverse(np.zeros((1, 1), np.float32))[0, 0]
            )
        )
    weights = {n: p.detach().clone() for n, p in net.named_parameters()}

    def bf(t):
        return t.to(torch.bfloat16).float()

    def residuals(keep: tuple[str, ...], stream_fp32: bool) -> list:
        hooks = []
        for name, mod in net.named_modules():
            if isinstance(mod, nn.Conv2d):
                fp32 = any(name.startswith(k) for k in keep)
                w = weights[name + ".weight"]
                mod.weight.data = w.clone() if fp32 else bf(w)
                if not fp32:
                    hooks.append(mod.register_forward_pre_hook(lambda m, a: (bf(a[0]),)))
                    hooks.append(mod.register_forward_hook(lambda m, a, o: bf(o)))
            elif type(mod).__name__ in ("ResidualDenseBlock", "RRDB") and not stream_fp32:
                hooks.append(mod.register_forward_hook(lambda m, a, o: bf(o)))
        out = []
        with torch.no_grad():
            for x in inputs:
                skip = nn.functional.interpolate(
                    x, scale_factor=2.0, mode="bilinear", align_corners=False
                )
                out.append(net(x) - skip)
        for h in hooks:
            h.remove()
        for name, mod in net.named_modules():
            if isinstance(mod, nn.Conv2d):
                mod.weight.data = weights[name + ".weight"].clone()
        return out

    ref = residuals(("",), True)
    print(
        f"{args.model}: trunk residual vs fp32, emulated bf16, {len(inputs)} calibration slices, "
        f"stored units; CPU {cpu_model()}"
    )
    print("| nodes kept in fp32 | p99.9 | max |")
    print("|---|---|---|")
    for label, keep, stream in VARIANTS:
        out = residuals(keep, stream)
        err = np.concatenate(
            [
                ((o - r).abs() * span).numpy().ravel()
                for o, r, span in zip(out, ref, spans, strict=True)
            ]
        )
        print(f"| {label} | {np.percentile(err, 99.9):.2f} | {err.max():.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
