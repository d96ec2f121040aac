import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Small-tensor tests: one intra-op thread is as fast, and on a busy 2-core machine it
    avoids OpenMP workers spin-waiting for each other (minutes instead of seconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
