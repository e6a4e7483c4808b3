"""A validated search space: what `larnn spaces check` and every submit load, and what an
experiment stores (as JSON, never as pickled Python).

Parsing and validation need neither numpy nor hyperopt (which imports scipy: about a second);
sampling imports them when a space is first sampled, so `larnn spaces check` answers at once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_spaces.format import Branches, Node, SpaceError, parse, read_document
from search_spaces.validate import validate

if TYPE_CHECKING:
    import numpy as np

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    document: dict  # the file's contents, plain JSON types
    nodes: dict[str, Node]

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "document": self.document})

    @classmethod
    def from_json(cls, text: str) -> Space:
        stored = json.loads(text)
        return from_document(stored["document"], stored["name"], source=f"stored space {stored['name']!r}")

    def hyperopt(self) -> dict[str, Any]:
        """The expression hyperopt's tpe/rand/anneal suggest from."""
        from search_spaces.sampling import to_hyperopt

        return to_hyperopt(self.nodes)

    def point(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Complete, rounded hyperparameters from one hyperopt sample of this space."""
        from search_spaces.sampling import finalize, flatten

        return finalize(flatten(sample))

    def trial_misc(self, point: dict[str, Any], tid: int) -> tuple[dict[str, list], dict[str, list]]:
        """misc.idxs and misc.vals of a trial `tid` of this space at `point` (a flat, complete
        hyperparameter set); sampling.PointMismatch naming the field if the space cannot produce it."""
        from hyperopt import Domain

        from search_spaces.sampling import locate

        vals = locate(self.nodes, point)
        every = Domain(lambda point: 0.0, self.hyperopt()).params  # every label, as hyperopt names them
        return (
            {label: [tid] if label in vals else [] for label in every},
            {label: [vals[label]] if label in vals else [] for label in every},
        )

    def point_of(self, vals: dict[str, list]) -> dict[str, Any]:
        """The point a trial with these misc.vals trains (what workers.suggest.hyperparameters reads)."""
        import hyperopt

        chosen = {label: values[0] for label, values in vals.items() if values}
        return self.point(hyperopt.space_eval(self.hyperopt(), chosen))

    def hyperparameters(self) -> dict[str, list[Node]]:
        """Each hyperparameter the space names, with its nodes: one, or one per conditional branch
        that names it (larnn-vs-lstm fixes `model` differently in each)."""
        found: dict[str, list[Node]] = {}

        def visit(nodes: dict[str, Node]) -> None:
            for name, node in nodes.items():
                if isinstance(node, Branches):
                    for option in node.options:
                        visit(option)
                else:
                    found.setdefault(name, []).append(node)

        visit(self.nodes)
        return found

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        from hyperopt.pyll import stochastic

        return self.point(stochastic.sample(self.hyperopt(), rng=rng))


def from_document(document: Any, name: str, source: str) -> Space:
    """Parse and validate; raises SpaceError naming every problem."""
    description, nodes, problems = parse(document, source)
    problems += validate(nodes)
    if problems:
        raise SpaceError(source, problems)
    return Space(name, description, json.loads(json.dumps(document)), nodes)


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def builtin_path(name: str) -> Path:
    if name not in builtin_names():  # not a path test: a name too long for one is refused the same way
        raise SpaceError(name, [("", f"no built-in space of that name; built in: {', '.join(builtin_names())}")])
    return BUILTIN_DIR / f"{name}.yaml"


def load_space(name_or_path: str | Path) -> Space:
    """A built-in space by name, or a space file by path."""
    path = Path(name_or_path)
    if not path.is_file() and path.suffix == "" and path.name == str(name_or_path):
        path = builtin_path(str(name_or_path))
    return from_document(read_document(path), path.stem, source=str(path))
