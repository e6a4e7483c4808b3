"""Hyperparameters under their 2018 names (the `space` dict of a 2018 result file), with defaults.

Defaults are the best 2018 LARNN configuration (hidden 81, heads 27, window 38, ...).
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Mapping

from larnn_core.model import MODES, NORMS

MODELS = ("larnn", "lstm")


@dataclass(frozen=True)
class HParams:
    model: str = "larnn"  # larnn | lstm
    hidden_size: int = 81
    attention_heads: int = 27
    larnn_window_size: int = 38
    larnn_mode: str = "residual"  # residual | layer
    use_positional_encoding: bool = False
    activation_on_keys_and_values: bool = True
    num_layers: int = 3
    is_stacked_residual: bool = True
    dropout_drop_proba: float = 0.0889
    norm: str = "batch"  # batch | layer | none
    learning_rate: float = 0.006027
    l2_weight_reg: float = 0.00065
    decay_each_N_epoch: int = 26
    batch_size: int = 256
    training_epochs: int = 100
    clip_grad_norm: float = 5.0  # 0 disables clipping

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "HParams":
        """Build from a (possibly partial) dict; unknown keys are refused with their name."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in values if k not in fields]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, fields, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"unknown hyperparameter(s): {', '.join(hints)}")
        cast = {}
        for k, v in values.items():
            kind = fields[k].type
            if kind == "bool" and not isinstance(v, bool):
                raise ValueError(f"hyperparameter {k!r} must be true or false, got {v!r}")
            if kind == "int":
                if isinstance(v, bool) or not float(v).is_integer():
                    raise ValueError(f"hyperparameter {k!r} must be an integer, got {v!r}")
                v = int(v)
            if kind == "float":
                v = float(v)
            cast[k] = v
        hp = cls(**cast)
        hp.validate()
        return hp

    def validate(self) -> None:
        choices = {"model": MODELS, "larnn_mode": MODES, "norm": NORMS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("hidden_size", "attention_heads", "larnn_window_size", "num_layers",
                     "decay_each_N_epoch", "batch_size", "training_epochs", "learning_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout_drop_proba < 1.0:
            raise ValueError(f"dropout_drop_proba must be in [0, 1), got {self.dropout_drop_proba}")
        if self.l2_weight_reg < 0 or self.clip_grad_norm < 0:
            raise ValueError("l2_weight_reg and clip_grad_norm must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
