"""Which code executes a training: the one place where that is decided.

Four switches, each meaningful on one kind of device:

    cpu_loops      CPU: numba loops with hand-written backward passes (step_loops.py for a whole
                   step with batch norm, attention_loops.py for the window attention); off, the
                   torch ops that CUDA runs (attention_ops.py, LARNNCell.update).
    torch_compile  torch.compile of the cell's update and the attention's ops (torch_compile.py);
                   on by default on CUDA only, where it fuses dozens of tiny kernels per step.
    cuda_graphs    CUDA: each training step and evaluation forward replayed as a CUDA graph
                   (cuda_graphs.py).
    fused_kernel   a layer's whole time loop as two Triton kernels, forward and backward
                   (fused_layer.py; batch norm, float32). Off unless asked for (LARNN_FUSED_KERNEL=1:
                   on CUDA, for every training in a process): it is to become CUDA's default once
                   measured faster there; on CPU it runs in Triton's interpreter
                   (TRITON_INTERPRET=1), for its tests.

`resolve` turns what the caller asked for (an argument; None means the default) and the
environment (LARNN_COMPILE=0, LARNN_CUDA_GRAPHS=0: off for every training in a process, workers
included; LARNN_FUSED_KERNEL=1: on) into an Execution, once per training; the model and the
training step receive it and read nothing else, and the result records it (`as_record`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Execution:
    cpu_loops: bool = True
    torch_compile: bool = False
    cuda_graphs: bool = False
    fused_kernel: bool = False

    def as_record(self) -> dict[str, bool]:
        return dataclasses.asdict(self)


def _switch(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "1") != "0"


def resolve(
    device_type: str,
    *,
    cpu_loops: bool | None = None,
    torch_compile: bool | None = None,
    cuda_graphs: bool | None = None,
    fused_kernel: bool | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Execution:
    """The execution of a training on a device of this type ("cpu", "cuda", ...). An explicit
    True or False wins over the environment; graphs need CUDA, and loops apply on CPU only. The
    fused kernel needs CUDA, or Triton's interpreter on CPU: asked for explicitly elsewhere, a
    ValueError; by the environment, it applies where it can run."""
    on_cuda = device_type == "cuda"
    runs_fused = on_cuda or environ.get("TRITON_INTERPRET") == "1"
    if fused_kernel and not runs_fused:
        raise ValueError("the fused kernel runs on CUDA, or on CPU in Triton's interpreter (TRITON_INTERPRET=1)")
    if fused_kernel is None:
        fused_kernel = runs_fused and environ.get("LARNN_FUSED_KERNEL") == "1"
    if torch_compile is None:
        torch_compile = on_cuda and _switch(environ, "LARNN_COMPILE")
    if cuda_graphs is None:
        cuda_graphs = _switch(environ, "LARNN_CUDA_GRAPHS")
    return Execution(
        cpu_loops=(True if cpu_loops is None else cpu_loops) and device_type == "cpu",
        torch_compile=torch_compile,
        cuda_graphs=cuda_graphs and on_cuda,
        fused_kernel=bool(fused_kernel),
    )
