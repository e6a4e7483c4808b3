"""LARNN: an LSTM-style cell that attends over a FIFO window of its own last k cell states.

One layer, one time step t, input x_t, previous hidden h, previous cell c:

    q    = ELU(W_q [x_t ; h] + b_q)                                  one query per step
    K_j  = f_k(W_k c_j + b_k) + P_k pe(d_j)                           key of window cell j
    V_j  = f_v(W_v c_j + b_v) + P_v pe(d_j)                           value of window cell j
    a    = Norm(ELU(W_o MultiHead(q, K, V)))
    z    = Norm(W_x x_t + W_h h + W_a a + b)          larnn_mode="residual"
         | Norm(W [x_t ; h ; a] + b)                  larnn_mode="layer"
    g, f, i, o = tanh(z0), sigmoid(z1), sigmoid(z2), sigmoid(z3)
    c_t  = g * i + c * f                              the carried cell, not normalised
    n_t  = Norm(c_t)                                  the cell as the layer reads it
    h_t  = Dropout(Norm(o * ELU(n_t)))                then n_t enters the window, the oldest leaves

The carried cell is normalised only where it is read (as in recurrent batch normalisation,
Cooijmans et al. 2016, and layer-normalised LSTMs, Ba et al. 2016): its recurrence then has gain
f < 1 in training and evaluation alike. Normalised in the recurrence (the 2018 description's
c_t = Norm(g * i + c * f)), evaluation's fixed statistics turn the norm into an affine map of
gain gamma / sigma, above 1 for some features; a sequence whose forget gate saturates there
grows geometrically (x1.1 a step, 1e5 by step 127, measured), where training's batch statistics
renormalised it every step. Batch norms keep statistics per time step (StepBatchNorm).

f_k, f_v are Norm(ELU(.)) with separate norms when activation_on_keys_and_values, else identity.
Each cell is projected into its key and value once, when it enters the window, and that
projection is kept in the layer's Window (execution/window.py: one buffer per sequence, attention
with a hand-written backward); 2018 defect 4 (the defects: docs/design.md, section 2) re-projected the
whole window at every step. Positional encoding: sine/cosine features pe(d) of a slot's distance
d back in time, concatenated to the cell features; being linear, W [n ; pe] splits into the
cached cell part and a per-slot term P pe(d). Empty slots (before the sequence start) hold zero
key/value features.

How a step executes is chosen by the model's Execution, once per sequence and layer, through one
seam (execution/cell_step.py): with batch norm on CPU each step is one autograd Function of numba
loops with a hand-written backward (execution/step_loops.py); elsewhere LARNNCell.step's ops
below, through autograd (LARNNCell.update compiled by torch.compile on CUDA). With the fused
kernel asked for, the seam runs the layer's whole time loop as two Triton kernels instead
(execution/fused_layer.py).

Every sub-module is registered (nn.ModuleList, 2018 defect 1); each layer has its own cell and
its own state, and layer l+1 reads layer l's hidden sequence (2018 defects 2 and 6).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from larnn_core.dropout import Dropout
from larnn_core.execution import Execution
from larnn_core.execution.cell_step import attention, cell_step, whole_layer
from larnn_core.execution.window import Window
from larnn_core.hparams import MODES, NORMS, SEQUENCE_STEPS


class StepBatchNorm(nn.Module):
    """Batch norm with population statistics per time step (recurrent batch normalisation,
    Cooijmans et al. 2016): training normalises with the batch's statistics at each step, as
    nn.BatchNorm1d does, and moves row t of the running statistics; evaluation normalises step t
    with row t. Steps past the last row use the last row.

    Why not one set of statistics shared by all steps: it is moved at every step of every
    batch, so with momentum 0.1 it ends up describing the last ~20 steps of the epoch's last
    batch. Early steps (where h, c and the window still grow from zero) are then mis-scaled in
    evaluation, and through the recurrence (c feeds back through a fixed affine map instead of
    one that renormalises each step) the error can compound into overflow."""

    def __init__(self, features: int, steps: int, shift: bool = True, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.steps, self.momentum, self.eps = features, steps, momentum, eps
        self.weight = nn.Parameter(torch.ones(features))  # gamma
        self.bias = nn.Parameter(torch.zeros(features)) if shift else None  # beta
        self.register_buffer("running_mean", torch.zeros(steps, features))  # [steps, F]
        self.register_buffer("running_var", torch.ones(steps, features))

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """x [B, F] at time step t; training moves row t of the running statistics in place."""
        row = min(t, self.steps - 1)
        return F.batch_norm(
            x,
            self.running_mean[row],
            self.running_var[row],
            self.weight,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )


class LayerNorm(nn.LayerNorm):
    """Layer norm, the same at every time step."""

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        return super().forward(x)


class NoNorm(nn.Module):
    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        return x


def make_norm(kind: str, features: int, steps: int, shift: bool = True) -> nn.Module:
    """Normalisation over the feature axis of a [B, features] tensor at a time step, norm(x, t);
    batch is the 2018 default. shift=False drops a batch norm's bias where a later batch norm
    would cancel it (dead weight)."""
    if kind == "batch":
        return StepBatchNorm(features, steps, shift)
    if kind == "layer":
        return LayerNorm(features)
    if kind == "none":
        return NoNorm()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def positional_features(window_size: int) -> torch.Tensor:
    """pe(d) for the window slots, oldest first (d = k .. 1): sin/cos at periods 2, 4, .. >= 4k."""
    n_periods = max(1, math.ceil(math.log2(4 * window_size)))
    periods = 2.0 ** torch.arange(1, n_periods + 1, dtype=torch.float64)  # [P]
    distance = torch.arange(window_size, 0, -1, dtype=torch.float64)[:, None]  # [k, 1]
    angle = 2 * math.pi * distance / periods  # [k, P]
    return torch.cat([angle.sin(), angle.cos()], dim=1).float()  # [k, 2P]


class StepWeights(NamedTuple):
    """What every step of a sequence uses, cut and joined once per sequence: the one bundle that
    either execution path reads (the numba loops take nothing else from the cell)."""

    w_qh: torch.Tensor  # [H, H] the h-part of W_q
    w_o: torch.Tensor  # [H, H] W_o
    b_o: torch.Tensor  # [H]
    w_ha: torch.Tensor  # [4H, 2H] the [h ; a] part of the gate weights (residual: [W_h  W_a])
    w_kv: torch.Tensor  # [2H, H] W_k and W_v stacked: one product per new cell
    b_kv: torch.Tensor  # [2H]
    pos_k: torch.Tensor | None  # [k, H] per-slot positional terms P_k pe(d), or None
    pos_v: torch.Tensor | None
    norms: tuple[nn.Module, ...]  # attn, z, c, h, then key and value when activation_on_keys_and_values
    dropout: float  # the drop probability of h in training, 0 in evaluation
    generator: torch.Generator | None  # where dropout masks come from (None: torch's global generator)


class CellState(NamedTuple):
    h: torch.Tensor  # [B, H]
    c: torch.Tensor  # [B, H]
    window: Window  # projected keys and values of the last k cells; advanced in place by its push()


class LARNNCell(nn.Module):
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        attention_heads: int,
        window_size: int,
        larnn_mode: str = "residual",
        use_positional_encoding: bool = False,
        activation_on_keys_and_values: bool = True,
        dropout: float = 0.0,
        norm: str = "batch",
        steps: int = SEQUENCE_STEPS,
        generator: torch.Generator | None = None,
    ):
        """steps: time steps that keep batch norm statistics of their own (StepBatchNorm);
        generator: the training's own, for dropout masks (larnn_core/dropout.py)."""
        super().__init__()
        if hidden_size % attention_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by attention_heads ({attention_heads})")
        if window_size < 1:
            raise ValueError(f"larnn_window_size must be >= 1, got {window_size}")
        if larnn_mode not in MODES:
            raise ValueError(f"larnn_mode must be one of {MODES}, got {larnn_mode!r}")
        H = hidden_size
        self.input_size, self.hidden_size, self.heads = input_size, H, attention_heads
        self.window_size, self.larnn_mode = window_size, larnn_mode
        self.activation_on_keys_and_values, self.norm = activation_on_keys_and_values, norm

        self.query = nn.Linear(input_size + H, H)  # W_q [x ; h]
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)
        self.attn_out = nn.Linear(H, H)  # W_o
        # one bias b, and none in front of a batch norm, which would cancel it (a dead parameter)
        bias = norm != "batch"
        if larnn_mode == "residual":
            self.gates_x = nn.Linear(input_size, 4 * H, bias=bias)
            self.gates_h = nn.Linear(H, 4 * H, bias=False)
            self.gates_a = nn.Linear(H, 4 * H, bias=False)
        else:
            self.gates = nn.Linear(input_size + 2 * H, 4 * H, bias=bias)  # W [x ; h ; a]
        if use_positional_encoding:
            pe = positional_features(window_size)
            self.register_buffer("pe", pe, persistent=False)  # [k, 2P]
            self.pos_key = nn.Linear(pe.shape[1], H, bias=False)  # P_k
            self.pos_value = nn.Linear(pe.shape[1], H, bias=False)  # P_v
        kv_norm = norm if activation_on_keys_and_values else "none"
        self.norm_key = make_norm(kv_norm, H, steps)
        self.norm_value = make_norm(kv_norm, H, steps)
        self.norm_attn = make_norm(norm, H, steps, shift=False)  # a reaches z only linearly, and z is normalised
        self.norm_z = make_norm(norm, 4 * H, steps)
        self.norm_c = make_norm(norm, H, steps)
        self.norm_h = make_norm(norm, H, steps)
        self.dropout = Dropout(dropout, generator)

    @property
    def use_positional_encoding(self) -> bool:
        return hasattr(self, "pe")

    def initial_state(
        self, batch: int, steps: int, device=None, dtype=None, execution: Execution = Execution()
    ) -> CellState:
        """Zero h and c, and an empty window with room for `steps` pushes."""
        zeros = torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)
        window = Window(
            batch, self.hidden_size, self.heads, self.window_size, steps, attention(execution, zeros), device, dtype
        )
        return CellState(zeros, zeros, window)

    def project_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input-side parts of the query and the gates for all steps at once: x [B, T, I]."""
        I = self.input_size  # noqa: E741 (the equations' name)
        xq = F.linear(x, self.query.weight[:, :I], self.query.bias)  # [B, T, H]
        if self.larnn_mode == "residual":
            xz = self.gates_x(x)  # [B, T, 4H]
        else:
            xz = F.linear(x, self.gates.weight[:, :I], self.gates.bias)
        return xq, xz

    def step_weights(self) -> StepWeights:
        I = self.input_size  # noqa: E741 (the equations' name)
        if self.larnn_mode == "residual":
            w_ha = torch.cat([self.gates_h.weight, self.gates_a.weight], dim=1)
        else:
            w_ha = self.gates.weight[:, I:]
        pos_k = pos_v = None
        if self.use_positional_encoding:
            pos_k, pos_v = self.pos_key(self.pe), self.pos_value(self.pe)
        norms = (self.norm_attn, self.norm_z, self.norm_c, self.norm_h)
        if self.activation_on_keys_and_values:
            norms += (self.norm_key, self.norm_value)
        return StepWeights(
            self.query.weight[:, I:],
            self.attn_out.weight,
            self.attn_out.bias,
            w_ha,
            torch.cat([self.key.weight, self.value.weight]),
            torch.cat([self.key.bias, self.value.bias]),
            pos_k,
            pos_v,
            norms,
            self.dropout.p if self.training else 0.0,
            self.dropout.generator,
        )

    def update(
        self, heads: torch.Tensor, h: torch.Tensor, c: torch.Tensor, xz: torch.Tensor, weights: StepWeights, t: int
    ) -> tuple[torch.Tensor, ...]:
        """Everything between the attention and the window of one step, as one function (so that
        torch.compile can fuse it: execution/torch_compile.py): heads [B, H] -> new h (before
        dropout) and carried c [B, H], the normalised pre-activation z [B, 4H], and the new cell's
        key and value [B, H] for the window; t is the time step, whose batch norm statistics are
        used."""
        H = self.hidden_size
        a = self.norm_attn(F.elu(self.attn_out(heads)), t)  # [B, H]
        z = self.norm_z(torch.addmm(xz, torch.cat([h, a], dim=1), weights.w_ha.T), t)  # [B, 4H]
        g, f, i, o = torch.tanh(z[:, :H]), *torch.sigmoid(z[:, H:]).chunk(3, dim=1)
        c = torch.addcmul(g * i, c, f)  # the carried cell
        n = self.norm_c(c, t)  # the cell as h and the window read it
        h = self.norm_h(o * F.elu(n), t)
        kv = F.linear(n, weights.w_kv, weights.b_kv)  # [B, 2H]: W_k n + b_k and W_v n + b_v, once per cell
        if self.activation_on_keys_and_values:
            kv = F.elu(kv)
        k_new, v_new = kv.chunk(2, dim=1)
        return h, c, z, self.norm_key(k_new, t), self.norm_value(v_new, t)  # no norms without the activation

    def step(
        self, xq: torch.Tensor, xz: torch.Tensor, state: CellState, weights: StepWeights, update=None
    ) -> tuple[CellState, torch.Tensor]:
        """One step through torch ops, from pre-projected inputs (project_inputs); update is
        LARNNCell.update or its compiled form. Returns the new state, whose window now holds the
        new cell, and the normalised pre-activation z [B, 4H]."""
        q = F.elu(torch.addmm(xq, state.h, weights.w_qh.T))  # [B, H]
        heads = state.window.attend(q, weights.pos_k, weights.pos_v)  # [B, H]: MultiHead(q, K, V)
        h, c, z, k_new, v_new = (update or LARNNCell.update)(
            self, heads, state.h, state.c, xz, weights, state.window.pushed
        )
        state.window.push(k_new, v_new)  # c enters the window; the oldest cell leaves
        return CellState(self.dropout(h), c, state.window), z  # z is used (2018 defect 3 dropped it)

    def forward(self, x: torch.Tensor, execution: Execution = Execution()) -> torch.Tensor:
        """The layer over a sequence, x [B, T, I] -> hidden sequence [B, T, H], from a fresh state;
        the steps run as the seam (execution/cell_step.py) chooses once for this sequence."""
        B, T, _ = x.shape
        xq, xz = self.project_inputs(x)
        fused = whole_layer(self, execution, x)
        if fused is not None:
            return fused(xq, xz)
        state = self.initial_state(B, T, x.device, x.dtype, execution)
        step = cell_step(self, self.step_weights(), execution, x)
        hs = []
        for xq_t, xz_t in zip(xq.unbind(1), xz.unbind(1)):  # unbind: one backward, not T
            state, _ = step(xq_t, xz_t, state)
            hs.append(state.h)
        state.window.close()
        return torch.stack(hs, dim=1)


class LARNN(nn.Module):
    """A stack of LARNN layers over a [B, T, H] sequence; layer l+1 reads layer l's hidden sequence."""

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        is_stacked_residual: bool = False,
        execution: Execution = Execution(),
        **cell_kwargs,
    ):
        """execution: how the steps run (execution/choice.py); training sets it from resolve()."""
        super().__init__()
        self.execution = execution
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.cells = nn.ModuleList(LARNNCell(hidden_size, hidden_size, **cell_kwargs) for _ in range(num_layers))
        self.is_stacked_residual = is_stacked_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, H] -> hidden sequence of the last layer [B, T, H]."""
        for cell in self.cells:  # each with a fresh state of its own
            out = cell(x, self.execution)  # [B, T, H]
            x = x + out if self.is_stacked_residual else out
        return x
