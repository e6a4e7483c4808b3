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

Structural problems (arity, types, low >= high, empty choice, ...) are collected with the path of
the field they concern; validate.py checks the hyperparameters themselves.

Reading is bounded, whatever the bytes: at most MAX_BYTES, UTF-8 text, nesting at most MAX_DEPTH
levels, no YAML aliases (an alias bomb expands a few hundred bytes into gigabytes), plain-text
keys, and only the values JSON has (no sets, timestamps or binary; numbers finite and below
2^63). Messages quote at most about 200 characters of a value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ARITY = {
    "uniform": 2,
    "quniform": 3,
    "loguniform": 2,
    "qloguniform": 3,
    "normal": 2,
    "qnormal": 3,
    "randint": 2,
    "choice": None,
}
TOP_LEVEL = ("description", "space")
MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_INT = 2**63
MAX_LOG_MULTIPLIER = 50  # exp(50) = 5e21: past any hyperparameter's range
MAX_STEPS = 1e9  # a q so small that a range holds more steps than this is a typo (q: 1e-320)


def quote(value: Any, limit: int = 200) -> str:
    """JSON text of a value, at most about `limit` characters."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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
    options: tuple[dict[str, Node], ...]  # conditional sub-spaces


@dataclass(frozen=True)
class Invalid:
    """A field with a structural problem, already reported; validation passes over it."""


def is_log_scaled(node: Node) -> bool:
    """Drawn log-uniformly: the scaled form, (q)loguniform."""
    return isinstance(node, Scaled) or isinstance(node, Distribution) and "log" in node.kind


Node = Fixed | Distribution | Scaled | Choice | Branches | Invalid


class SpaceError(ValueError):
    """Every problem of one space file, each as 'file: field.path: problem'."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source, self.problems = source, problems
        lines = [f"{source}: {path}: {problem}" if path else f"{source}: {problem}" for path, problem in problems]
        super().__init__("\n".join(lines))


class _BoundedLoader(yaml.SafeLoader):
    """Safe YAML that refuses aliases, nesting past MAX_DEPTH, keys that are not plain text and a
    key given twice (plain YAML silently keeps the last)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in a space file", self.peek_event().start_mark
            )
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be plain text, not a list or mapping", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_document(path: str | Path) -> Any:
    """The file's YAML or JSON document, within the bounds above; any other input is a SpaceError
    naming the file (and the line and column, or the field)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise SpaceError(str(path), [("", "not a file")])
        if size > MAX_BYTES:
            raise SpaceError(str(path), [("", f"is {size} bytes; a space file has at most {MAX_BYTES} bytes")])
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpaceError(str(path), [("", "no such file")]) from None
    except OSError as error:
        raise SpaceError(str(path), [("", f"cannot be read: {error.strerror or error}")]) from None
    return parse_text(raw, str(path))


def parse_text(raw: bytes, source: str) -> Any:
    """A YAML or JSON document from bytes, within the bounds above (read_document)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpaceError(
            source, [("", f"is not UTF-8 text (byte {error.start}); binary, or UTF-16? save it as UTF-8")]
        ) from None
    try:
        document = yaml.load(text, Loader=_BoundedLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpaceError(source, [("", f"{where}YAML syntax error: {error.problem or error}")]) from None
    except yaml.reader.ReaderError as error:
        raise SpaceError(
            source,
            [
                (
                    "",
                    f"character {error.character!r} at position {error.position} is not "
                    "allowed (control characters are not text)",
                )
            ],
        ) from None
    except yaml.YAMLError as error:
        raise SpaceError(source, [("", f"YAML error: {quote(str(error))}")]) from None
    problems = list(_foreign_values(document, ""))
    if problems:
        raise SpaceError(source, problems[:20])
    return document


def _foreign_values(value: Any, path: str):
    """(path, problem) for each value JSON does not have: sets, timestamps, binary, non-finite or
    huge numbers (the tree's depth is bounded by the loader)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _foreign_values(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _foreign_values(item, f"{path}[{i}]")
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int):
        if abs(value) >= MAX_INT:
            yield path, f"{quote(value, 40)} is too large (a space's numbers stay below 2^63)"
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield path, f"{value} is not a number a space can hold"
        elif abs(value) >= MAX_INT:
            yield path, f"{value:g} is too large (a space's numbers stay below 2^63)"
    else:
        yield (
            path,
            f"a {type(value).__name__} is not a value a space holds (use text, numbers, true/false, "
            "lists and mappings)",
        )


def is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and abs(value) < MAX_INT
        and math.isfinite(value)
    )


class _Parser:
    def __init__(self):
        self.problems: list[tuple[str, str]] = []

    def fail(self, path: str, problem: str) -> None:
        self.problems.append((path, problem))

    def numbers(self, path: str, values: Any, count: int) -> tuple[float, ...] | None:
        if not isinstance(values, list) or len(values) != count:
            self.fail(path, f"expected a list of {count} numbers, got {quote(values)}")
            return None
        for i, v in enumerate(values):
            if not is_number(v):
                hint = " (YAML reads 1e-5 as text: write 1.0e-5)" if isinstance(v, str) else ""
                self.fail(f"{path}[{i}]", f"expected a number, got {quote(v)}{hint}")
                return None
        return tuple(values)

    def params(self, path: str, mapping: Any) -> dict[str, Node]:
        if not isinstance(mapping, dict):
            self.fail(path, f"expected a mapping of hyperparameters, got {quote(mapping)}")
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
        ((kind, args),) = value.items()
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
        elif low == high and kind != "randint":
            self.fail(path, f"low equals high ({low}): write the fixed value instead")
        if kind in ("loguniform", "qloguniform") and low <= 0:
            self.fail(path, f"log-uniform bounds must be positive, got low = {low}")
        if kind == "randint" and not (float(low).is_integer() and float(high).is_integer() and low < high):
            self.fail(path, f"randint takes integers low < high (high excluded), got [{low}, {high}]")
        if len(args) == 3 and args[2] <= 0:
            self.fail(path, f"q must be positive, got {args[2]}")
        elif len(args) == 3 and abs(high - low if kind not in ("normal", "qnormal") else high) / args[2] > MAX_STEPS:
            self.fail(path, f"q ({args[2]:g}) is too small: more than {MAX_STEPS:g} steps")
        return Distribution(kind, args)

    def scaled(self, path: str, value: dict) -> Node:
        base = value["base"]
        bounds = self.numbers(f"{path}.log_multiplier", value["log_multiplier"], 2)
        if not is_number(base) or base <= 0:
            self.fail(f"{path}.base", f"expected a positive number, got {quote(base)}")
            return Invalid()
        if bounds is None:
            return Invalid()
        if bounds[0] >= bounds[1]:
            self.fail(f"{path}.log_multiplier", f"low ({bounds[0]}) must be less than high ({bounds[1]})")
        if max(map(abs, bounds)) > MAX_LOG_MULTIPLIER:
            self.fail(
                f"{path}.log_multiplier",
                f"a multiplier of exp({max(map(abs, bounds)):g}) is out of reach; "
                f"keep |log_multiplier| <= {MAX_LOG_MULTIPLIER}",
            )
        return Scaled(float(base), *map(float, bounds))

    def choice(self, path: str, options: Any) -> Node:
        if not isinstance(options, list):
            self.fail(path, f"expected a list of options, got {quote(options)}")
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
        raise SpaceError(
            source, [("", f"a space file must be a mapping with a 'space:' key, got {type(document).__name__}")]
        )
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
