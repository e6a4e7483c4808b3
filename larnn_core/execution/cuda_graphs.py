"""The training step (forward, loss, backward, clipping, Adam) and evaluation forwards, replayed as
CUDA graphs on CUDA.

A LARNN training step is a Python loop over time steps and layers: tens of thousands of small
kernels, each launched by the CPU through Python, autograd and the dispatcher. On a GPU those
launches, not the arithmetic, set the step's time. A CUDA graph records the whole step once and
replays it with one launch; the GPU then runs the kernels back to back.

What a graph needs, and where this module provides it:
- fixed addresses: each batch shape gets static input tensors and its own graph (a training epoch
  has two shapes, full batches and the last, shorter one; evaluation has a few more);
- no work that leaves the GPU: Adam runs with `capturable=True` and a tensor learning rate, which
  set_learning_rate changes in place (a float would be frozen into the graph);
- lazy initialisation done before capture: each shape's first call runs eagerly (Graphed).
On CPU, and with graphs off (choice.py), everything runs eagerly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, capturable: bool) -> torch.optim.Adam:
    """Adam. Capturable (state and a tensor learning rate on the model's device) is what a graph
    needs; training uses it on CUDA with and without graphs, so both run the same arithmetic."""
    if not capturable:
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    first = next(model.parameters())
    return torch.optim.Adam(
        model.parameters(),
        lr=torch.tensor(lr, device=first.device, dtype=first.dtype),
        weight_decay=weight_decay,
        capturable=True,
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """In place when the learning rate is a tensor: a captured step reads it from its address.
    (Done here rather than by torch's LR schedulers, which write tensors in place only in recent
    versions and otherwise replace them with a float that a graph never sees.)"""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class Graphed:
    """fn(*tensors) replayed as a CUDA graph, one per input shape: the first call with a shape runs
    fn eagerly (on a side stream, as PyTorch's CUDA-graph recipe does, so that lazy initialisation
    happens outside capture), the second captures it. What it returns then are the graph's static
    outputs: read them before the next call with the same shapes, which overwrites them."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self._warm: set[tuple] = set()
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], Any]] = {}

    def __call__(self, *inputs: torch.Tensor) -> Any:
        shapes = tuple(tuple(t.shape) for t in inputs)
        if shapes in self._graphs:
            graph, static_inputs, outputs = self._graphs[shapes]
            for static, given in zip(static_inputs, inputs):
                static.copy_(given)
            graph.replay()
            return outputs
        if shapes not in self._warm:
            self._warm.add(shapes)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                outputs = self.fn(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            return outputs
        static_inputs = tuple(t.clone() for t in inputs)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (worker slots training beside this one) may go on launching
        # and allocating while this thread captures; the default would fail their calls
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            outputs = self.fn(*static_inputs)
        graph.replay()  # capture records without running: this is the call itself
        self._graphs[shapes] = (graph, static_inputs, outputs)
        return outputs


def _train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, clip_grad_norm: float, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)  # under capture: the graph's backward writes them anew
    loss.backward()
    if clip_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()
    return loss.detach(), logits.detach()  # holding the autograd graph would keep its nodes alive


class TrainStep:
    """step(x, y) -> (loss, logits) after one update of the model's parameters; with graphs, the
    returned tensors are static outputs (Graphed)."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        clip_grad_norm: float = 0.0,
        graphs: bool = False,
    ):
        # a partial, not a bound method: Graphed holding self would be a cycle, and the graphs'
        # GPU memory would then outlive the training until a garbage collection
        step = functools.partial(_train_step, model, optimizer, clip_grad_norm)
        self._run = Graphed(step) if graphs else step

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(x, y)
