"""LSTM baseline with the LARNN stack's interface, so LARNN vs LSTM is a same-protocol comparison."""

from __future__ import annotations

import torch
import torch.nn as nn

from larnn_core.dropout import Dropout


class LSTMStack(nn.Module):
    """num_layers single-layer torch.nn.LSTMs (cuDNN on GPU), dropout between layers and optional
    residual stacking, matching LARNN's is_stacked_residual."""

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        is_stacked_residual: bool = False,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.layers = nn.ModuleList(nn.LSTM(hidden_size, hidden_size, batch_first=True) for _ in range(num_layers))
        self.dropout = Dropout(dropout, generator)
        self.is_stacked_residual = is_stacked_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, H] -> hidden sequence of the last layer [B, T, H]."""
        for lstm in self.layers:
            out = self.dropout(lstm(x)[0])
            x = x + out if self.is_stacked_residual else out
        return x
