"""One LARNN layer's whole time loop as two Triton kernels, a forward and a backward (batch norm).

Per time step and layer the ops path launches dozens of kernels, each too small to fill a GPU;
here one program runs a layer's every step, the recurrence staying in registers: per step a few
[B, H] x [H, H] products, the window attention over the k cached keys and values, the gates and
six batch norms whose statistics are reduced across the batch inside the program (the program
holds the whole batch). The input projections of all steps stay one matrix product before the
loop (LARNNCell.project_inputs), as on every path.

    forward    per step t: q, attention over window slots t .. t+k-1 (an online softmax), a, z, the
               gates, c, n, h (dropout from masks drawn before the loop from the training's
               generator, in the order the ops path draws them), the new cell's key and value into
               slot t+k of the window buffers. Saves h and c of every step, and the batch statistics
               that the caller folds into the running ones.
    backward   the loop in reverse: each step's intermediates are recomputed from the saved h, c
               and window (cheaper than keeping ~20 [B, H] tensors per step), then differentiated.
               A key's and value's gradient is complete when its step comes, since every step that
               read the slot lies after it; the weights' gradients are summed in global memory.

Shapes are padded to powers of two (Triton's blocks): H to HP, heads to NHP, the batch to BP; padded
features have zero weights and zero gains so they stay zero, padded rows are left out of every
batch statistic. For the 2018 best (hidden 81, 27 heads of 3) HP = 128, NHP = 32.

On CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1 set before Triton is imported):
that is how the tests check them against reference.py without a GPU.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

if TYPE_CHECKING:
    from larnn_core.model import LARNNCell, StepWeights

# packed weights, x @ W[i] each [HP in, HP out]: W_H and W_A four each (gates g, f, i, o)
W_QH, W_O, W_H, W_A, W_K, W_V = (tl.constexpr(i) for i in (0, 1, 2, 6, 10, 11))
B_O, B_K, B_V = (tl.constexpr(i) for i in range(3))  # packed biases
# batch norms, one row of gains each: attention, z's four gate blocks, c, h, key, value
N_ATTN, N_Z, N_C, N_H, N_K, N_V = (tl.constexpr(i) for i in (0, 1, 5, 6, 7, 8))
N_NORMS = tl.constexpr(9)
# the one program's threads: the 2018 best's [256, 128] tiles are 64 values per thread at 16 warps;
# 8 is a first guess, to be set by measuring on a GPU (benchmarks/bench_larnn.py's fast_fused)
NUM_WARPS = 8


@triton.jit
def _elu(x):
    return tl.where(x > 0, x, tl.exp(tl.minimum(x, 0.0)) - 1)


@triton.jit
def _elu_grad(x):
    return tl.where(x > 0, 1.0, tl.exp(tl.minimum(x, 0.0)))


@triton.jit
def _dot(a, b):
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _dot_t(a, b):
    """a @ b.T"""
    return tl.dot(a, tl.trans(b), input_precision="ieee")


@triton.jit
def _t_dot(a, b):
    """a.T @ b"""
    return tl.dot(tl.trans(a), b, input_precision="ieee")


@triton.jit
def _matrix(w_ptr, i, HP: tl.constexpr):
    r = tl.arange(0, HP)
    return tl.load(w_ptr + i * HP * HP + r[:, None] * HP + r[None, :])


@triton.jit
def _add_matrix(w_ptr, i, x, HP: tl.constexpr):
    r = tl.arange(0, HP)
    at = w_ptr + i * HP * HP + r[:, None] * HP + r[None, :]
    tl.store(at, tl.load(at) + x)


@triton.jit
def _row(ptr, i, HP: tl.constexpr):
    return tl.load(ptr + i * HP + tl.arange(0, HP))


@triton.jit
def _add_row(ptr, i, x, HP: tl.constexpr):
    at = ptr + i * HP + tl.arange(0, HP)
    tl.store(at, tl.load(at) + x)


@triton.jit
def _tile(ptr, t, BP: tl.constexpr, HP: tl.constexpr):
    """Addresses of tile t of a [*, BP, HP] buffer."""
    rb, rh = tl.arange(0, BP), tl.arange(0, HP)
    return ptr + t * BP * HP + rb[:, None] * HP + rh[None, :]


@triton.jit
def _gate_tile(ptr, t, gate, BP: tl.constexpr, HP: tl.constexpr):
    """Addresses of gate block `gate` of step t in a [T, BP, 4 HP] buffer."""
    rb, rh = tl.arange(0, BP), tl.arange(0, HP)
    return ptr + t * BP * 4 * HP + rb[:, None] * 4 * HP + gate * HP + rh[None, :]


@triton.jit
def _norm(
    x,
    n,
    t,
    gains_ptr,
    running_ptr,
    stats_ptr,
    rows,
    B,
    S,
    eps,
    TRAINING: tl.constexpr,
    SAVE: tl.constexpr,
    HP: tl.constexpr,
):
    """Batch norm n of x [BP, HP] at step t -> (y, x-hat, rstd [HP]): the batch's statistics in
    training (saved for the running ones when SAVE), else the running ones of step t's row."""
    gamma, beta = _row(gains_ptr, n, HP), _row(gains_ptr, N_NORMS + n, HP)
    if TRAINING:
        mean = tl.sum(x * rows, axis=0) / B
        xc = (x - mean[None, :]) * rows
        var = tl.sum(xc * xc, axis=0) / B
        if SAVE:
            _add_row(stats_ptr, (t * 2) * N_NORMS + n, mean, HP)
            _add_row(stats_ptr, (t * 2 + 1) * N_NORMS + n, var, HP)
    else:
        row = tl.minimum(t, S - 1)
        mean, var = _row(running_ptr, n * S + row, HP), _row(running_ptr, (N_NORMS + n) * S + row, HP)
        xc = (x - mean[None, :]) * rows
    rstd = 1.0 / tl.sqrt(var + eps)
    xhat = xc * rstd[None, :]
    return xhat * gamma[None, :] + beta[None, :] * rows, xhat, rstd


@triton.jit
def _norm_backward(dy, xhat, rstd, n, gains_ptr, dgains_ptr, rows, B, TRAINING: tl.constexpr, HP: tl.constexpr):
    """dx of _norm; the gains' gradients are added into dgamma and dbeta (one program: no race)."""
    dy = dy * rows
    _add_row(dgains_ptr, n, tl.sum(dy * xhat, axis=0), HP)
    _add_row(dgains_ptr, N_NORMS + n, tl.sum(dy, axis=0), HP)
    dxhat = dy * _row(gains_ptr, n, HP)[None, :]
    if TRAINING:  # through the batch's statistics too
        mean_d = tl.sum(dxhat, axis=0) / B
        mean_dx = tl.sum(dxhat * xhat, axis=0) / B
        return (dxhat - mean_d[None, :] - xhat * mean_dx[None, :]) * rstd[None, :] * rows
    return dxhat * rstd[None, :]


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _gate(
    gate,
    t,
    xz_ptr,
    h_prev,
    a,
    w_ptr,
    gains_ptr,
    running_ptr,
    stats_ptr,
    rows,
    B,
    S,
    eps,
    TRAINING: tl.constexpr,
    SAVE: tl.constexpr,
    BP: tl.constexpr,
    HP: tl.constexpr,
):
    """One gate's block of z = Norm(W_x x + W_h h + W_a a): (z, x-hat, rstd)."""
    z = (
        tl.load(_gate_tile(xz_ptr, t, gate, BP, HP))
        + _dot(h_prev, _matrix(w_ptr, W_H + gate, HP))
        + _dot(a, _matrix(w_ptr, W_A + gate, HP))
    )
    return _norm(z, N_Z + gate, t, gains_ptr, running_ptr, stats_ptr, rows, B, S, eps, TRAINING, SAVE, HP)


@triton.jit
def _gate_backward(
    dz,
    z_hat,
    z_rstd,
    gate,
    t,
    h_prev,
    a,
    w_ptr,
    dw_ptr,
    dxz_ptr,
    gains_ptr,
    dgains_ptr,
    rows,
    B,
    TRAINING: tl.constexpr,
    BP: tl.constexpr,
    HP: tl.constexpr,
):
    """_gate's backward from dz (after the norm): stores xz's gradient, adds W_h's and W_a's, and
    returns h's and a's shares."""
    dz = _norm_backward(dz, z_hat, z_rstd, N_Z + gate, gains_ptr, dgains_ptr, rows, B, TRAINING, HP)
    tl.store(_gate_tile(dxz_ptr, t, gate, BP, HP), dz)
    _add_matrix(dw_ptr, W_H + gate, _t_dot(h_prev, dz), HP)
    _add_matrix(dw_ptr, W_A + gate, _t_dot(a, dz), HP)
    return _dot_t(dz, _matrix(w_ptr, W_H + gate, HP)), _dot_t(dz, _matrix(w_ptr, W_A + gate, HP))


@triton.jit
def _step(
    t,
    h_prev,
    c_prev,
    xq_ptr,
    xz_ptr,
    k_ptr,
    v_ptr,
    w_ptr,
    b_ptr,
    pos_ptr,
    gains_ptr,
    running_ptr,
    stats_ptr,
    drop_ptr,
    rows,
    B,
    S,
    eps,
    scale,
    K: tl.constexpr,
    BP: tl.constexpr,
    HP: tl.constexpr,
    NHP: tl.constexpr,
    H: tl.constexpr,
    DH: tl.constexpr,
    TRAINING: tl.constexpr,
    SAVE: tl.constexpr,
    ACT: tl.constexpr,
    DROP: tl.constexpr,
):
    """Step t from h_prev, c_prev [BP, HP] and window slots t .. t+K-1: every intermediate the
    backward differentiates (model.py's equations, in its order)."""
    f_idx, n_idx, r = tl.arange(0, HP), tl.arange(0, NHP), tl.arange(0, HP)
    m = ((f_idx[:, None] // DH == n_idx[None, :]) & (f_idx[:, None] < H)).to(tl.float32)  # [HP, NHP]: f's head
    mt = ((f_idx[None, :] // DH == n_idx[:, None]) & (f_idx[None, :] < H)).to(tl.float32)  # [NHP, HP]
    fmask = (f_idx < H).to(tl.float32)
    # q = ELU(W_q [x ; h] + b_q)
    q_pre = tl.load(_tile(xq_ptr, t, BP, HP)) + _dot(h_prev, _matrix(w_ptr, W_QH, HP))
    q = _elu(q_pre)  # [BP, HP]
    # MultiHead(q, K, V): an online softmax over the window's K slots, per head
    top = tl.full((BP, NHP), -float("inf"), tl.float32)
    total = tl.zeros((BP, NHP), tl.float32)
    acc = tl.zeros((BP, HP), tl.float32)
    for j in range(K):
        key = tl.load(_tile(k_ptr, t + j, BP, HP)) + tl.load(pos_ptr + j * HP + r)[None, :]
        value = tl.load(_tile(v_ptr, t + j, BP, HP)) + tl.load(pos_ptr + (K + j) * HP + r)[None, :]
        s = _dot(q * key, m) * scale  # [BP, NHP]
        new_top = tl.maximum(top, s)
        alpha, p = tl.exp(top - new_top), tl.exp(s - new_top)
        total = total * alpha + p
        acc = acc * _dot(alpha, mt) + _dot(p, mt) * value
        top = new_top
    heads = acc / (_dot(total, mt) + (1.0 - fmask[None, :]))  # [BP, HP]
    # a = Norm(ELU(W_o heads + b_o))
    u = _dot(heads, _matrix(w_ptr, W_O, HP)) + _row(b_ptr, B_O, HP)[None, :]
    a, a_hat, a_rstd = _norm(_elu(u), N_ATTN, t, gains_ptr, running_ptr, stats_ptr, rows, B, S, eps, TRAINING, SAVE, HP)
    # z = Norm(W_x x + [W_h W_a] [h ; a]), one block per gate
    zg, zg_hat, zg_rstd = _gate(
        0, t, xz_ptr, h_prev, a, w_ptr, gains_ptr, running_ptr, stats_ptr, rows, B, S, eps, TRAINING, SAVE, BP, HP
    )
    zf, zf_hat, zf_rstd = _gate(
        1, t, xz_ptr, h_prev, a, w_ptr, gains_ptr, running_ptr, stats_ptr, rows, B, S, eps, TRAINING, SAVE, BP, HP
    )
    zi, zi_hat, zi_rstd = _gate(
        2, t, xz_ptr, h_prev, a, w_ptr, gains_ptr, running_ptr, stats_ptr, rows, B, S, eps, TRAINING, SAVE, BP, HP
    )
    zo, zo_hat, zo_rstd = _gate(
        3, t, xz_ptr, h_prev, a, w_ptr, gains_ptr, running_ptr, stats_ptr, rows, B, S, eps, TRAINING, SAVE, BP, HP
    )
    g, f, i, o = 2.0 * _sigmoid(2.0 * zg) - 1.0, _sigmoid(zf), _sigmoid(zi), _sigmoid(zo)
    # c = g i + c f (carried), n = Norm(c), h = Dropout(Norm(o ELU(n)))
    c = (g * i + c_prev * f) * rows
    n, n_hat, n_rstd = _norm(c, N_C, t, gains_ptr, running_ptr, stats_ptr, rows, B, S, eps, TRAINING, SAVE, HP)
    h, h_hat, h_rstd = _norm(
        o * _elu(n), N_H, t, gains_ptr, running_ptr, stats_ptr, rows, B, S, eps, TRAINING, SAVE, HP
    )
    if DROP:
        h = h * tl.load(_tile(drop_ptr, t, BP, HP))
    # the new cell's key and value: f_k(W_k n + b_k), f_v(W_v n + b_v)
    k_pre = _dot(n, _matrix(w_ptr, W_K, HP)) + _row(b_ptr, B_K, HP)[None, :]
    v_pre = _dot(n, _matrix(w_ptr, W_V, HP)) + _row(b_ptr, B_V, HP)[None, :]
    if ACT:
        k_new, k_hat, k_rstd = _norm(
            _elu(k_pre), N_K, t, gains_ptr, running_ptr, stats_ptr, rows, B, S, eps, TRAINING, SAVE, HP
        )
        v_new, v_hat, v_rstd = _norm(
            _elu(v_pre), N_V, t, gains_ptr, running_ptr, stats_ptr, rows, B, S, eps, TRAINING, SAVE, HP
        )
    else:
        k_new, k_hat, k_rstd = k_pre * rows, k_pre, a_rstd
        v_new, v_hat, v_rstd = v_pre * rows, v_pre, a_rstd
    return (
        q_pre,
        q,
        top,
        total,
        heads,
        u,
        a,
        a_hat,
        a_rstd,
        zg_hat,
        zg_rstd,
        zf_hat,
        zf_rstd,
        zi_hat,
        zi_rstd,
        zo_hat,
        zo_rstd,
        g,
        f,
        i,
        o,
        c,
        n,
        n_hat,
        n_rstd,
        h_hat,
        h_rstd,
        h,
        k_pre,
        k_hat,
        k_rstd,
        v_pre,
        v_hat,
        v_rstd,
        k_new,
        v_new,
        m,
        mt,
    )


@triton.jit
def _forward(
    xq_ptr,
    xz_ptr,
    k_ptr,
    v_ptr,
    w_ptr,
    b_ptr,
    pos_ptr,
    gains_ptr,
    running_ptr,
    stats_ptr,
    drop_ptr,
    hs_ptr,
    cs_ptr,
    T,
    B,
    S,
    eps,
    scale,
    K: tl.constexpr,
    BP: tl.constexpr,
    HP: tl.constexpr,
    NHP: tl.constexpr,
    H: tl.constexpr,
    DH: tl.constexpr,
    TRAINING: tl.constexpr,
    ACT: tl.constexpr,
    DROP: tl.constexpr,
):
    rows = (tl.arange(0, BP) < B).to(tl.float32)[:, None]
    h = tl.zeros((BP, HP), tl.float32)
    c = tl.zeros((BP, HP), tl.float32)
    for t in range(T):
        (
            q_pre,
            q,
            top,
            total,
            heads,
            u,
            a,
            a_hat,
            a_rstd,
            zg_hat,
            zg_rstd,
            zf_hat,
            zf_rstd,
            zi_hat,
            zi_rstd,
            zo_hat,
            zo_rstd,
            g,
            f,
            i,
            o,
            c,
            n,
            n_hat,
            n_rstd,
            h_hat,
            h_rstd,
            h,
            k_pre,
            k_hat,
            k_rstd,
            v_pre,
            v_hat,
            v_rstd,
            k_new,
            v_new,
            m,
            mt,
        ) = _step(
            t,
            h,
            c,
            xq_ptr,
            xz_ptr,
            k_ptr,
            v_ptr,
            w_ptr,
            b_ptr,
            pos_ptr,
            gains_ptr,
            running_ptr,
            stats_ptr,
            drop_ptr,
            rows,
            B,
            S,
            eps,
            scale,
            K,
            BP,
            HP,
            NHP,
            H,
            DH,
            TRAINING,
            TRAINING,
            ACT,
            DROP,
        )
        tl.store(_tile(k_ptr, t + K, BP, HP), k_new)  # the new cell enters the window
        tl.store(_tile(v_ptr, t + K, BP, HP), v_new)
        tl.store(_tile(hs_ptr, t, BP, HP), h)
        tl.store(_tile(cs_ptr, t, BP, HP), c)
        tl.debug_barrier()  # the next step reads the slot just written


@triton.jit
def _backward(
    xq_ptr,
    xz_ptr,
    k_ptr,
    v_ptr,
    w_ptr,
    b_ptr,
    pos_ptr,
    gains_ptr,
    running_ptr,
    drop_ptr,
    hs_ptr,
    cs_ptr,
    dhs_ptr,
    dxq_ptr,
    dxz_ptr,
    dk_ptr,
    dv_ptr,
    dw_ptr,
    db_ptr,
    dpos_ptr,
    dgains_ptr,
    T,
    B,
    S,
    eps,
    scale,
    K: tl.constexpr,
    BP: tl.constexpr,
    HP: tl.constexpr,
    NHP: tl.constexpr,
    H: tl.constexpr,
    DH: tl.constexpr,
    TRAINING: tl.constexpr,
    ACT: tl.constexpr,
    DROP: tl.constexpr,
):
    rows = (tl.arange(0, BP) < B).to(tl.float32)[:, None]
    r = tl.arange(0, HP)
    dh_next = tl.zeros((BP, HP), tl.float32)  # what step t+1 sent back to h_t and c_t
    dc_next = tl.zeros((BP, HP), tl.float32)
    for back in range(T):
        t = T - 1 - back
        later = (t > 0).to(tl.float32)  # step 0 starts from zeros
        h_prev = tl.load(_tile(hs_ptr, tl.maximum(t - 1, 0), BP, HP)) * later
        c_prev = tl.load(_tile(cs_ptr, tl.maximum(t - 1, 0), BP, HP)) * later
        (
            q_pre,
            q,
            top,
            total,
            heads,
            u,
            a,
            a_hat,
            a_rstd,
            zg_hat,
            zg_rstd,
            zf_hat,
            zf_rstd,
            zi_hat,
            zi_rstd,
            zo_hat,
            zo_rstd,
            g,
            f,
            i,
            o,
            c,
            n,
            n_hat,
            n_rstd,
            h_hat,
            h_rstd,
            h,
            k_pre,
            k_hat,
            k_rstd,
            v_pre,
            v_hat,
            v_rstd,
            k_new,
            v_new,
            m,
            mt,
        ) = _step(
            t,
            h_prev,
            c_prev,
            xq_ptr,
            xz_ptr,
            k_ptr,
            v_ptr,
            w_ptr,
            b_ptr,
            pos_ptr,
            gains_ptr,
            running_ptr,
            running_ptr,
            drop_ptr,
            rows,
            B,
            S,
            eps,
            scale,
            K,
            BP,
            HP,
            NHP,
            H,
            DH,
            TRAINING,
            False,
            ACT,
            DROP,
        )
        # h
        dh = tl.load(_tile(dhs_ptr, t, BP, HP)) + dh_next
        if DROP:
            dh = dh * tl.load(_tile(drop_ptr, t, BP, HP))
        dm = _norm_backward(dh, h_hat, h_rstd, N_H, gains_ptr, dgains_ptr, rows, B, TRAINING, HP)
        do = dm * _elu(n)
        dn = dm * o * _elu_grad(n)
        # the new cell's key and value: their slot's gradient is complete (every reader came later)
        dk_new = tl.load(_tile(dk_ptr, t + K, BP, HP))
        dv_new = tl.load(_tile(dv_ptr, t + K, BP, HP))
        if ACT:
            dk_pre = _norm_backward(
                dk_new, k_hat, k_rstd, N_K, gains_ptr, dgains_ptr, rows, B, TRAINING, HP
            ) * _elu_grad(k_pre)
            dv_pre = _norm_backward(
                dv_new, v_hat, v_rstd, N_V, gains_ptr, dgains_ptr, rows, B, TRAINING, HP
            ) * _elu_grad(v_pre)
        else:
            dk_pre, dv_pre = dk_new * rows, dv_new * rows
        dn += _dot_t(dk_pre, _matrix(w_ptr, W_K, HP)) + _dot_t(dv_pre, _matrix(w_ptr, W_V, HP))
        _add_matrix(dw_ptr, W_K, _t_dot(n, dk_pre), HP)
        _add_matrix(dw_ptr, W_V, _t_dot(n, dv_pre), HP)
        _add_row(db_ptr, B_K, tl.sum(dk_pre, axis=0), HP)
        _add_row(db_ptr, B_V, tl.sum(dv_pre, axis=0), HP)
        # c and the gates
        dc = _norm_backward(dn, n_hat, n_rstd, N_C, gains_ptr, dgains_ptr, rows, B, TRAINING, HP) + dc_next
        dc_next = dc * f * rows
        dh_prev, da = _gate_backward(
            dc * i * (1 - g * g),
            zg_hat,
            zg_rstd,
            0,
            t,
            h_prev,
            a,
            w_ptr,
            dw_ptr,
            dxz_ptr,
            gains_ptr,
            dgains_ptr,
            rows,
            B,
            TRAINING,
            BP,
            HP,
        )
        dh_gate, da_gate = _gate_backward(
            dc * c_prev * f * (1 - f),
            zf_hat,
            zf_rstd,
            1,
            t,
            h_prev,
            a,
            w_ptr,
            dw_ptr,
            dxz_ptr,
            gains_ptr,
            dgains_ptr,
            rows,
            B,
            TRAINING,
            BP,
            HP,
        )
        dh_prev, da = dh_prev + dh_gate, da + da_gate
        dh_gate, da_gate = _gate_backward(
            dc * g * i * (1 - i),
            zi_hat,
            zi_rstd,
            2,
            t,
            h_prev,
            a,
            w_ptr,
            dw_ptr,
            dxz_ptr,
            gains_ptr,
            dgains_ptr,
            rows,
            B,
            TRAINING,
            BP,
            HP,
        )
        dh_prev, da = dh_prev + dh_gate, da + da_gate
        dh_gate, da_gate = _gate_backward(
            do * o * (1 - o),
            zo_hat,
            zo_rstd,
            3,
            t,
            h_prev,
            a,
            w_ptr,
            dw_ptr,
            dxz_ptr,
            gains_ptr,
            dgains_ptr,
            rows,
            B,
            TRAINING,
            BP,
            HP,
        )
        dh_prev, da = dh_prev + dh_gate, da + da_gate
        # a
        du = _norm_backward(da, a_hat, a_rstd, N_ATTN, gains_ptr, dgains_ptr, rows, B, TRAINING, HP) * _elu_grad(u)
        _add_matrix(dw_ptr, W_O, _t_dot(heads, du), HP)
        _add_row(db_ptr, B_O, tl.sum(du, axis=0), HP)
        dheads = _dot_t(du, _matrix(w_ptr, W_O, HP))
        # the attention: softmax weights again from the forward's maximum and sum, then two passes
        pdp = tl.zeros((BP, NHP), tl.float32)
        for j in range(K):
            key = tl.load(_tile(k_ptr, t + j, BP, HP)) + tl.load(pos_ptr + j * HP + r)[None, :]
            value = tl.load(_tile(v_ptr, t + j, BP, HP)) + tl.load(pos_ptr + (K + j) * HP + r)[None, :]
            p = tl.exp(_dot(q * key, m) * scale - top) / total
            pdp += p * _dot(dheads * value, m)
        dq = tl.zeros((BP, HP), tl.float32)
        for j in range(K):
            key = tl.load(_tile(k_ptr, t + j, BP, HP)) + tl.load(pos_ptr + j * HP + r)[None, :]
            value = tl.load(_tile(v_ptr, t + j, BP, HP)) + tl.load(pos_ptr + (K + j) * HP + r)[None, :]
            p = tl.exp(_dot(q * key, m) * scale - top) / total
            ds = _dot(p * (_dot(dheads * value, m) - pdp) * scale, mt)  # [BP, HP]
            dq += ds * key
            dkey = ds * q * rows
            dvalue = _dot(p, mt) * dheads * rows
            dk_at = _tile(dk_ptr, t + j, BP, HP)
            dv_at = _tile(dv_ptr, t + j, BP, HP)
            tl.store(dk_at, tl.load(dk_at) + dkey)
            tl.store(dv_at, tl.load(dv_at) + dvalue)
            _add_row(dpos_ptr, j, tl.sum(dkey, axis=0), HP)
            _add_row(dpos_ptr, K + j, tl.sum(dvalue, axis=0), HP)
        # q
        dq_pre = dq * _elu_grad(q_pre) * rows
        tl.store(_tile(dxq_ptr, t, BP, HP), dq_pre)
        dh_prev += _dot_t(dq_pre, _matrix(w_ptr, W_QH, HP))
        _add_matrix(dw_ptr, W_QH, _t_dot(h_prev, dq_pre), HP)
        dh_next = dh_prev * rows
        tl.debug_barrier()  # the next (earlier) step reads gradients this one added


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))  # tl.dot wants every side >= 16


def _pad(x: torch.Tensor, *sizes: int) -> torch.Tensor:
    """x padded with zeros at the end of each of its last len(sizes) axes to those sizes."""
    widths = []
    for size, have in zip(reversed(sizes), reversed(x.shape[-len(sizes) :])):
        widths += [0, size - have]
    return F.pad(x, widths)


class _Layer(torch.autograd.Function):
    """The padded layer: xq [T, BP, HP], xz [T, BP, 4 HP], weights [12, HP, HP], biases [3, HP],
    positional terms [2, K, HP], the norms' gains (gamma and beta) [2, 9, HP] -> h of every step
    [T, BP, HP]. `fixed` holds what has no gradient: running statistics [2, 9, S, HP], dropout
    multipliers [T, BP, HP] or None, the buffer for the batch statistics, the sizes and switches."""

    @staticmethod
    def forward(ctx, xq, xz, weights, biases, pos, gains, fixed):
        running, drop, stats, B, eps, K, H, DH, training, act = fixed
        T, BP, HP = xq.shape
        keys, values = xq.new_zeros(K + T, BP, HP), xq.new_zeros(K + T, BP, HP)  # the first K slots: empty
        hs, cs = torch.empty_like(xq), torch.empty_like(xq)
        ctx.sizes = (T, B, running.shape[2], eps, 1 / math.sqrt(DH))
        ctx.meta = dict(K=K, BP=BP, HP=HP, NHP=_pow2(H // DH), H=H, DH=DH, TRAINING=training, ACT=act)
        ctx.meta["DROP"] = drop is not None
        drop = xq if drop is None else drop  # any pointer: DROP=False never reads it
        inputs = (xq, xz, keys, values, weights, biases, pos, gains, running)
        _forward[(1,)](*inputs, stats, drop, hs, cs, *ctx.sizes, **ctx.meta, num_warps=NUM_WARPS)
        ctx.save_for_backward(*inputs, drop, hs, cs)
        return hs

    @staticmethod
    def backward(ctx, grad_hs):
        *inputs, drop, hs, cs = ctx.saved_tensors
        grads = [torch.zeros_like(x) for x in inputs[:-1]]  # xq .. gains (the running statistics have none)
        _backward[(1,)](
            *inputs, drop, hs, cs, grad_hs.contiguous(), *grads, *ctx.sizes, **ctx.meta, num_warps=NUM_WARPS
        )
        dxq, dxz, _, _, dweights, dbiases, dpos, dgains = grads
        return dxq, dxz, dweights, dbiases, dpos, dgains, None


def _norm_rows(weights: StepWeights, H: int) -> list[tuple[torch.nn.Module, slice]]:
    """The cell's batch norms in the kernels' order (N_ATTN ..) as (module, its features): nine, or
    seven without activation_on_keys_and_values (no key and value norms, which ACT=False never reads)."""
    attn, z, c, h, *kv = weights.norms
    gates = [(z, slice(i * H, (i + 1) * H)) for i in range(4)]
    whole = slice(0, H)
    return [(attn, whole), *gates, (c, whole), (h, whole), *[(n, whole) for n in kv]]


def layer(cell: LARNNCell, weights: StepWeights, xq: torch.Tensor, xz: torch.Tensor) -> torch.Tensor:
    """The layer's hidden sequence [B, T, H] from its projected inputs xq [B, T, H], xz [B, T, 4H],
    through the kernels; training moves the batch norms' running statistics as the ops path does.
    Dropout masks come from the cell's generator in the ops path's order (from torch's global one,
    without a generator: the same distribution, other draws than nn.Dropout's)."""
    B, T, H = xq.shape
    K = cell.window_size
    BP, HP = _pow2(B), _pow2(H)
    w_h, w_a = weights.w_ha[:, :H].reshape(4, H, H), weights.w_ha[:, H:].reshape(4, H, H)  # a block per gate
    matrices = (weights.w_qh, weights.w_o, *w_h, *w_a, *weights.w_kv.chunk(2))  # W_QH .. W_V
    packed = torch.stack([_pad(w.T, HP, HP) for w in matrices])  # x @ packed[i] = x W^T
    biases = _pad(torch.stack([weights.b_o, *weights.b_kv.chunk(2)]), HP)  # B_O, B_K, B_V
    none = xq.new_zeros(K, H)
    pos = _pad(torch.stack([none if p is None else p for p in (weights.pos_k, weights.pos_v)]), HP)
    rows = _norm_rows(weights, H)
    S = weights.norms[0].steps
    gamma = torch.stack([norm.weight[f] for norm, f in rows])
    beta = torch.stack([norm.weight.new_zeros(H) if norm.bias is None else norm.bias[f] for norm, f in rows])
    mean = torch.stack([norm.running_mean[:, f] for norm, f in rows])
    var = torch.stack([norm.running_var[:, f] for norm, f in rows])
    drop = None
    if weights.dropout > 0:
        keep = [
            torch.rand((B, H), generator=weights.generator, device=xq.device, dtype=xq.dtype) >= weights.dropout
            for _ in range(T)
        ]
        drop = _pad(torch.stack(keep).to(xq.dtype) / (1 - weights.dropout), BP, HP).contiguous()
    stats = xq.new_zeros(T, 2, N_NORMS.value, HP)  # the batch statistics of every step, in training
    running = _pad(torch.stack([mean, var]), N_NORMS.value, S, HP).contiguous()  # [2, 9, S, HP]
    training = weights.norms[0].training  # the norms' mode, not the cell's: statistics.refresh trains norms alone
    act = len(rows) == N_NORMS.value  # keys and values normalised
    fixed = (running, drop, stats, B, weights.norms[0].eps, K, H, H // cell.heads, training, act)
    xq_p = _pad(xq.transpose(0, 1), BP, HP).contiguous()  # [T, BP, HP]
    xz_p = _pad(xz.transpose(0, 1).reshape(T, B, 4, H), BP, 4, HP).reshape(T, BP, 4 * HP).contiguous()
    gains = _pad(torch.stack([gamma, beta]), N_NORMS.value, HP).contiguous()  # [2, 9, HP]
    hs = _Layer.apply(xq_p, xz_p, packed.contiguous(), biases.contiguous(), pos.contiguous(), gains, fixed)
    if training:
        _move_running_statistics(rows, stats[..., :H], B)
    return hs[:, :B, :H].transpose(0, 1)


@torch.no_grad()
def _move_running_statistics(rows: list[tuple[torch.nn.Module, slice]], stats: torch.Tensor, B: int) -> None:
    """Row t of each norm's running statistics moved by step t's batch statistics, as StepBatchNorm
    moves them step by step (steps past its last row all move the last row, in turn)."""
    T = stats.shape[0]
    for i, (norm, features) in enumerate(rows):
        mean, var = stats[:, 0, i], stats[:, 1, i] * B / max(B - 1, 1)  # unbiased, as torch's
        own = min(T, norm.steps - 1)  # steps with a row of their own
        norm.running_mean[:own, features].lerp_(mean[:own], norm.momentum)
        norm.running_var[:own, features].lerp_(var[:own], norm.momentum)
        for t in range(own, T):
            norm.running_mean[-1, features].lerp_(mean[t], norm.momentum)
            norm.running_var[-1, features].lerp_(var[t], norm.momentum)
