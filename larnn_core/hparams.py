"""The hyperparameter vocabulary: names (the 2018 ones, the `space` dict of a 2018 result file),
defaults, choices, valid ranges and one-line meanings.

Torch-free on purpose: the model, the space validator, every command's --help and README's
table read it, and a command that only checks a YAML file or reads a store should not pay for
importing torch.

Defaults are the best 2018 LARNN configuration (hidden 81, heads 27, window 38, ...). RANGES
holds each numeric hyperparameter's one valid range, enforced on --config, on points files and
on every sampled point, and checked by the space validator against what a distribution can
produce.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MODELS = ("larnn", "lstm")
NORMS = ("batch", "layer", "none")
MODES = ("residual", "layer")
SCHEDULES = ("step", "cosine")
SEQUENCE_STEPS = 128  # a UCI HAR window: 2.56 s at 50 Hz


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
    "weight_averaging": Range(0, 1, high_open=True),  # 0: off
    "batch_size": Range(1, 8192),  # larger than the training set: one batch of all of it
    "training_epochs": Range(1, 10000),
    "clip_grad_norm": Range(0, 1e6),  # 0 disables clipping
}


@dataclass(frozen=True)
class HParams:
    model: str = "larnn"
    hidden_size: int = 81
    attention_heads: int = 27
    larnn_window_size: int = 38
    larnn_mode: str = "residual"
    use_positional_encoding: bool = False
    activation_on_keys_and_values: bool = True
    num_layers: int = 3
    is_stacked_residual: bool = True
    dropout_drop_proba: float = 0.0889
    norm: str = "batch"
    learning_rate: float = 0.006027
    l2_weight_reg: float = 0.00065
    decay_each_N_epoch: int = 26
    lr_schedule: str = "step"
    weight_averaging: float = 0.0
    batch_size: int = 256
    training_epochs: int = 100
    clip_grad_norm: float = 5.0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> HParams:
        """Build from a (possibly partial) dict; unknown keys are refused with their name."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        names = [k for k in values if not isinstance(k, str)]
        if names:  # YAML's 1, null, true or a date as a key
            raise ValueError(f"a hyperparameter's name must be text, got {_quote(names[0])}")
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
            if kind in ("int", "float") and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(v) < 1e308
            ):  # not math.isfinite: an integer past a float's range overflows it (NaN fails the comparison)
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


CHOICES = {"model": MODELS, "larnn_mode": MODES, "norm": NORMS, "lr_schedule": SCHEDULES}

MEANINGS = {
    "model": "`larnn` or `lstm` (the baseline)",
    "hidden_size": "width of every layer",
    "attention_heads": "must divide hidden_size",
    "larnn_window_size": "`k`, cells attended to",
    "larnn_mode": "`residual` (W_x x + W_h h + W_a a) or `layer` (W [x ; h ; a])",
    "use_positional_encoding": "sine/cosine features of each slot's age",
    "activation_on_keys_and_values": "keys and values through Norm(ELU(.))",
    "num_layers": "stacked layers",
    "is_stacked_residual": "each layer's output added to its input",
    "dropout_drop_proba": "dropout on each layer's hidden state",
    "norm": "`batch` (2018), `layer` or `none`",
    "learning_rate": "Adam",
    "l2_weight_reg": "Adam weight decay",
    "decay_each_N_epoch": "learning rate x 0.75 every N epochs (`step` schedule)",
    "lr_schedule": "`step` (2018: x 0.75 every decay_each_N_epoch) or `cosine` (to 0 at the last epoch)",
    "weight_averaging": "decay of an exponential moving average of the weights, evaluated instead of them; 0 off",
    "batch_size": "one batch of all of it when larger than the training set",
    "training_epochs": "epochs trained; the epoch is selected on validation",
    "clip_grad_norm": "gradient-norm clipping, 0 disables",
}


def describe(name: str) -> str:
    """One hyperparameter as --help and README's table show it: default, valid values, meaning."""
    default = getattr(HParams(), name)
    default = str(default).lower() if isinstance(default, bool) else default  # as JSON writes it
    valid = ", ".join(CHOICES[name]) if name in CHOICES else str(RANGES[name]) if name in RANGES else "true, false"
    return f"{name} (default {default}; {valid}): {MEANINGS[name]}"


def _quote(value: Any, limit: int = 200) -> str:
    """repr of a value, at most about `limit` characters: messages never dump a whole input."""
    if isinstance(value, int) and value.bit_length() > 1000:  # repr itself refuses past 4300 digits
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
