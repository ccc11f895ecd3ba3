"""Fixtures shared by several test modules."""

import os
import tempfile

import pytest

from tests.node_helpers import start_node

# the engine's cache of measured backend choices: one per test run, not the user's
os.environ.setdefault("SRNODE_CACHE_DIR", tempfile.mkdtemp(prefix="srnode-test-cache-"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one thread is faster than two contended ones on a shared CPU."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def srnode_node():
    """Start ``srnode serve`` (or ``worker``) like tests.node_helpers.start_node; every node
    started through it is stopped after the test."""
    started = []

    def start(log, *args: str, env=None, command: str = "serve"):
        node = start_node(log, *args, env=env, command=command)
        started.append(node)
        return node

    yield start
    for node in started:
        node.close()


def pytest_collection_modifyitems(config, items):
    """Slow tests belong to the integration tier: ``pytest -m "not integration"`` is the
    fast tier (under a minute), the README's test command runs both."""
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.integration)
