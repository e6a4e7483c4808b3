"""One LARNN step (query, attention, update, dropout, the new cell into the window) with batch norm
on CPU, in training and in evaluation without gradients: forward and a hand-written backward as
compiled loops (numba) between torch's matrix products, one autograd node per step and layer.

Why: autograd runs a step as about 50 small ops forward and 70 backward, each a pass over a
[B, H]-sized tensor with its own dispatch, plus layout copies between the window's [dh, nh, B]
and [B, H]; at the 2018 best shapes that costs more than the arithmetic. Here each stretch
between two matrix products is one loop nest, each batch norm's statistics are taken next to
the elementwise work around it, and the attention's input and output stay in the window's
layout: the query is written there by the loop that applies its ELU, and the output projection
reads the heads as they are, through a copy of W_o with its columns in the same order (made
once per sequence, Sequence.w_o_heads). The exponentials stay in torch, which vectorises them
(numba calls a scalar exp per entry: about 18x slower); sigmoid and tanh are written through exp
(tanh z = 2 sigmoid(2z) - 1), ELU as exp(x) - 1 where x <= 0.

Batch norm as model.StepBatchNorm: in training, per feature over the batch, mean m and biased
variance v; y = gamma (x - m) / sqrt(v + eps) + beta; the time step's row of the running
statistics moves by `momentum` towards m and the unbiased variance. In evaluation m and v are
that row of the running statistics. The
loops take column ranges [lo, lo + n) of row-major [B, F] arrays, so that stacked blocks (the
four gates, key and value) need no copies.

Ordering: a step's backward runs after those of every later step (they read its h and c), so
when it reads its cell's slot of the window's gradient buffers, every attention that read the
cell has added to it. tests/test_reference.py holds this path to the reference.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from larnn_core.execution import attention_loops
from larnn_core.execution.window import SPENT, Window

if TYPE_CHECKING:
    from larnn_core.model import StepBatchNorm, StepWeights


@numba.njit(cache=True, error_model="numpy")
def _moments(x, lo, n, training, eps, momentum, running_mean, running_var, stats):
    """Training: the batch's mean and invstd = 1 / sqrt(var + eps) of x's columns [lo, lo + n)
    into stats [2, n]; moves the running statistics (the step's row). Evaluation: the running
    statistics' instead. (The loops index row slices: x[b, lo + f] would cost a negative-index
    check per entry, which stops vectorisation.)"""
    if not training:
        stats[0] = running_mean
        stats[1] = 1 / np.sqrt(running_var + eps)
        return
    B = x.shape[0]
    mean, var = stats[0], np.zeros(n, x.dtype)
    mean[:] = 0
    for b in range(B):
        row = x[b, lo : lo + n]
        for f in range(n):
            mean[f] += row[f]
    mean /= B
    for b in range(B):
        row = x[b, lo : lo + n]
        for f in range(n):
            d = row[f] - mean[f]
            var[f] += d * d
    var /= B
    stats[1] = 1 / np.sqrt(var + eps)
    running_mean[:] = (1 - momentum) * running_mean + momentum * mean
    running_var[:] = (1 - momentum) * running_var + momentum * B / (B - 1) * var


@numba.njit(cache=True, error_model="numpy")
def _normalise(x, lo, n, stats, gamma, beta, y, y_lo):
    """y[:, y_lo + f] = gamma (x[:, lo + f] - mean) invstd + beta over f < n."""
    scale = gamma * stats[1]
    shift = beta - scale * stats[0]
    for b in range(x.shape[0]):
        row, out = x[b, lo : lo + n], y[b, y_lo : y_lo + n]
        for f in range(n):
            out[f] = scale[f] * row[f] + shift[f]


@numba.njit(cache=True, error_model="numpy")
def _backward_coefficients(sum_dy, sum_dy_centred, mean, invstd, gamma, B, dgamma, dbeta):
    """Through a batch norm, from the batch sums of dy and of dy (x - mean): the parameters'
    gradients (written) and (scale, slope, shift) such that dx = scale dy - slope x + shift.
    (dx = gamma invstd / B (B dy - dbeta - xhat dgamma), xhat = (x - mean) invstd.)"""
    dbeta[:] = sum_dy
    dgamma[:] = sum_dy_centred * invstd
    scale = gamma * invstd
    slope = scale * invstd * dgamma / B
    return scale, slope, slope * mean - scale * dbeta / B


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
def _attention_output(u, elu_u, h, gamma, beta, training, eps, momentum, running_mean, running_var, stats, ha):
    """ha = [h ; a], a = Norm(ELU(u)) [B, 2H]; elu_u becomes ELU(u) (it holds exp(u))."""
    B, H = h.shape
    _elu(u, elu_u)
    _moments(elu_u, 0, H, training, eps, momentum, running_mean, running_var, stats)
    _normalise(elu_u, 0, H, stats, gamma, beta, ha, H)
    for b in range(B):
        row, out = h[b], ha[b]
        for f in range(H):
            out[f] = row[f]


@numba.njit(cache=True, error_model="numpy")
def _gate_inputs(p, gamma, beta, training, eps, momentum, running_mean, running_var, stats, z, neg):
    """z = Norm(p) [B, 4H], and the arguments of the exp that the gates need: neg = -2 z for the
    candidate g (tanh z = 2 sigmoid(2z) - 1), -z for the sigmoid gates."""
    B, H = p.shape[0], p.shape[1] // 4
    _moments(p, 0, 4 * H, training, eps, momentum, running_mean, running_var, stats)
    scale = gamma * stats[1]
    shift = beta - scale * stats[0]
    for b in range(B):
        row, zb, out = p[b], z[b], neg[b]
        for f in range(4 * H):
            zb[f] = scale[f] * row[f] + shift[f]
        for f in range(H):
            out[f] = -(zb[f] + zb[f])
        zb, out = zb[H:], out[H:]
        for f in range(3 * H):
            out[f] = -zb[f]


@numba.njit(cache=True, error_model="numpy")
def _new_cell(exp_neg, c, gamma, beta, training, eps, momentum, running_mean, running_var, stats, gates, s, c_new):
    """gates = g, f, i, o from exp_neg (see _gate_inputs); s = g i + c f, the new carried cell, and
    c_new = Norm(s), the cell that h and the window read."""
    B, H = c.shape
    one = c.dtype.type(1)
    for b in range(B):
        e, act = exp_neg[b], gates[b]
        for f in range(4 * H):
            act[f] = one / (one + e[f])
        g, fg, i, cb, sb = act[:H], act[H : 2 * H], act[2 * H : 3 * H], c[b], s[b]
        for f in range(H):
            g[f] = g[f] + g[f] - one
            sb[f] = g[f] * i[f] + cb[f] * fg[f]
    _moments(s, 0, H, training, eps, momentum, running_mean, running_var, stats)
    _normalise(s, 0, H, stats, gamma, beta, c_new, 0)


@numba.njit(cache=True, error_model="numpy")
def _new_hidden(c_new, elu_c, gates, gamma, beta, training, eps, momentum, running_mean, running_var, stats, r, h_new):
    """elu_c becomes ELU(c_new) (it holds exp(c_new)); h_new = Norm(r), r = o ELU(c_new)."""
    B, H = c_new.shape
    _elu(c_new, elu_c)
    for b in range(B):
        o, e, out = gates[b, 3 * H :], elu_c[b], r[b]
        for f in range(H):
            out[f] = o[f] * e[f]
    _moments(r, 0, H, training, eps, momentum, running_mean, running_var, stats)
    _normalise(r, 0, H, stats, gamma, beta, h_new, 0)


@numba.njit(cache=True, error_model="numpy")
def _cell_backward(
    dh,
    r,
    stats_h,
    gamma_h,
    elu_c,
    gates,
    dc,
    ds_next,
    s,
    stats_c,
    gamma_c,
    c,
    dz,
    p,
    stats_z,
    gamma_z,
    grads_h,
    grads_c,
    grads_z,
    dp,
    dc_prev,
):
    """From h's gradient dh, c_new's dc (from the window; dc is overwritten) and the carried cell
    s's ds_next (from the next step, or an empty array) back to the gradient dp at z's pre-norm
    p [B, 4H] and the previous carried cell's dc_prev, through h = Norm(r), r = o ELU(c_new),
    c_new = Norm(s), s = g i + c f and the gates; dz (or an empty array) is added at z. Four
    passes: the first batch sums, then each pass goes through one norm and the elementwise work
    after it while taking the sums the next norm's backward needs. grads_*: [dgamma, dbeta]."""
    B, H = dh.shape
    one = dh.dtype.type(1)
    sums, sums_centred = np.zeros(4 * H, dh.dtype), np.zeros(4 * H, dh.dtype)
    for b in range(B):
        grad, row = dh[b], r[b]
        for f in range(H):
            sums[f] += grad[f]
            sums_centred[f] += grad[f] * (row[f] - stats_h[0, f])
    scale, slope, shift = _backward_coefficients(
        sums[:H], sums_centred[:H], stats_h[0], stats_h[1], gamma_h, B, grads_h[0], grads_h[1]
    )
    sums[:], sums_centred[:] = 0, 0
    for b in range(B):  # through h's norm and r = o ELU(c_new): o's gradient, c_new's (added to dc)
        grad, row, o, e, dcb, do, sb = dh[b], r[b], gates[b, 3 * H :], elu_c[b], dc[b], dp[b, 3 * H :], s[b]
        for f in range(H):
            dr = scale[f] * grad[f] - slope[f] * row[f] + shift[f]
            do[f] = dr * e[f] * o[f] * (one - o[f])
            de = dr * o[f]
            dcb[f] += de if e[f] > 0 else de * (e[f] + one)
            sums[f] += dcb[f]
            sums_centred[f] += dcb[f] * (sb[f] - stats_c[0, f])
    scale, slope, shift = _backward_coefficients(
        sums[:H], sums_centred[:H], stats_c[0], stats_c[1], gamma_c, B, grads_c[0], grads_c[1]
    )
    sums[:], sums_centred[:] = 0, 0
    for b in range(B):  # through c's norm and s = g i + c f: the gates' gradients, the previous cell's
        act, d, dcb, sb, cb, dcp = gates[b], dp[b], dc[b], s[b], c[b], dc_prev[b]
        g, fg, i = act[:H], act[H : 2 * H], act[2 * H : 3 * H]
        dg, df, di = d[:H], d[H : 2 * H], d[2 * H : 3 * H]
        for f in range(H):
            ds = scale[f] * dcb[f] - slope[f] * sb[f] + shift[f]
            if ds_next.shape[0]:
                ds += ds_next[b, f]
            dg[f] = ds * i[f] * (one - g[f] * g[f])
            df[f] = ds * cb[f] * fg[f] * (one - fg[f])
            di[f] = ds * g[f] * i[f] * (one - i[f])
            dcp[f] = ds * fg[f]
        if dz.shape[0]:
            d += dz[b]
        pb = p[b]
        for f in range(4 * H):
            sums[f] += d[f]
            sums_centred[f] += d[f] * (pb[f] - stats_z[0, f])
    scale, slope, shift = _backward_coefficients(
        sums, sums_centred, stats_z[0], stats_z[1], gamma_z, B, grads_z[0], grads_z[1]
    )
    for b in range(B):  # through z's norm
        d, pb = dp[b], p[b]
        for f in range(4 * H):
            d[f] = scale[f] * d[f] - slope[f] * pb[f] + shift[f]


@numba.njit(cache=True, error_model="numpy")
def _key_value(kv, elu_kv, args_k, args_v, keys, values):
    """The new cell's key and value Norm(ELU(kv)) (halves of kv [B, 2H], normalised in place;
    elu_kv, holding exp(kv), becomes ELU(kv)) into the window's slots keys, values [dh, nh, B].
    args_k, args_v: _Norm.args of the key's and the value's norm."""
    H = kv.shape[1] // 2
    _elu(kv, elu_kv)
    for args, lo, slot in ((args_k, 0, keys), (args_v, H, values)):
        gamma, beta, training, eps, momentum, running_mean, running_var, stats = args
        _moments(elu_kv, lo, H, training, eps, momentum, running_mean, running_var, stats)
        _normalise(elu_kv, lo, H, stats, gamma, beta, kv, lo)
        _to_heads(kv, lo, slot)


@numba.njit(cache=True, error_model="numpy")
def _norm_elu_backward(dy, dy_lo, elu_x, lo, n, stats, gamma, grads, dx):
    """Through y = Norm(ELU(x)) on columns [lo, lo + n), given ELU(x): dx[:, lo:lo + n] from
    dy[:, dy_lo:dy_lo + n] (dx may be dy); grads: [dgamma, dbeta] (written)."""
    B = dy.shape[0]
    one = dy.dtype.type(1)
    sums, sums_centred = np.zeros(n, dy.dtype), np.zeros(n, dy.dtype)
    for b in range(B):
        d, e = dy[b, dy_lo : dy_lo + n], elu_x[b, lo : lo + n]
        for f in range(n):
            sums[f] += d[f]
            sums_centred[f] += d[f] * (e[f] - stats[0, f])
    scale, slope, shift = _backward_coefficients(sums, sums_centred, stats[0], stats[1], gamma, B, grads[0], grads[1])
    for b in range(B):
        d, e, out = dy[b, dy_lo : dy_lo + n], elu_x[b, lo : lo + n], dx[b, lo : lo + n]
        for f in range(n):
            g = scale[f] * d[f] - slope[f] * e[f] + shift[f]
            out[f] = g if e[f] > 0 else g * (e[f] + one)


@numba.njit(cache=True, error_model="numpy")
def _key_value_backward(grad_keys, grad_values, elu_kv, stats_k, gamma_k, stats_v, gamma_v, grads_k, grads_v, dkv):
    """Through _key_value: dkv [B, 2H] from the slots' gradients [dh, nh, B]; grads_*: [dgamma, dbeta]."""
    H = elu_kv.shape[1] // 2
    _from_heads(grad_keys, dkv, 0)
    _from_heads(grad_values, dkv, H)
    _norm_elu_backward(dkv, 0, elu_kv, 0, H, stats_k, gamma_k, grads_k, dkv)
    _norm_elu_backward(dkv, H, elu_kv, H, H, stats_v, gamma_v, grads_v, dkv)


@numba.njit(cache=True, error_model="numpy")
def _query(pre, exp_pre, scale, q):
    """exp_pre becomes ELU(pre) (see _elu); q[d, n, b] = scale ELU(pre)[b, n dh + d], the window's layout."""
    _elu(pre, exp_pre)
    _to_heads(exp_pre, 0, q, scale)


@numba.njit(cache=True, error_model="numpy")
def _query_backward(grad_q, elu_pre, scale, grad_pre):
    """Through _query: grad_pre[b, n dh + d] from grad_q[d, n, b]."""
    dh, nh, B = grad_q.shape
    one = elu_pre.dtype.type(1)
    for d in range(dh):
        for n in range(nh):
            grad, e, out = grad_q[d, n], elu_pre[:, n * dh + d], grad_pre[:, n * dh + d]
            for b in range(B):
                out[b] = scale * grad[b] * (one if e[b] > 0 else e[b] + one)


@numba.njit(cache=True, error_model="numpy")
def _to_heads(x, lo, out, scale=1.0):
    """out[d, n, b] = scale x[b, lo + n dh + d]: a [B, H] block into the window's layout."""
    dh, nh, B = out.shape
    for d in range(dh):
        for n in range(nh):
            column, row = x[:, lo + n * dh + d], out[d, n]
            for b in range(B):
                row[b] = scale * column[b]


@numba.njit(cache=True, error_model="numpy")
def _from_heads(x, out, lo):
    """out[b, lo + n dh + d] = x[d, n, b]: the window's layout into a [B, H] block."""
    dh, nh, B = x.shape
    for b in range(B):
        row = out[b, lo : lo + nh * dh]
        for n in range(nh):
            for d in range(dh):
                row[n * dh + d] = x[d, n, b]


@numba.njit(cache=True, error_model="numpy")
def _dropout(h, seed, p, out, mask):
    """out = h mask, mask = 1 / (1 - p) or 0 (with probability p) per entry, from a counter-based
    generator (splitmix64 of seed + entry index: vectorises, where torch's dropout draws one
    Mersenne-twister number per entry, about 15x slower here)."""
    B, H = h.shape
    scale = h.dtype.type(1 / (1 - p))
    threshold = np.uint64(p * 2.0**53)  # drop where the top 53 bits fall below p 2^53
    base = np.uint64(seed)
    for b in range(B):
        row, m, o = h[b], mask[b], out[b]
        start = np.uint64(b * H)
        for f in range(H):
            z = base + (start + np.uint64(f)) * np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
            m[f] = scale if z >> np.uint64(11) >= threshold else 0
            o[f] = row[f] * m[f]


class _Norm:
    """A StepBatchNorm as arrays: numpy views of its parameters and running statistics (made once
    per sequence: each view costs microseconds)."""

    def __init__(self, norm: StepBatchNorm):
        self.n, self.training, self.eps, self.momentum = norm.num_features, norm.training, norm.eps, norm.momentum
        self.shifts = norm.bias is not None
        self.gamma = norm.weight.detach().numpy()
        self.beta = norm.bias.detach().numpy() if self.shifts else np.zeros_like(self.gamma)
        self.running_mean, self.running_var = norm.running_mean.numpy(), norm.running_var.numpy()  # [steps, n]

    def args(self, x: np.ndarray, t: int) -> tuple:
        """What the loops that normalise x at time step t take: the parameters, whether to use the
        batch's statistics (training) or the running ones, the step's row of the running
        statistics, and a new [2, n] array for the statistics used (mean, invstd), which the
        backward needs."""
        if self.training and x.shape[0] < 2:
            raise ValueError(f"batch norm in training needs more than 1 value per channel, got a batch of {x.shape[0]}")
        row = min(t, len(self.running_mean) - 1)
        return (
            self.gamma,
            self.beta,
            self.training,
            self.eps,
            self.momentum,
            self.running_mean[row],
            self.running_var[row],
            np.empty((2, self.n), x.dtype),
        )


# _Step's tensor inputs, in the order it takes them, after which come the norms' parameters
# (Sequence.params); its backward returns their gradients by these names, in this order.
INPUTS = ("xq", "xz", "h", "c", "w_qh", "w_o_heads", "b_o", "w_ha", "w_kv", "b_kv", "pos_k", "pos_v")


class Sequence:
    """What one cell's steps share over one sequence, made once from the cell's StepWeights (the
    bundle LARNNCell.step_weights builds): W_o with its columns in the window's head layout
    (d, n), the batch norms as arrays (_Norm) and their parameters, in the order _Step takes them."""

    def __init__(self, weights: StepWeights, heads: int):
        self.weights = weights
        self.w_o_heads = weights.w_o.unflatten(1, (heads, -1)).transpose(1, 2).flatten(1)  # [H, H]
        self.norms = [_Norm(norm) for norm in weights.norms]
        self.params = [p for norm in weights.norms for p in (norm.weight, norm.bias) if p is not None]

    def step(
        self, xq: torch.Tensor, xz: torch.Tensor, h: torch.Tensor, c: torch.Tensor, win: Window
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step through the loops: (h after dropout, carried c, z); the new cell's key and value
        are in the window."""
        w = self.weights
        inputs = dict(
            xq=xq,
            xz=xz,
            h=h,
            c=c,
            w_qh=w.w_qh,
            w_o_heads=self.w_o_heads,
            b_o=w.b_o,
            w_ha=w.w_ha,
            w_kv=w.w_kv,
            b_kv=w.b_kv,
            pos_k=w.pos_k,
            pos_v=w.pos_v,
        )
        return _Step.apply(self, win, *(inputs[name] for name in INPUTS), *self.params)


class _Step(torch.autograd.Function):
    """One time step of one layer, model.py's equations: (xq, xz, h, c) -> (h after dropout, c, z) with c
    the carried cell (un-normalised), the new cell's key and value written into the window's
    slot. Tensors are allocated by torch and worked on through their numpy views (names ending
    in _)."""

    @staticmethod
    def forward(
        ctx, seq: Sequence, win: Window, xq, xz, h, c, w_qh, w_o_heads, b_o, w_ha, w_kv, b_kv, pos_k, pos_v, *_params
    ):
        B, H = h.shape
        t = win.pushed  # the time step: its row of the batch norms' running statistics
        slots, slot = win.advance()  # the window this step attends over; the new cell's slot
        K, V = win.entries(slots, pos_k, pos_v)  # [k, dh, nh, B]
        dh = K.shape[1]
        norm_a, norm_z, norm_c, norm_h, *norm_kv = seq.norms

        pre_q = torch.addmm(xq, h, w_qh.T)  # [B, H]
        elu_q, q = torch.exp(pre_q), torch.empty_like(K[0])  # q: [dh, nh, B], scaled by 1 / sqrt(dh)
        _query(pre_q.numpy(), elu_q.numpy(), 1 / math.sqrt(dh), q.numpy())
        heads, weights = attention_loops.attend(K, V, q)  # [dh, nh, B]: MultiHead(q, K, V)

        u = torch.addmm(b_o, heads.view(H, B).T, w_o_heads.T)  # [B, H]: W_o MultiHead + b_o
        elu_u, ha = torch.exp(u), torch.empty(B, 2 * H, dtype=h.dtype)  # ha: [h ; a]
        elu_u_ = elu_u.numpy()
        args_a = norm_a.args(elu_u_, t)
        _attention_output(u.numpy(), elu_u_, h.detach().numpy(), *args_a, ha.numpy())

        p = torch.addmm(xz, ha, w_ha.T)  # [B, 4H]
        z, exp_neg = torch.empty_like(p), torch.empty_like(p)
        p_, z_, exp_neg_ = p.numpy(), z.numpy(), exp_neg.numpy()
        args_z = norm_z.args(p_, t)
        _gate_inputs(p_, *args_z, z_, exp_neg_)
        exp_neg.exp_()
        gates, s, c_new = torch.empty_like(z), torch.empty_like(c), torch.empty_like(c)  # g, f, i, o; g i + c f
        gates_, s_, c_new_ = gates.numpy(), s.numpy(), c_new.numpy()
        args_c = norm_c.args(s_, t)
        _new_cell(exp_neg_, c.detach().numpy(), *args_c, gates_, s_, c_new_)

        elu_c, r, h_new = torch.exp(c_new), torch.empty_like(c), torch.empty_like(c)
        r_ = r.numpy()
        args_h = norm_h.args(r_, t)
        _new_hidden(c_new_, elu_c.numpy(), gates_, *args_h, r_, h_new.numpy())
        mask = None
        if seq.weights.dropout > 0:  # seeded from the training's generator (or torch's), so its seed reproduces it
            seed = int(torch.randint(2**62, (), dtype=torch.int64, generator=seq.weights.generator))
            mask, dropped = torch.empty_like(h_new), torch.empty_like(h_new)
            _dropout(h_new.numpy(), seed, seq.weights.dropout, dropped.numpy(), mask.numpy())
            h_new = dropped

        kv = F.linear(c_new, w_kv, b_kv)  # [B, 2H]: W_k c + b_k and W_v c + b_v, once per cell
        kv_, elu_kv, stats_kv = kv.numpy(), kv, []
        if norm_kv:  # key, value = Norm(ELU(.))
            elu_kv = torch.exp(kv)
            args_kv = [norm.args(kv_, t) for norm in norm_kv]
            _key_value(kv_, elu_kv.numpy(), *args_kv, win.keys[slot].numpy(), win.values[slot].numpy())
            stats_kv = [args[-1] for args in args_kv]
        else:
            _to_heads(kv_, 0, win.keys[slot].numpy())
            _to_heads(kv_, H, win.values[slot].numpy())

        ctx.save_for_backward(
            h,
            c,
            w_qh,
            w_o_heads,
            w_ha,
            w_kv,
            pos_k,
            pos_v,
            elu_q,
            q,
            heads,
            weights,
            elu_u,
            ha,
            p,
            gates,
            s,
            elu_c,
            r,
            c_new,
            elu_kv,
            mask,
        )
        ctx.set_materialize_grads(False)  # None, not zeros, for an output nothing used (z, mostly)
        ctx.seq, ctx.stats = seq, (args_a[-1], args_z[-1], args_c[-1], args_h[-1], *stats_kv)
        ctx.window, ctx.slots, ctx.slot = win, slots, slot
        return h_new, s, z  # s: the carried cell, un-normalised

    @staticmethod
    @once_differentiable
    def backward(ctx, dh_new, ds_next, dz):
        (
            h,
            c,
            w_qh,
            w_o_heads,
            w_ha,
            w_kv,
            pos_k,
            pos_v,
            elu_q,
            q,
            heads,
            weights,
            elu_u,
            ha,
            p,
            gates,
            s,
            elu_c,
            r,
            c_new,
            elu_kv,
            mask,
        ) = ctx.saved_tensors
        norm_a, norm_z, norm_c, norm_h, *norm_kv = ctx.seq.norms
        stats_a, stats_z, stats_c, stats_h, *stats_kv = ctx.stats
        win, slots, slot = ctx.window, ctx.slots, ctx.slot
        if slot is None:
            raise RuntimeError(SPENT)
        ctx.slot = None
        B, H = c.shape
        grad_keys, grad_values = win.gradient_buffers()

        dkv = torch.empty_like(elu_kv)  # [B, 2H]: every later attention's gradient at the new cell's key, value
        dkv_, kv_grads = dkv.numpy(), []
        if norm_kv:
            grads_k, grads_v = np.empty((2, H), dkv_.dtype), np.empty((2, H), dkv_.dtype)
            _key_value_backward(
                grad_keys[slot].numpy(),
                grad_values[slot].numpy(),
                elu_kv.numpy(),
                stats_kv[0],
                norm_kv[0].gamma,
                stats_kv[1],
                norm_kv[1].gamma,
                grads_k,
                grads_v,
                dkv_,
            )
            kv_grads = [grads_k, grads_v]
        else:
            _from_heads(grad_keys[slot].numpy(), dkv_, 0)
            _from_heads(grad_values[slot].numpy(), dkv_, H)
        dc = dkv @ w_kv  # [B, H]: c_new's gradient from the window (h's is added by _cell_backward)
        dw_kv, db_kv = dkv.T @ c_new, dkv.sum(0)

        c_, gates_, elu_u_ = c.detach().numpy(), gates.numpy(), elu_u.numpy()
        dp, dc_prev = torch.empty_like(p), torch.empty_like(c)  # [B, 4H]: also the gradient of xz
        dh_new = _dense(dh_new, c) if mask is None or dh_new is None else dh_new * mask
        grads_h, grads_c, grads_z = (np.empty((2, norm.n), c_.dtype) for norm in (norm_h, norm_c, norm_z))
        dz_, ds_next_ = (
            g.detach().contiguous().numpy() if g is not None else np.empty((0, 0), c_.dtype) for g in (dz, ds_next)
        )
        _cell_backward(
            dh_new.numpy(),
            r.numpy(),
            stats_h,
            norm_h.gamma,
            elu_c.numpy(),
            gates_,
            dc.numpy(),
            ds_next_,
            s.numpy(),
            stats_c,
            norm_c.gamma,
            c_,
            dz_,
            p.numpy(),
            stats_z,
            norm_z.gamma,
            grads_h,
            grads_c,
            grads_z,
            dp.numpy(),
            dc_prev.numpy(),
        )

        dha = dp @ w_ha  # [B, 2H]
        dw_ha = dp.T @ ha
        du = torch.empty_like(c)
        du_ = du.numpy()
        grads_a = np.empty((2, H), du_.dtype)
        _norm_elu_backward(dha.numpy(), H, elu_u_, 0, H, stats_a, norm_a.gamma, grads_a, du_)

        X = heads.view(H, B)  # the heads, rows in the window's (d, n) order
        g = torch.mm(w_o_heads.T, du.T).view_as(heads)  # [dh, nh, B]
        dw_o_heads, db_o = torch.mm(du.T, X.T), du.sum(0)
        K, V = win.entries(slots, pos_k, pos_v)
        grad_q, grad_scores = attention_loops.attend_backward(K, V, q, weights, g, grad_keys[slots], grad_values[slots])
        grad_pos_k = grad_pos_v = None
        if pos_k is not None:
            grad_pos_k, grad_pos_v = Window.positional_gradients(grad_scores, q, weights, g)
        d_pre_q = torch.empty_like(c)
        _query_backward(grad_q.numpy(), elu_q.numpy(), 1 / math.sqrt(q.shape[0]), d_pre_q.numpy())
        dh = torch.addmm(dha[:, :H], d_pre_q, w_qh)
        dw_qh = d_pre_q.T @ h
        grads = dict(
            xq=d_pre_q,
            xz=dp,
            h=dh,
            c=dc_prev,
            w_qh=dw_qh,
            w_o_heads=dw_o_heads,
            b_o=db_o,
            w_ha=dw_ha,
            w_kv=dw_kv,
            b_kv=db_kv,
            pos_k=grad_pos_k,
            pos_v=grad_pos_v,
        )
        norm_grads = [
            torch.from_numpy(g)
            for norm, (dgamma, dbeta) in zip(ctx.seq.norms, (grads_a, grads_z, grads_c, grads_h, *kv_grads))
            for g in ((dgamma, dbeta) if norm.shifts else (dgamma,))
        ]  # Sequence.params' order
        return None, None, *(grads[name] for name in INPUTS), *norm_grads


def _dense(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A contiguous gradient, detached; zeros for an output nothing downstream used."""
    return torch.zeros_like(like) if grad is None else grad.detach().contiguous()
