import os
import random

import numpy as np
import pytest
import torch
from hypothesis import settings

if not torch.cuda.is_available():
    # Triton's kernels (larnn_core/execution/fused_layer.py) run in its interpreter, on CPU: Triton
    # reads this when it is first imported (importing the model imports it), so it is set here, first
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tests.support.data import synthetic_har  # noqa: E402 (after the environment Triton reads)


def pytest_addoption(parser):
    parser.addoption(
        "--fuzz-cases", type=int, default=None, help="command lines tests/test_fuzz_commands.py tries (and counts)"
    )


@pytest.fixture
def small_har():
    return synthetic_har()


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    """No test reads or writes the user's data cache."""
    monkeypatch.setenv("LARNN_DATA", str(tmp_path / "larnn-data"))
    return tmp_path / "larnn-data"


# Hypothesis draws the same cases on every run (a suite that fails at random hides regressions); run
# `python -m pytest tests/test_fuzz_inputs.py --hypothesis-profile explore` to draw new ones each run
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("deterministic")

TEST_THREADS = 2  # torch's intra-op threads in every test: float rounding follows the thread count


@pytest.fixture(autouse=True)
def deterministic_globals():
    """Each test starts from the same global state whatever ran before it or whatever the machine:
    torch's intra-op thread count (its matrix products and reductions split their sums by thread,
    so float32 rounding, and every trajectory trained from it, depends on it: one machine's default
    of 1 thread gave results that another's 2 did not) and the global generators of random, numpy
    and torch (which earlier tests would otherwise have consumed by an amount that depends on the
    order). Restored afterwards, so a test that changes them leaks nothing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
