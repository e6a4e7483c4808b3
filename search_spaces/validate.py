"""Checks a parsed space against larnn_core's hyperparameters: names, types, and that every
point it can produce (after the rounding rule of sampling.py) builds a valid model."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import math

from larnn_core.hparams import CHOICES, RANGES, HParams
from search_spaces.format import Branches, Choice, Distribution, Fixed, Invalid, Node, Scaled, is_number, quote

FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(HParams)}
DEFAULTS = HParams().to_dict()
TEXT_VALUES = CHOICES
MAX_COMBINATIONS = 4096  # conditional combinations the validator checks one by one


def round_half_up(x: float) -> int:
    """The one rounding rule for integer hyperparameters: to the nearest integer, halves up."""
    return int(math.floor(x + 0.5))


def bounds(node: Node) -> tuple[float, float] | None:
    """Smallest and largest value a numeric node can produce (None if not numeric)."""
    if isinstance(node, Fixed):
        return (node.value, node.value) if is_number(node.value) else None
    if isinstance(node, Scaled):
        return node.base * math.exp(node.low), node.base * math.exp(node.high)
    if isinstance(node, Choice):
        numbers = [o for o in node.options if is_number(o)]
        return (min(numbers), max(numbers)) if numbers else None
    if isinstance(node, Distribution):
        low, high, *q = node.args
        if node.kind in ("normal", "qnormal"):
            return -math.inf, math.inf
        if node.kind == "randint":
            return low, high - 1
        if q:
            return round(low / q[0]) * q[0], round(high / q[0]) * q[0]
        return low, high
    return None


def _check_type(name: str, path: str, node: Node, problems: list) -> bool:
    kind = FIELD_TYPES[name]
    if isinstance(node, Branches):
        problems.append(
            (
                path,
                f"{name!r} is a hyperparameter; a conditional choice of mappings needs a "
                "label that is not one (e.g. 'architecture')",
            )
        )
        return False
    values = node.options if isinstance(node, Choice) else [node.value] if isinstance(node, Fixed) else None
    if kind in ("bool", "str") and values is None:
        allowed = "true or false" if kind == "bool" else " | ".join(TEXT_VALUES[name])
        problems.append((path, f"{name} takes {allowed}: use a fixed value or {{choice: [...]}}"))
        return False
    for value in values or []:
        if kind == "bool" and not isinstance(value, bool):
            problems.append((path, f"{name} must be true or false, got {quote(value)}"))
            return False
        if kind == "str" and value not in TEXT_VALUES[name]:
            problems.append((path, f"{name} must be one of {', '.join(TEXT_VALUES[name])}, got {quote(value)}"))
            return False
        if kind in ("int", "float") and not is_number(value):
            problems.append((path, f"{name} must be a number, got {quote(value)}"))
            return False
    return True


def _check_range(name: str, path: str, node: Node, problems: list) -> None:
    """Every value the node can produce (after rounding) lies in the hyperparameter's RANGES entry."""
    valid = RANGES.get(name)
    low, high = bounds(node)
    if valid is None:
        return
    if not (math.isfinite(low) and math.isfinite(high)):
        problems.append((path, f"{name} is unbounded (a normal distribution); it must lie in {valid}"))
        return
    if FIELD_TYPES[name] == "int":
        low, high = round_half_up(low), round_half_up(high)
    if low in valid and high in valid:
        return
    if FIELD_TYPES[name] == "int":
        can = f"can be {low if low not in valid else high} after rounding"
    else:
        can = f"can be {low:g}" if low == high else f"ranges over [{low:g}, {high:g}]"
    hint = "; the window must hold at least 1 cell" if name == "larnn_window_size" and low < 1 else ""
    problems.append((path, f"{name} {can}; it must lie in {valid}{hint}"))


def _combinations(nodes: dict[str, Node], path: str, problems: list):
    """Each flat {name: (path, node)} a sample can take, one per combination of branch options."""
    flat = {n: (f"{path}.{n}", node) for n, node in nodes.items() if not isinstance(node, Branches)}
    choices = []
    for label, node in nodes.items():
        if isinstance(node, Branches) and label not in FIELD_TYPES:
            choices.append(
                [
                    list(_combinations(option, f"{path}.{label}.choice[{i}]", problems))
                    for i, option in enumerate(node.options)
                ]
            )
    for picks in itertools.product(*[[c for option in branch for c in option] for branch in choices]):
        combined = dict(flat)
        for pick in picks:
            for name, (where, node) in pick.items():
                if name in combined and combined[name][0] != where:
                    problems.append((where, f"{name} is also set at {combined[name][0]}"))
                combined[name] = (where, node)
        yield combined


def count_combinations(nodes: dict[str, Node], cap: int = MAX_COMBINATIONS) -> int:
    """How many flat combinations the conditional branches give (stops counting past cap)."""
    total = 1
    for label, node in nodes.items():
        if isinstance(node, Branches) and label not in FIELD_TYPES:
            total *= min(cap + 1, sum(count_combinations(option, cap) for option in node.options))
            if total > cap:
                return cap + 1
    return total


def validate(nodes: dict[str, Node], path: str = "space") -> list[tuple[str, str]]:
    """Every problem of the space, as (field path, message); an empty list means valid."""
    problems: list[tuple[str, str]] = []
    if count_combinations(nodes) > MAX_COMBINATIONS:
        return [
            (
                path,
                f"its conditional choices combine into more than {MAX_COMBINATIONS} sub-spaces, which "
                "are too many to check: split it into several spaces",
            )
        ]
    typed_ok = {}
    for combo in _combinations(nodes, path, problems):
        for name, (where, node) in combo.items():
            if where in typed_ok or isinstance(node, Invalid):
                continue
            if name not in FIELD_TYPES:
                close = difflib.get_close_matches(name, FIELD_TYPES, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append((where, f"unknown hyperparameter {name!r}{hint}"))
                typed_ok[where] = False
                continue
            typed_ok[where] = _check_type(name, where, node, problems)
            if typed_ok[where] and FIELD_TYPES[name] in ("int", "float"):
                _check_range(name, where, node, problems)
        _check_hidden_rounding(combo, problems)
    for label, node in nodes.items():  # a branch label that is a hyperparameter name
        if isinstance(node, Branches) and label in FIELD_TYPES:
            _check_type(label, f"{path}.{label}", node, problems)
    return list(dict.fromkeys(problems))  # each problem once, in order


@functools.lru_cache(maxsize=256)
def _largest_rounded_hidden(hidden: int, heads: tuple[int, int]) -> tuple[int, int]:
    """(largest hidden size, the head count giving it) once hidden is rounded to a multiple of
    some head count in the span; cached: a conditional space checks the same pair per combination."""
    return max((round_half_up(hidden / h) * h, h) for h in range(heads[0], heads[1] + 1))


def _check_hidden_rounding(combo: dict, problems: list) -> None:
    """hidden_size is rounded to the nearest multiple of attention_heads (sampling.py): that must
    be neither 0 nor past hidden_size's range, for any heads and hidden size the space can give."""

    def span(name: str) -> tuple[tuple[int, int] | None, str]:
        if name not in combo:
            return (DEFAULTS[name], DEFAULTS[name]), f"the default {name} ({DEFAULTS[name]})"
        where, node = combo[name]
        b = bounds(node)
        if b is None or not all(map(math.isfinite, b)):
            return None, where  # refused on its own: not a number, or unbounded
        return (round_half_up(b[0]), round_half_up(b[1])), where

    model = combo.get("model", ("", Fixed(DEFAULTS["model"])))[1]
    models = model.options if isinstance(model, Choice) else [getattr(model, "value", None)]
    if "larnn" not in models:
        return
    (hidden, hidden_at), (heads, heads_at) = span("hidden_size"), span("attention_heads")
    valid_heads, valid_hidden = RANGES["attention_heads"], RANGES["hidden_size"]
    if hidden is None or heads is None or heads[0] not in valid_heads or heads[1] not in valid_heads:
        return  # attention_heads out of its range is refused on its own
    where = hidden_at if "hidden_size" in combo else heads_at
    if round_half_up(hidden[0] / heads[1]) < 1:
        problems.append(
            (
                where,
                f"attention_heads can reach {heads[1]} while hidden_size can be as low as "
                f"{hidden[0]}: rounded to a multiple of attention_heads, hidden_size would be 0 "
                "(keep hidden_size >= attention_heads / 2)",
            )
        )
    if hidden[1] in valid_hidden:  # the largest rounded hidden size, over every head count
        largest, at = _largest_rounded_hidden(hidden[1], heads)
        if largest not in valid_hidden:
            problems.append(
                (
                    where,
                    f"hidden_size {hidden[1]} rounded to a multiple of attention_heads {at} is {largest}, "
                    f"past hidden_size's range {valid_hidden}",
                )
            )
