"""Changing an RRDBNet's depth for the size frontier: deeper keeps the function exactly,
shallower keeps the first blocks."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def test_deeper_computes_the_same_and_shallower_keeps_the_first_blocks(tmp_path, one_torch_thread):
    from training.archs import build_generator
    from training.fit.generator import load_generator, save_generator
    from training.fit.warmstart import change_depth

    params = {"num_in_ch": 1, "num_out_ch": 1, "scale": 2, "num_feat": 8, "num_block": 3,
              "num_grow_ch": 4, "global_skip": "bilinear"}  # fmt: skip
    torch.manual_seed(1)
    model = build_generator("RRDBNet", **params)
    src = tmp_path / "g.pt"
    save_generator(src, model, {"arch": "RRDBNet", "arch_params": params})
    x = torch.rand(1, 1, 12, 10)
    with torch.no_grad():
        ref = model.eval()(x)
        deeper, info = load_generator(change_depth(src, 5, tmp_path / "deep.pt"))
        assert info["arch_params"]["num_block"] == 5 and len(deeper.body) == 5
        assert torch.allclose(deeper(x), ref, atol=1e-6)
        shallow, _ = load_generator(change_depth(src, 2, tmp_path / "shallow.pt"))
        assert len(shallow.body) == 2
        assert torch.equal(shallow.body[1].rdb3.conv5.weight, model.body[1].rdb3.conv5.weight)
        assert not torch.allclose(shallow(x), ref)
    assert any(p.abs().sum() > 0 for p in deeper.body[4].rdb1.conv1.parameters())
