import random

import numpy as np
import pytest
import torch

from larnn_core.data import HARData
from larnn_core.data.dataset import TEST_SUBJECTS


def synthetic_har(windows_per_subject: int = 12, steps: int = 16, seed: int = 0) -> HARData:
    """A small, learnable HAR-shaped dataset: the class sets the mean of one channel."""
    rng = np.random.default_rng(seed)
    subjects = np.repeat(np.arange(1, 31), windows_per_subject).astype(np.int16)
    y = np.tile(np.arange(6), len(subjects) // 6 + 1)[: len(subjects)].astype(np.int64)
    X = rng.normal(size=(len(y), steps, 9)).astype(np.float32)
    X[np.arange(len(y)), :, y] += 3.0
    split = np.where(np.isin(subjects, TEST_SUBJECTS), "test", "train")
    return HARData(X=X, y=y, subject=subjects, split=split, source="synthetic", origin="tests/conftest.py")


@pytest.fixture
def small_har() -> HARData:
    return synthetic_har()


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    """No test reads or writes the user's data cache."""
    monkeypatch.setenv("LARNN_DATA", str(tmp_path / "larnn-data"))
    return tmp_path / "larnn-data"


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
