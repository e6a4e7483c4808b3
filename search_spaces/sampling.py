"""A space as a hyperopt expression, and a hyperopt sample as complete, valid hyperparameters.

Labels: a top-level hyperparameter is labelled by its name (as in 2018), the scaled form's
multiplier by `<name>_mult` (as in 2018), an entry of a conditional branch by
`<label>[<option>].<name>`. Keys are visited in sorted order, so the expression, and with it the
points drawn for a seed, does not depend on the key order of the file or of its stored JSON.

Rounding rule (the only one): integer hyperparameters are rounded to the nearest integer, halves
up; then, for a LARNN, hidden_size is rounded to the nearest multiple of attention_heads (halves
up), as in 2018. validate.py refuses spaces where that multiple could be 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hyperopt import hp

from larnn_core.hparams import HParams
from search_spaces.format import Branches, Choice, Fixed, Node, Scaled
from search_spaces.validate import DEFAULTS, FIELD_TYPES, round_half_up


def to_hyperopt(nodes: dict[str, Node], prefix: str = "") -> dict[str, Any]:
    expression = {}
    for name in sorted(nodes):
        node, label = nodes[name], f"{prefix}{name}"
        if isinstance(node, Fixed):
            expression[name] = node.value
        elif isinstance(node, Scaled):
            expression[name] = node.base * hp.loguniform(f"{label}_mult", node.low, node.high)
        elif isinstance(node, Choice):
            expression[name] = hp.choice(label, list(node.options))
        elif isinstance(node, Branches):
            expression[name] = hp.choice(
                label, [to_hyperopt(option, f"{label}[{i}].") for i, option in enumerate(node.options)]
            )
        elif node.kind in ("loguniform", "qloguniform"):
            low, high, *q = node.args
            expression[name] = getattr(hp, node.kind)(label, math.log(low), math.log(high), *q)
        else:
            expression[name] = getattr(hp, node.kind)(label, *node.args)
    return expression


def flatten(sample: dict[str, Any]) -> dict[str, Any]:
    """Merge the chosen branches' entries into one flat {hyperparameter: value}. Only a branch
    samples to a mapping: a hyperparameter's value never is one."""
    flat = {}
    for name, value in sample.items():
        if isinstance(value, dict):
            flat.update(flatten(value))
        else:
            flat[name] = value.item() if isinstance(value, np.generic) else value
    return flat


def finalize(flat: dict[str, Any]) -> dict[str, Any]:
    """The sampled hyperparameters after the rounding rule. Hyperparameters the space leaves out
    stay out (they take larnn_core's defaults when a model is built), so a conditional space's
    unused branch reads as absent in the analysis; the result is checked to build a valid model."""
    values = dict(flat)
    for name, value in flat.items():
        if FIELD_TYPES[name] == "int":
            values[name] = round_half_up(value)
        elif FIELD_TYPES[name] == "float":
            values[name] = float(value)
    if values.get("model", DEFAULTS["model"]) == "larnn" and {"hidden_size", "attention_heads"} & set(values):
        heads = values.get("attention_heads", DEFAULTS["attention_heads"])
        hidden = values.get("hidden_size", DEFAULTS["hidden_size"])
        values["hidden_size"] = round_half_up(hidden / heads) * heads
    HParams.from_dict(values)
    return values


class PointMismatch(ValueError):
    """A point that this space cannot produce, naming the field."""


BOUNDED = ("uniform", "quniform", "loguniform", "qloguniform", "randint")  # kinds with [low, high] first


def locate(nodes: dict[str, Node], point: dict[str, Any]) -> dict[str, Any]:
    """The hyperopt values (misc.vals, one per label used) under which this space produces `point`,
    a flat {hyperparameter: value}, or a point the rounding rule made from it; PointMismatch naming
    the first field that does not fit. A hyperparameter the space leaves out must be at its
    default."""
    vals, covered = _locate(nodes, point, "")
    for name, value in point.items():
        if name not in covered and value != DEFAULTS.get(name, value):
            raise PointMismatch(f"{name}: the space fixes it at its default {DEFAULTS[name]!r}, got {value!r}")
    return vals


def _rounding_slack(name: str, point: dict[str, Any]) -> float:
    """How far outside a distribution's bounds the rounding rule (finalize) can move a value: half
    a step for an integer, half the heads for a LARNN's hidden_size (rounded to a multiple of them)."""
    if name == "hidden_size" and point.get("model", DEFAULTS["model"]) == "larnn":
        return point.get("attention_heads", DEFAULTS["attention_heads"]) / 2
    return 0.5 if FIELD_TYPES.get(name) == "int" else 0.0


def _locate(nodes: dict[str, Node], point: dict[str, Any], prefix: str) -> tuple[dict[str, Any], set[str]]:
    vals, covered = {}, set(nodes)
    for name in sorted(nodes):
        node, label = nodes[name], f"{prefix}{name}"
        value = point.get(name, DEFAULTS.get(name))
        if isinstance(node, Branches):
            misfits = []
            for i, option in enumerate(node.options):
                try:
                    sub, sub_covered = _locate(option, point, f"{label}[{i}].")
                except PointMismatch as misfit:
                    misfits.append(f"option {i}: {misfit}")
                    continue
                vals.update({label: i, **sub})
                covered |= sub_covered
                break
            else:
                raise PointMismatch(f"{name}: no option fits ({'; '.join(misfits)})")
        elif isinstance(node, Fixed):
            if value != node.value:
                raise PointMismatch(f"{name}: the space fixes it at {node.value!r}, got {value!r}")
        elif isinstance(node, Choice):
            if value not in node.options:
                raise PointMismatch(f"{name}: {value!r} is not one of {list(node.options)}")
            vals[label] = list(node.options).index(value)
        elif isinstance(node, Scaled):
            if not isinstance(value, (int, float)) or value <= 0:
                raise PointMismatch(f"{name}: {value!r} is not a positive number")
            slack = _rounding_slack(name, point)
            low, high = node.base * math.exp(node.low), node.base * math.exp(node.high)
            if not low - slack - 1e-9 <= value <= high + slack + 1e-9:
                raise PointMismatch(f"{name}: {value!r} is outside {node.base:g} x exp([{node.low:g}, {node.high:g}])")
            # hyperopt's value of a loguniform is the multiplier itself, exp of the log drawn
            vals[f"{label}_mult"] = math.exp(min(node.high, max(node.low, math.log(value / node.base))))
        else:
            low, high = node.args[:2]
            slack = _rounding_slack(name, point)
            if not isinstance(value, (int, float)) or node.kind in BOUNDED and not low - slack <= value <= high + slack:
                raise PointMismatch(f"{name}: {value!r} is outside the space's {node.kind} [{low:g}, {high:g}]")
            vals[label] = min(high, max(low, value)) if node.kind in BOUNDED else value
    return vals, covered
