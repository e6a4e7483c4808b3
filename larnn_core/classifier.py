"""The HAR classifier: Linear(9 -> hidden) + ELU, a recurrent stack, Linear(hidden -> 6) on the last step."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from larnn_core.baseline import LSTMStack
from larnn_core.execution import Execution
from larnn_core.hparams import SEQUENCE_STEPS, HParams
from larnn_core.model import LARNN


class HARClassifier(nn.Module):
    def __init__(self, body: nn.Module, n_inputs: int, hidden_size: int, n_classes: int):
        super().__init__()
        self.embed = nn.Linear(n_inputs, hidden_size)
        self.body = body
        self.head = nn.Linear(hidden_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, n_inputs] -> logits [B, n_classes]."""
        return self.head(self.body(F.elu(self.embed(x)))[:, -1])


def build_model(
    hp: HParams,
    n_inputs: int = 9,
    n_classes: int = 6,
    steps: int = SEQUENCE_STEPS,
    execution: Execution = Execution(),
    generator: torch.Generator | None = None,
) -> HARClassifier:
    """The model a hyperparameter set describes, for sequences of `steps` time steps (the LARNN's
    batch norms keep statistics per step), its LARNN steps run as `execution` says, its dropout
    masks drawn from `generator` (None: torch's global one); raises ValueError for an invalid
    combination."""
    if hp.model == "lstm":
        body = LSTMStack(hp.hidden_size, hp.num_layers, hp.is_stacked_residual, hp.dropout_drop_proba, generator)
    else:
        body = LARNN(
            hp.hidden_size,
            hp.num_layers,
            hp.is_stacked_residual,
            execution,
            attention_heads=hp.attention_heads,
            window_size=hp.larnn_window_size,
            larnn_mode=hp.larnn_mode,
            use_positional_encoding=hp.use_positional_encoding,
            activation_on_keys_and_values=hp.activation_on_keys_and_values,
            dropout=hp.dropout_drop_proba,
            norm=hp.norm,
            steps=steps,
            generator=generator,
        )
    return HARClassifier(body, n_inputs, hp.hidden_size, n_classes)
