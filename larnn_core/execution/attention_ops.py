"""The window attention's sums as torch ops: the path for CUDA (and dtypes other than
float32/float64, or CPU with the loops off), windows [k, dh, nh, B]. Each line is one or two
kernels on a GPU (the softmax and its backward one each), which matters there: a training step
launches every one of them for every time step and layer."""

from __future__ import annotations

import torch


def attend(K: torch.Tensor, V: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K, V [k, dh, nh, B], q [dh, nh, B] -> (out [dh, nh, B], softmax weights [k, nh, B])."""
    weights = torch.softmax((K * q).sum(1), dim=0)  # over the window
    return (V * weights[:, None]).sum(0), weights


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
    grad_weights = (V * g).sum(1)  # [k, nh, B]
    grad_scores = torch.ops.aten._softmax_backward_data(grad_weights, weights, 0, weights.dtype)
    dK.addcmul_(grad_scores[:, None], q)
    dV.addcmul_(weights[:, None], g)
    return (K * grad_scores[:, None]).sum(0), grad_scores
