"""The attention window of one LARNN layer: projected keys and values of the last k cells.

Every key and value pushed during a sequence lives in one buffer allocated when the sequence
starts, [k + T, dh, nh, B] with the k oldest slots empty (zero features). The window at step t
is the view [t : t + k], one contiguous block: pushing a cell writes one slot, and nothing is
copied, concatenated or re-allocated per step. The batch is the innermost axis (feature
n * dh + d of head n at [d, n]): every product, sum and softmax over the window then runs along
contiguous rows of nh * B values, which vectorise whatever the head width (the 2018 best has 27
heads 3 wide; with the batch outermost, rows were 27 values long and the attention about 1.4x
slower). Backward needs every step's window anyway, so the buffer is the memory autograd
would otherwise spend on T saved copies of a k-slot window.

Autograd cannot follow writes into a shared buffer, so the two operations on it are
autograd Functions with hand-written backward passes (with batch norm on CPU,
step_loops.py's step does both itself, inside one Function per step):

    push(k_new, v_new)      forward: write slot t + k.  backward: return that slot of the
                            gradient buffers, the sum of what every attention step that read
                            the slot added to it.
    attend(q)               forward: multi-head softmax attention of q over the window view.
                            backward: dq, and dK, dV added into the window's slots of the
                            gradient buffers.
                            The sums are the window's Attention, chosen per sequence
                            (cell_step.py): numba loops on CPU (attention_loops.py), else
                            torch ops (attention_ops.py), fused by torch.compile on CUDA.

Ordering: each push and each attend takes the link tensor returned by the push before it, so a
push's backward runs after those of the next push and the next attend; and attend at step t
runs after attend at t + 1 (its output reaches t + 1's query through h). So when a push's
backward reads its slot, every attention step that read the slot has already added to it, and
the chain of links reaches every push even when several are made without an attend between.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable


class Attention(NamedTuple):
    """The window attention's sums, with attention_ops.py's contract: attention_loops.py's
    functions, attention_ops.py's, or those compiled."""

    attend: Callable
    attend_backward: Callable


class Window:
    """Keys and values of every cell pushed into one layer during one sequence."""

    def __init__(
        self,
        batch: int,
        hidden_size: int,
        heads: int,
        window_size: int,
        steps: int,
        attention: Attention,
        device=None,
        dtype=None,
    ):
        self.heads, self.size, self.pushed, self.attention = heads, window_size, 0, attention
        shape = (window_size + steps, hidden_size // heads, heads, batch)
        self.keys = torch.empty(shape, device=device, dtype=dtype)  # [k + T, dh, nh, B]
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.keys[:window_size], self.values[:window_size] = 0, 0  # the empty slots; pushes fill the rest
        self.grad_keys: torch.Tensor | None = None  # allocated by the first backward
        self.grad_values: torch.Tensor | None = None
        self.link: torch.Tensor | None = None  # the last push's output: orders backward passes

    def entries(
        self, slots: slice, pos_k: torch.Tensor | None, pos_v: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the given slots, [k, dh, nh, B], with the per-slot positional terms
        [k, H] added when given (else views of the buffers)."""
        K, V = self.keys[slots], self.values[slots]
        if pos_k is not None:
            K, V = K + self.to_heads(pos_k)[..., None], V + self.to_heads(pos_v)[..., None]
        return K, V

    def to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[N, H] features in head order -> [N, dh, nh] (a view)."""
        return x.unflatten(-1, (self.heads, -1)).transpose(-1, -2)

    def batch_to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H] -> [dh, nh, B], the buffers' order (a view)."""
        return self.to_heads(x).permute(1, 2, 0)

    @staticmethod
    def from_heads(x: torch.Tensor) -> torch.Tensor:
        """[N, dh, nh] -> [N, H] in head order."""
        return x.transpose(-1, -2).flatten(-2)

    @staticmethod
    def batch_from_heads(x: torch.Tensor) -> torch.Tensor:
        """[dh, nh, B] -> [B, H] in head order."""
        return Window.from_heads(x.permute(2, 0, 1))

    @staticmethod
    def positional_gradients(
        grad_scores: torch.Tensor, scaled_q: torch.Tensor, weights: torch.Tensor, g: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients [k, H] of the per-slot positional terms, which are added to every batch entry's
        keys and values, from one attention's backward (grad_scores and weights [k, nh, B], the
        scaled query and the output's gradient g [dh, nh, B])."""
        return (
            Window.from_heads(torch.einsum("jnb,dnb->jdn", grad_scores, scaled_q)),
            Window.from_heads(torch.einsum("jnb,dnb->jdn", weights, g)),
        )

    def gradient_buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.grad_keys is None:
            self.grad_keys, self.grad_values = torch.zeros_like(self.keys), torch.zeros_like(self.values)
        return self.grad_keys, self.grad_values

    def advance(self) -> tuple[slice, int]:
        """Room for one more cell: returns the slots of the window as it stands (the next
        attention's) and the new cell's slot, and moves the window on by one."""
        slot = self.pushed + self.size
        if slot >= self.keys.shape[0]:
            raise IndexError(f"window buffer full: it was sized for {self.keys.shape[0] - self.size} steps")
        self.pushed += 1
        return slice(slot - self.size, slot), slot

    def push(self, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        """The newest cell's key and value [B, H] enter the window; the oldest leaves its view."""
        self.link = _Push.apply(k_new, v_new, self.link, self)

    def close(self) -> None:
        """The sequence is over: drop the last push's output. Its autograd node refers back to this
        window, and that cycle would keep the window and its graph alive until a garbage collection."""
        self.link = None

    def attend(
        self, q: torch.Tensor, pos_k: torch.Tensor | None = None, pos_v: torch.Tensor | None = None
    ) -> torch.Tensor:
        """MultiHead(q, K, V) over the window, q [B, H] -> [B, H] (the heads concatenated).
        pos_k, pos_v [k, H]: per-slot positional terms added to every key and value, or None."""
        return _Attend.apply(q, pos_k, pos_v, self.link, self)


SPENT = (
    "backward through a LARNN window twice is not supported (retain_graph): its gradient buffers "
    "were spent by the first backward"
)


class _Push(torch.autograd.Function):
    @staticmethod
    def forward(ctx, k_new, v_new, link, window: Window):
        _, slot = window.advance()
        window.keys[slot] = window.batch_to_heads(k_new)
        window.values[slot] = window.batch_to_heads(v_new)
        ctx.window, ctx.slot = window, slot
        return k_new.new_zeros(())  # the link

    @staticmethod
    @once_differentiable
    def backward(ctx, _):
        if ctx.slot is None:
            raise RuntimeError(SPENT)
        grad_keys, grad_values = ctx.window.gradient_buffers()
        slot, ctx.slot = ctx.slot, None
        return Window.batch_from_heads(grad_keys[slot]), Window.batch_from_heads(grad_values[slot]), None, None


class _Attend(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, pos_k, pos_v, link, window: Window):
        slots = slice(window.pushed, window.pushed + window.size)  # the current window
        K, V = window.entries(slots, pos_k, pos_v)  # [k, dh, nh, B]
        scaled_q = window.batch_to_heads(q / math.sqrt(K.shape[1])).contiguous()  # [dh, nh, B]
        out, weights = window.attention.attend(K, V, scaled_q)
        ctx.save_for_backward(scaled_q, weights, pos_k, pos_v)
        ctx.window, ctx.slots = window, slots
        return Window.batch_from_heads(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        scaled_q, weights, pos_k, pos_v = ctx.saved_tensors
        window = ctx.window
        K, V = window.entries(ctx.slots, pos_k, pos_v)  # [k, dh, nh, B]
        g = window.batch_to_heads(grad_out).contiguous()  # [dh, nh, B]
        grad_keys, grad_values = window.gradient_buffers()
        dK, dV = grad_keys[ctx.slots], grad_values[ctx.slots]
        grad_q, grad_scores = window.attention.attend_backward(K, V, scaled_q, weights, g, dK, dV)
        grad_q = Window.batch_from_heads(grad_q) / math.sqrt(K.shape[1])
        if pos_k is None:
            return grad_q, None, None, None, None
        return grad_q, *Window.positional_gradients(grad_scores, scaled_q, weights, g), None, None
