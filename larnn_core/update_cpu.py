"""The cell's update (LARNNCell.update) for training with batch norm on CPU: forward and a
hand-written backward as compiled loops (numba) between torch's matrix products.

Why: autograd runs the update as about 40 small ops forward and 60 backward, each one a pass
over a [B, H]-sized tensor with its own dispatch; at the 2018 best shapes that costs more than
the arithmetic. Here each stretch between two matrix products is one loop nest, and each batch
norm's statistics are taken next to the elementwise work around it. The exponentials stay in
torch, which vectorises them (numba calls a scalar exp per entry: about 18x slower); sigmoid and
tanh are written through exp (tanh z = 2 sigmoid(2z) - 1), ELU as exp(x) - 1 where x <= 0.

Batch norm in training, as torch.nn.BatchNorm1d: per feature over the batch, mean m and biased
variance v; y = gamma (x - m) / sqrt(v + eps) + beta; running statistics move by `momentum`
towards m and the unbiased variance. The loops take column ranges [lo, lo + n) of row-major
[B, F] arrays, so that stacked blocks (the four gates, key and value) need no copies.

Same inputs and outputs as LARNNCell.update; tests/test_reference.py holds both to the reference.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from larnn_core import window

@numba.njit(cache=True, error_model="numpy")
def _batch_norm(x, lo, n, gamma, beta, eps, momentum, running_mean, running_var, mean, invstd, y, y_lo):
    """y[:, y_lo + f] = gamma (x[:, lo + f] - mean) invstd + beta over f < n, with the batch's mean
    and invstd = 1 / sqrt(var + eps) (written); moves the running statistics. (The loops index row
    slices: x[b, lo + f] would cost a negative-index check per entry, which stops vectorisation.)"""
    B = x.shape[0]
    var = np.zeros(n, x.dtype)
    mean[:] = 0
    for b in range(B):
        row = x[b, lo:lo + n]
        for f in range(n):
            mean[f] += row[f]
    mean /= B
    for b in range(B):
        row = x[b, lo:lo + n]
        for f in range(n):
            d = row[f] - mean[f]
            var[f] += d * d
    var /= B
    invstd[:] = 1 / np.sqrt(var + eps)
    running_mean[:] = (1 - momentum) * running_mean + momentum * mean
    running_var[:] = (1 - momentum) * running_var + momentum * B / (B - 1) * var
    scale, shift = gamma * invstd, beta - gamma * invstd * mean
    for b in range(B):
        row, out = x[b, lo:lo + n], y[b, y_lo:y_lo + n]
        for f in range(n):
            out[f] = scale[f] * row[f] + shift[f]


@numba.njit(cache=True, error_model="numpy")
def _normalise_backward(dy, dy_lo, x, lo, n, mean, invstd, gamma, dgamma, dbeta, dx, dx_lo):
    """Through _normalise over the batch: dx (may be dy itself), dgamma, dbeta (written)."""
    B = x.shape[0]
    dgamma[:] = 0
    dbeta[:] = 0
    for b in range(B):
        grad, row = dy[b, dy_lo:dy_lo + n], x[b, lo:lo + n]
        for f in range(n):
            dbeta[f] += grad[f]
            dgamma[f] += grad[f] * (row[f] - mean[f])
    dgamma *= invstd
    # dx = gamma invstd / B (B dy - dbeta - xhat dgamma), xhat = (x - mean) invstd
    scale = gamma * invstd
    slope = scale * invstd * dgamma / B
    shift = -scale * dbeta / B + slope * mean
    for b in range(B):
        grad, row, out = dy[b, dy_lo:dy_lo + n], x[b, lo:lo + n], dx[b, dx_lo:dx_lo + n]
        for f in range(n):
            out[f] = scale[f] * grad[f] - slope[f] * row[f] + shift[f]


@numba.njit(cache=True, error_model="numpy")
def _elu(x, exp_x):
    """exp_x becomes ELU(x): x where positive, else exp(x) - 1 (torch's expm1 is a scalar loop,
    5x slower than its exp; the difference is rounding near 0, about 1e-7 in float32)."""
    one = x.dtype.type(1)
    for b in range(x.shape[0]):
        row, out = x[b], exp_x[b]
        for f in range(x.shape[1]):
            out[f] = row[f] if row[f] > 0 else out[f] - one


@numba.njit(cache=True, error_model="numpy")
def _elu_backward(d, elu_x):
    """d *= ELU'(x), from ELU(x): 1 where positive, else ELU(x) + 1."""
    one = d.dtype.type(1)
    for b in range(d.shape[0]):
        grad, e = d[b], elu_x[b]
        for f in range(d.shape[1]):
            if e[f] <= 0:
                grad[f] *= e[f] + one


@numba.njit(cache=True, error_model="numpy")
def _gate_arguments(z, H, neg):
    """neg = -2 z for the candidate g (tanh z = 2 sigmoid(2z) - 1), -z for the sigmoid gates."""
    for b in range(z.shape[0]):
        row, out = z[b], neg[b]
        for f in range(H):
            out[f] = -(row[f] + row[f])
        row, out = row[H:], out[H:]
        for f in range(3 * H):
            out[f] = -row[f]


@numba.njit(cache=True, error_model="numpy")
def _gates(exp_neg, c, gates, s):
    """gates = g, f, i, o from exp_neg (see _gate_arguments); s = g i + c f, the new cell before its norm."""
    B, H = c.shape
    one = c.dtype.type(1)
    for b in range(B):
        e, act = exp_neg[b], gates[b]
        for f in range(4 * H):
            act[f] = one / (one + e[f])
        g, fg, i, cb, sb = act[:H], act[H:2 * H], act[2 * H:3 * H], c[b], s[b]
        for f in range(H):
            g[f] = g[f] + g[f] - one
            sb[f] = g[f] * i[f] + cb[f] * fg[f]


@numba.njit(cache=True, error_model="numpy")
def _output_gate(c_new, elu_c, gates, r):
    """elu_c becomes ELU(c_new) (it holds exp(c_new)); r = o ELU(c_new), the new h before its norm."""
    B, H = c_new.shape
    _elu(c_new, elu_c)
    for b in range(B):
        o, e, out = gates[b, 3 * H:], elu_c[b], r[b]
        for f in range(H):
            out[f] = o[f] * e[f]


@numba.njit(cache=True, error_model="numpy")
def _output_gate_backward(dr, elu_c, gates, dc, dpre):
    """From dr (the gradient at r = o ELU(c_new)): the output gate's pre-activation gradient into
    dpre, and ELU's into dc (added)."""
    B, H = dr.shape
    one = dr.dtype.type(1)
    for b in range(B):
        grad, o, e, dcb, do = dr[b], gates[b, 3 * H:], elu_c[b], dc[b], dpre[b, 3 * H:]
        for f in range(H):
            do[f] = grad[f] * e[f] * o[f] * (one - o[f])
            de = grad[f] * o[f]
            dcb[f] += de if e[f] > 0 else de * (e[f] + one)


@numba.njit(cache=True, error_model="numpy")
def _gates_backward(ds, c, gates, dpre, dc_prev):
    """From ds (the gradient at s = g i + c f): g, f, i's pre-activation gradients into dpre, and
    the previous cell's gradient."""
    B, H = c.shape
    one = c.dtype.type(1)
    for b in range(B):
        act, d, grad, cb, dcb = gates[b], dpre[b], ds[b], c[b], dc_prev[b]
        g, fg, i = act[:H], act[H:2 * H], act[2 * H:3 * H]
        dg, df, di = d[:H], d[H:2 * H], d[2 * H:3 * H]
        for f in range(H):
            dg[f] = grad[f] * i[f] * (one - g[f] * g[f])
            df[f] = grad[f] * cb[f] * fg[f] * (one - fg[f])
            di[f] = grad[f] * g[f] * i[f] * (one - i[f])
            dcb[f] = grad[f] * fg[f]


class _BatchNorm:
    """One step's use of a BatchNorm1d on columns [lo, lo + n) of [B, F] arrays: its batch
    statistics, kept for the backward."""

    def __init__(self, norm: torch.nn.BatchNorm1d, lo: int = 0):
        self.norm, self.lo, self.n = norm, lo, norm.num_features
        self.gamma = norm.weight.detach().numpy()
        self.beta = norm.bias.detach().numpy() if norm.bias is not None else np.zeros_like(self.gamma)
        self.mean, self.invstd = np.empty_like(self.gamma), np.empty_like(self.gamma)

    def forward(self, x: np.ndarray, y: np.ndarray, y_lo: int = 0) -> None:
        norm = self.norm
        if x.shape[0] < 2:
            raise ValueError(f"batch norm in training needs more than 1 value per channel, got a batch of {x.shape[0]}")
        norm.num_batches_tracked.add_(1)
        _batch_norm(x, self.lo, self.n, self.gamma, self.beta, norm.eps, norm.momentum, norm.running_mean.numpy(),
                    norm.running_var.numpy(), self.mean, self.invstd, y, y_lo)

    def backward(self, dy: np.ndarray, x: np.ndarray, dx: np.ndarray, dy_lo: int = 0, dx_lo: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """dx written; returns (dgamma, dbeta), dbeta None for a norm without a shift."""
        dgamma, dbeta = np.empty_like(self.gamma), np.empty_like(self.gamma)
        _normalise_backward(dy, dy_lo, x, self.lo, self.n, self.mean, self.invstd, self.gamma, dgamma, dbeta,
                            dx, dx_lo)
        return torch.from_numpy(dgamma), torch.from_numpy(dbeta) if self.norm.bias is not None else None


def applies(cell, t: torch.Tensor) -> bool:
    """Whether these loops run the cell's update for tensors like t."""
    return (window.COMPILED_CPU and cell.training and cell.norm == "batch" and t.device.type == "cpu"
            and t.dtype in (torch.float32, torch.float64))


def update(cell, heads: torch.Tensor, h: torch.Tensor, c: torch.Tensor, xz: torch.Tensor, weights
           ) -> tuple[torch.Tensor, ...]:
    """LARNNCell.update through the loops: the same (h before dropout, c, z, key, value)."""
    norms = [cell.norm_attn, cell.norm_z, cell.norm_c, cell.norm_h]
    h, c_new, z = _Cell.apply(heads, h, c, xz, cell.attn_out.weight, cell.attn_out.bias, weights.w_ha,
                              *[p for norm in norms for p in (norm.weight, norm.bias)], cell)
    if not cell.activation_on_keys_and_values:
        k_new, v_new = F.linear(c_new, weights.w_kv, weights.b_kv).chunk(2, dim=1)
    else:
        norms = [cell.norm_key, cell.norm_value]
        k_new, v_new = _KeyValue.apply(c_new, weights.w_kv, weights.b_kv,
                                       *[p for norm in norms for p in (norm.weight, norm.bias)], cell)
    return h, c_new, z, k_new, v_new


class _Cell(torch.autograd.Function):
    """Attention output -> a -> z -> gates -> new c and h (before dropout), with their batch norms.
    Tensors are allocated by torch and worked on through their numpy views (names ending in _)."""

    @staticmethod
    def forward(ctx, heads, h, c, xz, w_o, b_o, w_ha, gamma_a, _no_beta_a, gamma_z, beta_z, gamma_c, beta_c,
                gamma_h, beta_h, cell):
        B, H = h.shape
        norm_a, norm_z = _BatchNorm(cell.norm_attn), _BatchNorm(cell.norm_z)
        norm_c, norm_h = _BatchNorm(cell.norm_c), _BatchNorm(cell.norm_h)
        c_ = c.detach().numpy()
        u = torch.addmm(b_o, heads, w_o.T)  # [B, H]
        elu_u = torch.exp(u)
        elu_u_ = elu_u.numpy()
        _elu(u.numpy(), elu_u_)
        ha = torch.empty(B, 2 * H, dtype=h.dtype)  # [h ; a]
        ha[:, :H] = h
        norm_a.forward(elu_u_, ha.numpy(), H)

        p = torch.addmm(xz, ha, w_ha.T)  # [B, 4H]
        z, exp_neg = torch.empty_like(p), torch.empty_like(p)
        p_, z_, exp_neg_ = p.numpy(), z.numpy(), exp_neg.numpy()
        norm_z.forward(p_, z_)
        _gate_arguments(z_, H, exp_neg_)
        exp_neg.exp_()
        gates, s, c_new = torch.empty_like(z), torch.empty_like(c), torch.empty_like(c)  # g, f, i, o; g i + c f
        gates_, s_, c_new_ = gates.numpy(), s.numpy(), c_new.numpy()
        _gates(exp_neg_, c_, gates_, s_)
        norm_c.forward(s_, c_new_)

        elu_c, r, h_new = torch.exp(c_new), torch.empty_like(c), torch.empty_like(c)
        r_ = r.numpy()
        _output_gate(c_new_, elu_c.numpy(), gates_, r_)
        norm_h.forward(r_, h_new.numpy())

        ctx.save_for_backward(heads, c, w_o, w_ha, elu_u, ha, p, gates, s, elu_c, r)
        ctx.norms = norm_a, norm_z, norm_c, norm_h
        return h_new, c_new, z

    @staticmethod
    @once_differentiable
    def backward(ctx, dh_new, dc_new, dz):
        heads, c, w_o, w_ha, elu_u, ha, p, gates, s, elu_c, r = ctx.saved_tensors
        norm_a, norm_z, norm_c, norm_h = ctx.norms
        H = c.shape[1]
        c_, gates_, elu_u_ = c.detach().numpy(), gates.numpy(), elu_u.numpy()
        dc = _dense(dc_new, c).clone()
        dr, dpre, dc_prev = torch.empty_like(r), torch.empty_like(p), torch.empty_like(c)
        dc_, dr_, dpre_ = dc.numpy(), dr.numpy(), dpre.numpy()  # dpre: the gradient at z

        dgamma_h, dbeta_h = norm_h.backward(_dense(dh_new, c).numpy(), r.numpy(), dr_)
        _output_gate_backward(dr_, elu_c.numpy(), gates_, dc_, dpre_)
        dgamma_c, dbeta_c = norm_c.backward(dc_, s.numpy(), dc_)  # dc becomes ds, the gradient at g i + c f
        _gates_backward(dc_, c_, gates_, dpre_, dc_prev.numpy())
        if dz is not None:
            dpre += dz
        dgamma_z, dbeta_z = norm_z.backward(dpre_, p.numpy(), dpre_)
        dp = dpre  # [B, 4H], also the gradient of xz

        dha = dp @ w_ha  # [B, 2H]
        dw_ha = dp.T @ ha
        du = torch.empty_like(c)
        du_ = du.numpy()
        dgamma_a, _ = norm_a.backward(dha.numpy(), elu_u_, du_, dy_lo=H)
        _elu_backward(du_, elu_u_)
        return (du @ w_o, dha[:, :H], dc_prev, dp, du.T @ heads, du.sum(0), dw_ha, dgamma_a, None,
                dgamma_z, dbeta_z, dgamma_c, dbeta_c, dgamma_h, dbeta_h, None)


class _KeyValue(torch.autograd.Function):
    """New cell -> its key and value: Norm(ELU(W_k c + b_k)), Norm(ELU(W_v c + b_v))."""

    @staticmethod
    def forward(ctx, c, w_kv, b_kv, gamma_k, beta_k, gamma_v, beta_v, cell):
        H = c.shape[1]
        norm_k, norm_v = _BatchNorm(cell.norm_key), _BatchNorm(cell.norm_value, lo=H)
        kv = F.linear(c, w_kv, b_kv)  # [B, 2H]
        elu_kv = torch.exp(kv)
        elu_kv_ = elu_kv.numpy()
        _elu(kv.numpy(), elu_kv_)
        k_new, v_new = torch.empty_like(c), torch.empty_like(c)
        norm_k.forward(elu_kv_, k_new.numpy())
        norm_v.forward(elu_kv_, v_new.numpy())
        ctx.save_for_backward(c, w_kv, elu_kv)
        ctx.norms = norm_k, norm_v
        return k_new, v_new

    @staticmethod
    @once_differentiable
    def backward(ctx, dk, dv):
        c, w_kv, elu_kv = ctx.saved_tensors
        norm_k, norm_v = ctx.norms
        H = c.shape[1]
        elu_kv_ = elu_kv.numpy()
        dkv = torch.empty_like(elu_kv)  # [B, 2H]
        dkv_ = dkv.numpy()
        dgamma_k, dbeta_k = norm_k.backward(_dense(dk, c).numpy(), elu_kv_, dkv_)
        dgamma_v, dbeta_v = norm_v.backward(_dense(dv, c).numpy(), elu_kv_, dkv_, dx_lo=H)
        _elu_backward(dkv_, elu_kv_)
        return dkv @ w_kv, dkv.T @ c, dkv.sum(0), dgamma_k, dbeta_k, dgamma_v, dbeta_v, None


def _dense(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A contiguous gradient, detached; zeros for an output nothing downstream used."""
    return torch.zeros_like(like) if grad is None else grad.detach().contiguous()
