"""How a LARNN step executes, kept apart from what it computes (model.py).

choice.py           Execution: CPU loops, torch.compile, CUDA graphs, fused kernels on or off,
                    resolved once per training (arguments, then LARNN_COMPILE / LARNN_CUDA_GRAPHS /
                    LARNN_FUSED_KERNEL)
cell_step.py        the seam: per sequence and layer, the step function and the window's attention,
                    or the whole layer through the fused kernels
window.py           the attention window: one buffer per sequence, hand-written backward passes
attention_loops.py  the window attention as numba loops (CPU)
attention_ops.py    the window attention as torch ops (CUDA, and CPU with the loops off)
step_loops.py       a whole step with batch norm as numba loops (CPU)
torch_compile.py    torch.compile, shared per process
cuda_graphs.py      the training step and evaluation forwards replayed as CUDA graphs
fused_layer.py      a layer's whole time loop as two Triton kernels, forward and backward (batch norm)
"""

from larnn_core.execution.choice import Execution, resolve

__all__ = ["Execution", "resolve"]
