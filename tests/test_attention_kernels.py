"""The window attention's two implementations (attention_loops' numba loops, attention_ops' torch
ops) against autograd through the plain softmax-attention formula."""

import os
import subprocess
import sys

import numba
import pytest
import torch

from larnn_core.execution import attention_loops, attention_ops


def plain(K, V, q):
    """out[d, n, b] = sum_j softmax_j(sum_d K[j, d, n, b] q[d, n, b]) V[j, d, n, b]"""
    weights = (K * q).sum(1).softmax(0)  # [k, nh, B]
    return (V * weights[:, None]).sum(0), weights


SHAPES = [(5, 3, 4, 64), (5, 3, 2, 7), (3, 8, 1, 5), (1, 2, 3, 4)]  # (k, dh, nh, B)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("implementation", [attention_loops, attention_ops], ids=["loops", "torch-ops"])
def test_attention_forward_and_backward_match_autograd(shape, implementation):
    torch.manual_seed(0)
    k, dh, nh, B = shape
    K, V = torch.randn(k, dh, nh, B, dtype=torch.float64), torch.randn(k, dh, nh, B, dtype=torch.float64)
    q, g = torch.randn(dh, nh, B, dtype=torch.float64), torch.randn(dh, nh, B, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (K, V, q)]
    expected_out, expected_weights = plain(*leaves)
    expected_out.backward(g)

    out, weights = implementation.attend(K, V, q)
    torch.testing.assert_close(out, expected_out.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weights, expected_weights.detach(), rtol=1e-12, atol=1e-12)

    dK, dV = torch.ones_like(K), torch.ones_like(V)  # added to, not overwritten
    grad_q, grad_scores = implementation.attend_backward(K, V, q, weights, g, dK, dV)
    torch.testing.assert_close(grad_q, leaves[2].grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dK - 1, leaves[0].grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dV - 1, leaves[1].grad, rtol=1e-12, atol=1e-12)
    # grad_scores: the gradient reaching each score, which the positional terms' gradients use
    scores = (K * q).sum(1).requires_grad_()
    (V * scores.softmax(0)[:, None]).sum(0).backward(g)
    torch.testing.assert_close(grad_scores, scores.grad, rtol=1e-12, atol=1e-12)


def test_compiled_loops_in_float32():
    torch.manual_seed(0)
    K, V, q = torch.randn(4, 3, 5, 64), torch.randn(4, 3, 5, 64), torch.randn(3, 5, 64)
    out, weights = attention_loops.attend(K, V, q)
    expected_out, expected_weights = plain(K, V, q)
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(weights, expected_weights)


@pytest.fixture
def torch_threads():
    """Restores torch's thread count after a test that changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has one thread on this machine")
def test_compiled_loops_split_heads_over_torch_threads_with_the_same_results(torch_threads):
    torch.manual_seed(0)
    K, V, q, g = torch.randn(6, 3, 9, 32), torch.randn(6, 3, 9, 32), torch.randn(3, 9, 32), torch.randn(3, 9, 32)
    results = {}
    for threads in (1, 2, numba.config.NUMBA_NUM_THREADS + 1):
        torch.set_num_threads(threads)
        if threads == 1:
            assert attention_loops.loops() is attention_loops.ONE_THREAD
        else:
            assert attention_loops.loops() is attention_loops.SPLIT
            assert numba.get_num_threads() == min(threads, numba.config.NUMBA_NUM_THREADS)
        out, weights = attention_loops.attend(K, V, q)
        dK, dV = torch.zeros_like(K), torch.zeros_like(V)
        grads = attention_loops.attend_backward(K, V, q, weights, g, dK, dV)
        results[threads] = (out, weights, *grads, dK, dV)
    for many in list(results)[1:]:  # each head's sums run on one thread, in the same order
        for single, split in zip(results[1], results[many]):
            assert torch.equal(single, split)


def test_numba_fallback_pool_runs_the_loops_on_one_thread():
    """numba's workqueue pool (used where neither OpenMP nor TBB loads) is slower on two threads
    than on one here, so the loops keep to one thread with it."""
    script = (
        "import numba, torch; from larnn_core.execution import attention_loops; "
        "torch.set_num_threads(2); one = attention_loops.loops() is attention_loops.ONE_THREAD; "
        "print(numba.threading_layer(), one)"
    )
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "NUMBA_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["workqueue", "True"]
