"""The seam between the model and how it executes: once per sequence and layer, the function
that runs one time step of a cell, and the attention its window uses.

    where (tensors like the sequence's)                    what runs
    CPU loops on, batch norm, float32/64, training or      step_loops.py: the whole step as numba loops,
      evaluation without gradients                           one autograd node per step and layer
    CPU loops on, otherwise on CPU in float32/64           LARNNCell.step's ops; attention_loops.py
    elsewhere (CUDA; CPU loops off; other dtypes)          LARNNCell.step's ops; attention_ops.py;
                                                             both compiled when torch_compile is on
    fused kernel on, batch norm, float32                   fused_layer.py: the layer's whole time loop,
                                                             not step by step (whole_layer)

The loops' backward assumes batch statistics' or fixed statistics' gradients without a graph
through the running statistics, hence evaluation with gradients takes the ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from larnn_core.execution import attention_loops, attention_ops, step_loops
from larnn_core.execution.choice import Execution
from larnn_core.execution.torch_compile import compiled
from larnn_core.execution.window import Attention

if TYPE_CHECKING:
    from larnn_core.model import CellState, LARNNCell, StepWeights

LOOP_DTYPES = (torch.float32, torch.float64)
Step = Callable[[torch.Tensor, torch.Tensor, "CellState"], tuple["CellState", torch.Tensor]]


def _on_loops(execution: Execution, like: torch.Tensor) -> bool:
    return execution.cpu_loops and like.device.type == "cpu" and like.dtype in LOOP_DTYPES


def attention(execution: Execution, like: torch.Tensor) -> Attention:
    """The window attention's sums for tensors like `like`."""
    if _on_loops(execution, like):
        return Attention(attention_loops.attend, attention_loops.attend_backward)
    if execution.torch_compile:
        return Attention(compiled(attention_ops.attend), compiled(attention_ops.attend_backward))
    return Attention(attention_ops.attend, attention_ops.attend_backward)


def whole_step_on_loops(cell: LARNNCell, execution: Execution, like: torch.Tensor) -> bool:
    """Whether step_loops.py runs the cell's whole steps for a sequence like `like`."""
    return _on_loops(execution, like) and cell.norm == "batch" and (cell.training or not torch.is_grad_enabled())


def whole_layer(cell: LARNNCell, execution: Execution, like: torch.Tensor) -> Callable | None:
    """layer(xq, xz) -> hidden sequence, where fused_layer.py's kernels run the whole sequence of
    this cell; None where the steps run one by one (cell_step)."""
    if not (execution.fused_kernel and cell.norm == "batch" and like.dtype == torch.float32):
        return None
    weights = cell.step_weights()
    if len({norm.training for norm in weights.norms}) > 1:  # the kernels take one mode for all six
        return None
    from larnn_core.execution import fused_layer  # here: Triton is needed by this path only

    return lambda xq, xz: fused_layer.layer(cell, weights, xq, xz)


def cell_step(cell: LARNNCell, weights: StepWeights, execution: Execution, like: torch.Tensor) -> Step:
    """step(xq_t, xz_t, state) -> (new state, z) for one sequence of this cell."""
    if whole_step_on_loops(cell, execution, like):
        loops = step_loops.Sequence(weights, cell.heads)

        def on_loops(xq: torch.Tensor, xz: torch.Tensor, state: CellState) -> tuple[CellState, torch.Tensor]:
            h, c, z = loops.step(xq, xz, state.h, state.c, state.window)  # h after dropout
            return type(state)(h, c, state.window), z

        return on_loops
    update = compiled(type(cell).update) if execution.torch_compile else type(cell).update

    def on_ops(xq: torch.Tensor, xz: torch.Tensor, state: CellState) -> tuple[CellState, torch.Tensor]:
        return cell.step(xq, xz, state, weights, update)

    return on_ops
