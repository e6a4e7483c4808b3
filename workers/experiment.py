"""Experiments are data: name, space (declarative JSON), algorithm, budget, objective settings, seed."""
from __future__ import annotations

import json
import time

from search_spaces import Space, load_space
from workers import pruners
from workers.store import BaseStore, ExperimentExists

ALGORITHMS = ("tpe", "rand", "anneal")  # hyperopt's modules of these names suggest (workers/suggest.py)
LIARS = ("none", "worst", "mean", "best")  # what running trials count as in a suggestion (suggest.as_history)


def make_experiment(name: str, space: Space, *, algorithm: str = "tpe", max_evals: int = 100, seed: int = 0,
                    source: str = "hapt", epochs: int | None = None, validation_subjects: int = 5,
                    pruner: dict | None = None, liar: str = "none") -> dict:
    """pruner: pruners.settings(...) (default: none)."""
    if liar not in LIARS:
        raise ValueError(f"--liar must be one of {', '.join(LIARS)}, got {liar!r}")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"experiment name {name!r} must be letters, digits, '-', '_' or '.'")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if max_evals < 1:
        raise ValueError(f"--max-evals must be positive, got {max_evals}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be positive, got {epochs}")
    return {
        "name": name,
        "space": json.loads(space.to_json()),
        "algorithm": algorithm,
        "max_evals": max_evals,
        "objective": {"source": source, "epochs": epochs, "validation_subjects": validation_subjects,
                      "metric": "validation_accuracy"},
        "seed": seed,
        "pruner": pruner or pruners.settings("none"),
        "liar": liar,
        "created": time.time(),
    }


def stored_space(experiment: dict) -> Space:
    return Space.from_json(json.dumps(experiment["space"]))


def submit(store: BaseStore, name: str, space_name_or_path: str, *, extend_to: int | None = None, **options) -> dict:
    """Validate the space, then register the experiment (or, with extend_to, raise an existing
    one's budget). Nothing is written when validation fails."""
    if extend_to is not None:
        if extend_to < 1:
            raise ValueError(f"--extend-to must be positive, got {extend_to}")
        if store.get_experiment(name)["algorithm"] == "imported":
            raise ValueError(f"{name!r} holds imported results: it has no space to search further")
        if extend_to < len(store.trials(name)):
            raise ValueError(f"{name!r} already has {len(store.trials(name))} trials; --extend-to must not be lower")
        store.set_max_evals(name, extend_to)
        return store.get_experiment(name)
    experiment = make_experiment(name, load_space(space_name_or_path), **options)
    try:
        store.create_experiment(experiment)
    except ExperimentExists:
        raise ExperimentExists(f"experiment {name!r} already exists; choose another --name, or continue it: "
                               f"`larnn submit {space_name_or_path} --name {name} --extend-to N`, "
                               f"then `larnn worker --experiment {name}`") from None
    return experiment
