"""Shared test fixtures."""

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per pytest-xdist worker (and per process a test starts): N workers on N cores, not N x N threads
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_name] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def single_thread():
    """Tiny networks train and run several times faster on one thread than on contended cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
