"""The straightforward LARNN: the equations of model.py computed one by one, re-projecting every
cell of the window at every step. Slow on purpose; it is the test oracle of the fast path in
model.py, using the same parameters (it runs a model.LARNN's cells).

Normalisation of keys and values is per entry: a window entry is normalised as when it entered
(with batch norm in training, the batch statistics of that entry; in evaluation, the running
statistics of the step that made it), so re-projecting it gives the value the fast path cached.
Running statistics are updated once per entry, by the newest one.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from larnn_core.model import LARNN, LARNNCell, StepBatchNorm


def _normalise_window(norm: nn.Module, X: torch.Tensor, newest: int, newest_is_a_cell: bool) -> torch.Tensor:
    """Norm of each window entry X [B, k, H] as when it entered: entry j is the cell made at step
    newest - (k - 1) + j (with batch norm in training, its batch statistics; in evaluation, that
    step's running statistics). Running statistics are updated by the newest entry alone."""
    B, k, H = X.shape
    if not isinstance(norm, StepBatchNorm):
        return norm(X, newest)
    if norm.training:
        if newest_is_a_cell:
            with torch.no_grad():
                norm(X[:, -1], newest)  # the newest entry updates the running statistics, once
        return F.batch_norm(
            X.reshape(B, k * H), None, None, norm.weight.repeat(k), norm.bias.repeat(k), True, 0.0, norm.eps
        ).reshape(B, k, H)  # batch statistics per entry
    return torch.stack([norm(X[:, j], max(newest - (k - 1) + j, 0)) for j in range(k)], dim=1)


def reference_step(
    cell: LARNNCell,
    t: int,
    x_t: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    window: torch.Tensor,
    filled: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step t of one layer -> (h, carried c, normalised cell). window [B, k, H]: the last k
    normalised cells, oldest first; filled [k]: which slots hold a cell yet (the others are
    empty: zero key and value features)."""
    B, k, H = window.shape
    nh = cell.heads
    dh = H // nh
    q = F.elu(cell.query(torch.cat([x_t, h], dim=1)))  # [B, H]
    K, V = cell.key(window), cell.value(window)  # every window cell re-projected, every step: [B, k, H]
    if cell.activation_on_keys_and_values:
        newest_is_a_cell = bool(filled[-1])
        K = _normalise_window(cell.norm_key, F.elu(K), t - 1, newest_is_a_cell)
        V = _normalise_window(cell.norm_value, F.elu(V), t - 1, newest_is_a_cell)
    K, V = K * filled[None, :, None], V * filled[None, :, None]
    if cell.use_positional_encoding:
        K = K + cell.pos_key(cell.pe)  # [k, H]
        V = V + cell.pos_value(cell.pe)
    Kh = K.view(B, k, nh, dh).transpose(1, 2)  # [B, nh, k, dh]
    Vh = V.view(B, k, nh, dh).transpose(1, 2)
    qh = q.view(B, nh, 1, dh)
    attention = torch.softmax(qh @ Kh.transpose(2, 3) / math.sqrt(dh), dim=-1)  # [B, nh, 1, k]
    a = cell.norm_attn(F.elu(cell.attn_out((attention @ Vh).reshape(B, H))), t)
    if cell.larnn_mode == "residual":
        z = cell.gates_x(x_t) + cell.gates_h(h) + cell.gates_a(a)
    else:
        z = cell.gates(torch.cat([x_t, h, a], dim=1))
    z = cell.norm_z(z, t)
    g = torch.tanh(z[:, :H])
    f = torch.sigmoid(z[:, H : 2 * H])
    i = torch.sigmoid(z[:, 2 * H : 3 * H])
    o = torch.sigmoid(z[:, 3 * H :])
    c_new = g * i + c * f  # carried
    n_new = cell.norm_c(c_new, t)  # read by h and the window
    h_new = cell.dropout(cell.norm_h(o * F.elu(n_new), t))
    return h_new, c_new, n_new


def reference_forward(stack: LARNN, x: torch.Tensor) -> torch.Tensor:
    """The stack's function, x [B, T, H] -> [B, T, H], computed the straightforward way."""
    B = x.shape[0]
    for cell in stack.cells:
        k = cell.window_size
        h = c = x.new_zeros(B, cell.hidden_size)
        window = x.new_zeros(B, k, cell.hidden_size)
        filled = x.new_zeros(k)
        hs = []
        for t in range(x.shape[1]):
            h, c, n = reference_step(cell, t, x[:, t], h, c, window, filled)
            window = torch.cat([window[:, 1:], n[:, None]], dim=1)  # the window tensor rebuilt every step
            filled = torch.cat([filled[1:], filled.new_ones(1)])
            hs.append(h)
        out = torch.stack(hs, dim=1)
        x = x + out if stack.is_stacked_residual else out
    return x
