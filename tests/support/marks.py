"""Marks the test modules share."""

import pytest
import torch


def cuda(test):
    """A test that needs a CUDA GPU: marked `cuda`, so that benchmarks/gpu_check.py runs them all on one
    (python -m pytest -m cuda), and skipped without one."""
    needs = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
    return pytest.mark.cuda(needs(test))
