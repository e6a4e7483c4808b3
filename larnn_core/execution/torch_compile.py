"""torch.compile for the LARNN's per-step work (on CUDA by default: choice.py).

On a GPU a LARNN step is dozens of tiny kernels per time step and layer (six batch norms, the
gates, the window attention's products, sums and softmax), each too small to fill the card;
CUDA graphs (cuda_graphs.py) remove their launch cost, not their number. Compiled, the cell's
update (LARNNCell.update) and the attention's ops (attention_ops.py) each become a few fused
kernels. On CPU nothing is compiled by default (compiling the update measured no gain there):
with batch norm the steps run step_loops.py, otherwise the ops with attention_loops.py.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
import torch._dynamo

Fn = TypeVar("Fn", bound=Callable)


class CompileFailed(RuntimeError):
    pass


@functools.cache
def compiled(fn: Fn) -> Fn:
    """fn compiled once per process and shared by every caller: dynamo then keeps one graph per
    mode (training, evaluation) and shape kind, whichever cell calls it. A failed compilation
    (most often: no C compiler, which Triton needs) says how to do without."""
    compiled_fn = torch.compile(fn)

    @functools.wraps(fn)
    def run(*args):
        try:
            return compiled_fn(*args)
        except torch._dynamo.exc.BackendCompilerFailed as error:
            raise CompileFailed(
                f"torch.compile of {fn.__qualname__} failed: {error}\n"
                "Install a C compiler (gcc), or set LARNN_COMPILE=0 to run uncompiled."
            ) from error

    return run


class _InFlight:
    """Compiled trainings running in this process now (worker slots run several at once)."""

    count = 0
    lock = threading.Lock()


@contextlib.contextmanager
def compiled_training() -> Iterator[None]:
    """Around a training that runs compiled code: the first of concurrent ones starts from no
    compiled graphs (forget); dynamo's caches are the process's, so none is dropped while another
    training is using them."""
    with _InFlight.lock:
        if _InFlight.count == 0:
            forget()
        _InFlight.count += 1
    try:
        yield
    finally:
        with _InFlight.lock:
            _InFlight.count -= 1


def forget() -> None:
    """Drop every compiled graph before a training: a worker trains one configuration after
    another in one process, and past dynamo's recompile limit (8 graphs per function) the later
    ones would silently run uncompiled. Graphs seen before come back from inductor's disk cache."""
    torch._dynamo.reset()
