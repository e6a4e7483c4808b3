"""An exponential moving average of the weights (the `weight_averaging` hyperparameter), the model
that evaluation reads when it is on.

The last epochs of a training at a fixed learning rate wander around a minimum; an average of the
weights along that path sits nearer its centre and its validation accuracy moves less from epoch
to epoch, so the epoch selected on validation is less a matter of luck. After optimiser step t
each parameter a moves toward the weights w by

    a <- a + (1 - d_t) (w - a),   d_t = min(decay, (1 + t) / (10 + t))

(the warm-up of TensorFlow's ExponentialMovingAverage: early averages do not hold the initial
weights for hundreds of steps). Only parameters are averaged: the batch norms' statistics are
recomputed for the averaged weights before each evaluation (statistics.py), as for the raw ones.
The average changes nothing in the training itself: same gradients, same random draws.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.parameters = list(model.parameters())
        self.averaged = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimiser step `step` (counted from 0 over the whole training)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.averaged, [p.detach() for p in self.parameters], 1 - decay)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own ones again after it (in
        place: a CUDA-graphed forward reads the same tensors)."""
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.parameters]
            torch._foreach_copy_([p.detach() for p in self.parameters], self.averaged)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.detach() for p in self.parameters], raw)

    def state(self) -> dict[str, torch.Tensor]:
        return {str(i): a for i, a in enumerate(self.averaged)}

    @torch.no_grad()
    def restore(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {str(i) for i in range(len(self.averaged))}:
            raise ValueError(f"{len(state)} averaged tensors for a model of {len(self.averaged)} parameters")
        for i, average in enumerate(self.averaged):
            average.copy_(state[str(i)])
