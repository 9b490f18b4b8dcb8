"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """Tiny networks train and run several times faster on one thread than on contended cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
