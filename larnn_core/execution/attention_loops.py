"""The window attention's sums as compiled loops for CPU tensors (numba).

Same contract as attention_ops.py (the CUDA path), for float32/float64 CPU tensors in the
window's layout, [k, dh, nh, B]. Each loop runs over the batch innermost, so the compiler
vectorises it, and walks each key and value once: the torch ops need a product into a temporary
window, then a sum, and for the backward four passes over the window. Measured on a 2-core
CPU (2018 best: 27 heads 3 wide, k 38, batch 256): forward about 0.5 ms against 1.4 ms,
backward about 0.7 ms against 2.1 ms per step and layer. The softmax's exp stays in torch, whose
exp is vectorised (a scalar exp per entry here is slower); its maximum and normalisation run in
the loops, per head, while that head's scores are in cache (forward 0.51 against 0.61 ms with the
softmax in torch ops).

The heads are independent, so with more than one torch thread each loop splits them over as
many threads (loops()); a head's sums run on one thread in a fixed order, so results do not depend
on the thread count. Best shape, this machine: with two threads forward 0.32-0.35 ms and backward
0.44-0.53 ms; one thread runs the loops compiled without the split, which would cost it 2-5%.
"""

from __future__ import annotations

import types

import numba
import numpy as np
import torch


@numba.njit(cache=True, parallel=True)
def _shifted_scores(K, q, scores):
    """scores[j, n, b] = sum_d K[j, d, n, b] q[d, n, b] less its maximum over j, one head at a time
    (its [k, B] slab is still in cache for the maximum and the subtraction)."""
    k, dh, nh, B = K.shape
    tops = np.empty((nh, B), K.dtype)
    for n in numba.prange(nh):
        top = tops[n]
        for j in range(k):
            for b in range(B):
                scores[j, n, b] = K[j, 0, n, b] * q[0, n, b]
            for d in range(1, dh):
                for b in range(B):
                    scores[j, n, b] += K[j, d, n, b] * q[d, n, b]
        for b in range(B):
            top[b] = scores[0, n, b]
        for j in range(1, k):
            for b in range(B):
                top[b] = max(top[b], scores[j, n, b])
        for j in range(k):
            for b in range(B):
                scores[j, n, b] -= top[b]


@numba.njit(cache=True, parallel=True)
def _normalised_sum(V, weights, out):
    """weights[j, n, b] /= sum_j weights[j, n, b] (in place), then
    out[d, n, b] = sum_j weights[j, n, b] V[j, d, n, b], one head at a time."""
    k, dh, nh, B = V.shape
    totals = np.empty((nh, B), V.dtype)
    for n in numba.prange(nh):
        total = totals[n]
        for b in range(B):
            total[b] = weights[0, n, b]
        for j in range(1, k):
            for b in range(B):
                total[b] += weights[j, n, b]
        for b in range(B):
            total[b] = 1 / total[b]
        for j in range(k):
            for b in range(B):
                weights[j, n, b] *= total[b]
        for d in range(dh):
            for b in range(B):
                out[d, n, b] = weights[0, n, b] * V[0, d, n, b]
            for j in range(1, k):
                for b in range(B):
                    out[d, n, b] += weights[j, n, b] * V[j, d, n, b]


@numba.njit(cache=True, parallel=True)
def _backward(K, V, q, weights, g, grad_q, grad_scores, dK, dV):
    """Through out = sum_j softmax_j(K_j . q) V_j for one head at a time: grad_q and grad_scores
    written, dK and dV added to."""
    k, dh, nh, B = K.shape
    totals = np.empty((nh, B), K.dtype)
    for n in numba.prange(nh):
        total = totals[n]  # sum_j weights[j] grad_weights[j], per batch entry
        for j in range(k):  # grad_weights = V_j . g, kept in grad_scores
            for b in range(B):
                grad_scores[j, n, b] = V[j, 0, n, b] * g[0, n, b]
            for d in range(1, dh):
                for b in range(B):
                    grad_scores[j, n, b] += V[j, d, n, b] * g[d, n, b]
        for b in range(B):
            total[b] = 0
        for j in range(k):
            for b in range(B):
                total[b] += weights[j, n, b] * grad_scores[j, n, b]
        for j in range(k):  # through the softmax
            for b in range(B):
                grad_scores[j, n, b] = weights[j, n, b] * (grad_scores[j, n, b] - total[b])
        for d in range(dh):
            for b in range(B):
                grad_q[d, n, b] = 0
            for j in range(k):
                for b in range(B):
                    grad_q[d, n, b] += grad_scores[j, n, b] * K[j, d, n, b]
                    dK[j, d, n, b] += grad_scores[j, n, b] * q[d, n, b]
                    dV[j, d, n, b] += weights[j, n, b] * g[d, n, b]


def _one_thread(loop):
    """The loop compiled without the split: its launch makes one thread 2-3% slower per training
    step. Compiled from a copy of the function under its own name, because numba's on-disk cache
    keys a function's compilations by name and signature, not by the parallel flag."""
    f = loop.py_func
    copy = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "_one_thread")
    copy.__qualname__, copy.__doc__ = f.__qualname__ + "_one_thread", f.__doc__
    return numba.njit(cache=True)(copy)


SPLIT = (_shifted_scores, _normalised_sum, _backward)
ONE_THREAD = tuple(_one_thread(loop) for loop in SPLIT)


def loops() -> tuple:
    """The loops for torch's thread count: with more than one, the heads split over as many
    threads (numba's own default is every core: beside workers started with OMP_NUM_THREADS=1
    that would oversubscribe), given an OpenMP or TBB pool; numba's fallback pool (workqueue) is
    slower on two threads than one thread here."""
    threads = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    if threads > 1:
        numba.set_num_threads(threads)  # starts numba's pool on first use
        if numba.threading_layer() != "workqueue":
            return SPLIT
    return ONE_THREAD


def attend(K: torch.Tensor, V: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K, V [k, dh, nh, B], q [dh, nh, B] -> (out [dh, nh, B], softmax weights [k, nh, B])."""
    shifted_scores, normalised_sum, _ = loops()
    weights = K.new_empty(K.shape[0], *K.shape[2:])
    shifted_scores(K.numpy(), q.numpy(), weights.numpy())
    weights.exp_()  # torch's exp is vectorised; numba's is a scalar call per entry
    out = V.new_empty(V.shape[1:])
    normalised_sum(V.numpy(), weights.numpy(), out.numpy())
    return out, weights


def attend_backward(
    K: torch.Tensor,
    V: torch.Tensor,
    q: torch.Tensor,
    weights: torch.Tensor,
    g: torch.Tensor,
    dK: torch.Tensor,
    dV: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of attend's output g [dh, nh, B] -> (grad_q, grad_scores [k, nh, B]); the keys' and
    values' gradients are added into dK, dV [k, dh, nh, B] (views of the window's buffers)."""
    backward = loops()[2]
    grad_q, grad_scores = torch.empty_like(q), torch.empty_like(weights)
    backward(
        K.numpy(),
        V.numpy(),
        q.numpy(),
        weights.numpy(),
        g.numpy(),
        grad_q.numpy(),
        grad_scores.numpy(),
        dK.numpy(),
        dV.numpy(),
    )
    return grad_q, grad_scores
