"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one thread is faster than two contended ones on a shared CPU."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
