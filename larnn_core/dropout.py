"""Dropout whose masks come from a generator of the training's own.

torch.nn.Dropout draws from torch's global generator, which every thread of a process shares: two
trainings in one worker process (`larnn worker --slots N`) would take each other's draws, and
neither would reproduce its seed. Given a generator, this one draws only from it; without one
(None), it is nn.Dropout.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Dropout(nn.Dropout):
    def __init__(self, p: float = 0.0, generator: torch.Generator | None = None):
        super().__init__(p)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.generator is None or not self.training or self.p == 0:
            return super().forward(x)
        keep = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1 - self.p)
