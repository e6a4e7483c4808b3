"""Hyperparameters under their 2018 names (the `space` dict of a 2018 result file), with defaults.

Defaults are the best 2018 LARNN configuration (hidden 81, heads 27, window 38, ...). RANGES
holds each numeric hyperparameter's one valid range, enforced on --config, on points files and
on every sampled point, and checked by the space validator against what a distribution can
produce.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, Mapping

from larnn_core.model import MODES, NORMS, SEQUENCE_STEPS

MODELS = ("larnn", "lstm")


@dataclass(frozen=True)
class Range:
    """low..high, either end excluded where open."""
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


RANGES = {
    "hidden_size": Range(1, 4096),
    "attention_heads": Range(1, 4096),
    "larnn_window_size": Range(1, SEQUENCE_STEPS),  # at most the sequence: older slots would stay empty
    "num_layers": Range(1, 16),
    "dropout_drop_proba": Range(0, 1, high_open=True),
    "learning_rate": Range(0, 10, low_open=True),
    "l2_weight_reg": Range(0, 1),
    "decay_each_N_epoch": Range(1, 10000),
    "batch_size": Range(1, 8192),  # larger than the training set: one batch of all of it
    "training_epochs": Range(1, 10000),
    "clip_grad_norm": Range(0, 1e6),  # 0 disables clipping
}


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
                hints.append(_quote(k, 60) + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"unknown hyperparameter(s): {', '.join(hints)}")
        cast = {}
        for k, v in values.items():
            kind = fields[k].type
            if kind == "bool" and not isinstance(v, bool):
                raise ValueError(f"hyperparameter {k!r} must be true or false, got {_quote(v)}")
            if kind in ("int", "float") and (isinstance(v, bool) or not isinstance(v, (int, float))
                                             or not math.isfinite(v)):
                raise ValueError(f"hyperparameter {k!r} must be a finite number, got {_quote(v)}")
            if kind == "int":
                if not float(v).is_integer():
                    raise ValueError(f"hyperparameter {k!r} must be an integer, got {_quote(v)}")
                v = int(v)
            if kind == "float":
                v = float(v)
            cast[k] = v
        hp = cls(**cast)
        hp.validate()
        return hp

    def validate(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name, valid in RANGES.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and value in valid):
                raise ValueError(f"{name} must be in {valid}, got {value:g}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES = {"model": MODELS, "larnn_mode": MODES, "norm": NORMS}


def _quote(value: Any, limit: int = 200) -> str:
    """repr of a value, at most about `limit` characters: messages never dump a whole input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
