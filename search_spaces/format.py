"""The declarative space format: a YAML (or JSON) file read into a tree of typed nodes.

A space file is a mapping with a `space:` mapping (and an optional `description:`). Each entry of
`space` is a hyperparameter set to either

    a fixed value                       batch_size: 256
    one distribution                    dropout_drop_proba: {uniform: [0.05, 0.5]}
      uniform [low, high]   quniform [low, high, q]   loguniform [low, high]   qloguniform [low, high, q]
      normal [mu, sigma]    qnormal [mu, sigma, q]    randint [low, high)      choice [option, ...]
      (loguniform bounds are values, not logarithms: loguniform [0.001, 0.1])
    the 2018 scaled form: base times exp(uniform(low, high))
                                        learning_rate: {base: 0.005, log_multiplier: [-0.5, 0.5]}

or is a conditional branch: a `choice` whose options are mappings of hyperparameters. Its key is
a label, not a hyperparameter; the chosen option's entries join the sampled point:

    architecture: {choice: [{model: larnn, attention_heads: 8}, {model: lstm}]}

Structural problems (arity, types, low > high, empty choice, ...) are collected with the path of
the field they concern; validate.py checks the hyperparameters themselves.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import yaml

ARITY = {"uniform": 2, "quniform": 3, "loguniform": 2, "qloguniform": 3, "normal": 2, "qnormal": 3,
         "randint": 2, "choice": None}
TOP_LEVEL = ("description", "space")


@dataclass(frozen=True)
class Fixed:
    value: Any


@dataclass(frozen=True)
class Distribution:
    kind: str  # a key of ARITY other than choice
    args: tuple[float, ...]


@dataclass(frozen=True)
class Scaled:
    """base * exp(uniform(low, high)): the 2018 'base times a log-uniform multiplier'."""
    base: float
    low: float
    high: float


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]  # plain values


@dataclass(frozen=True)
class Branches:
    options: tuple[dict[str, "Node"], ...]  # conditional sub-spaces


@dataclass(frozen=True)
class Invalid:
    """A field with a structural problem, already reported; validation passes over it."""


Node = Union[Fixed, Distribution, Scaled, Choice, Branches, Invalid]


class SpaceError(ValueError):
    """Every problem of one space file, each as 'file: field.path: problem'."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source, self.problems = source, problems
        lines = [f"{source}: {path}: {problem}" if path else f"{source}: {problem}" for path, problem in problems]
        super().__init__("\n".join(lines))


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice (plain YAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_document(path: str | Path) -> dict:
    """The file's mapping; syntax errors are reported with line and column."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(str(path), [("", "no such file")])
    try:
        document = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpaceError(str(path), [("", f"{where}YAML syntax error: {error.problem or error}")]) from None
    return document


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Parser:
    def __init__(self):
        self.problems: list[tuple[str, str]] = []

    def fail(self, path: str, problem: str) -> None:
        self.problems.append((path, problem))

    def numbers(self, path: str, values: Any, count: int) -> tuple[float, ...] | None:
        if not isinstance(values, list) or len(values) != count:
            self.fail(path, f"expected a list of {count} numbers, got {json.dumps(values)}")
            return None
        for i, v in enumerate(values):
            if not is_number(v):
                hint = " (YAML reads 1e-5 as text: write 1.0e-5)" if isinstance(v, str) else ""
                self.fail(f"{path}[{i}]", f"expected a number, got {json.dumps(v)}{hint}")
                return None
        return tuple(values)

    def params(self, path: str, mapping: Any) -> dict[str, Node]:
        if not isinstance(mapping, dict):
            self.fail(path, f"expected a mapping of hyperparameters, got {json.dumps(mapping)}")
            return {}
        if not mapping:
            self.fail(path, "is empty: give at least one hyperparameter")
        prefix = f"{path}." if path else ""
        return {str(k): self.node(f"{prefix}{k}", v) for k, v in mapping.items()}

    def node(self, path: str, value: Any) -> Node:
        reported = len(self.problems)
        node = self._node(path, value)
        return Invalid() if len(self.problems) > reported and not isinstance(node, Branches) else node

    def _node(self, path: str, value: Any) -> Node:
        if not isinstance(value, dict):
            if isinstance(value, list):
                self.fail(path, "a list is not a value: write {choice: [...]} to search over options")
            return Fixed(value)
        keys = set(value)
        if keys == {"base", "log_multiplier"}:
            return self.scaled(path, value)
        if len(keys) != 1 or not keys <= set(ARITY):
            self.fail(path, f"expected one of {', '.join(ARITY)} or {{base, log_multiplier}}, got {sorted(keys)}")
            return Invalid()
        (kind, args), = value.items()
        path = f"{path}.{kind}"
        if kind == "choice":
            return self.choice(path, args)
        args = self.numbers(path, args, ARITY[kind])
        if args is None:
            return Invalid()
        low, high = args[0], args[1]
        if kind in ("normal", "qnormal"):
            if high <= 0:
                self.fail(path, f"sigma must be positive, got {high}")
        elif low > high:
            self.fail(path, f"low ({low}) is greater than high ({high})")
        if kind in ("loguniform", "qloguniform") and low <= 0:
            self.fail(path, f"log-uniform bounds must be positive, got low = {low}")
        if kind == "randint" and not (float(low).is_integer() and float(high).is_integer() and low < high):
            self.fail(path, f"randint takes integers low < high (high excluded), got [{low}, {high}]")
        if len(args) == 3 and args[2] <= 0:
            self.fail(path, f"q must be positive, got {args[2]}")
        return Distribution(kind, args)

    def scaled(self, path: str, value: dict) -> Node:
        base = value["base"]
        bounds = self.numbers(f"{path}.log_multiplier", value["log_multiplier"], 2)
        if not is_number(base) or base <= 0:
            self.fail(f"{path}.base", f"expected a positive number, got {json.dumps(base)}")
            return Invalid()
        if bounds is None:
            return Invalid()
        if bounds[0] > bounds[1]:
            self.fail(f"{path}.log_multiplier", f"low ({bounds[0]}) is greater than high ({bounds[1]})")
        return Scaled(float(base), *map(float, bounds))

    def choice(self, path: str, options: Any) -> Node:
        if not isinstance(options, list):
            self.fail(path, f"expected a list of options, got {json.dumps(options)}")
            return Invalid()
        if not options:
            self.fail(path, "is empty: give at least one option")
            return Invalid()
        if all(isinstance(o, dict) for o in options):
            return Branches(tuple(self.params(f"{path}[{i}]", o) for i, o in enumerate(options)))
        if any(isinstance(o, (dict, list)) for o in options):
            self.fail(path, "options must be all plain values or all mappings (conditional sub-spaces)")
            return Invalid()
        return Choice(tuple(options))


def parse(document: Any, source: str) -> tuple[str, dict[str, Node], list[tuple[str, str]]]:
    """(description, hyperparameter nodes, structural problems) of a space document. A field with
    a problem is parsed as Invalid. Raises SpaceError only if there is no mapping at all."""
    parser = _Parser()
    if not isinstance(document, dict):
        raise SpaceError(source, [("", f"a space file must be a mapping with a 'space:' key, got {type(document).__name__}")])
    for key in document:
        if key not in TOP_LEVEL:
            parser.fail(str(key), f"unknown top-level key; a space file has {', '.join(TOP_LEVEL)}")
    if "space" not in document:
        parser.fail("space", "missing: the mapping of hyperparameters to search")
    description = document.get("description", "")
    if not isinstance(description, str):
        parser.fail("description", "expected text")
    nodes = parser.params("space", document.get("space", {})) if "space" in document else {}
    return description, nodes, parser.problems
