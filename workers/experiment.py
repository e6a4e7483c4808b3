"""Experiments are data: name, space (declarative JSON), algorithm, budget, objective settings, seed."""

from __future__ import annotations

import dataclasses
import json
import re
import time

from larnn_core.data.dataset import TRAIN_SUBJECTS
from larnn_core.hparams import RANGES, HParams
from larnn_core.records import OK
from larnn_core.selection import DEFAULT_RULE, VALIDATION_SUBJECTS, check_rule
from search_spaces import Space, load_space
from workers import pruners
from workers.records import DEFAULT_KEEP, DONE, Experiment, Objective, Trial, models_kept
from workers.store import BaseStore, ExperimentExists

ALGORITHMS = ("tpe", "rand", "anneal")  # hyperopt's modules of these names suggest (workers/suggest.py)
LIARS = ("none", "worst", "mean", "best")  # what running trials count as in a suggestion (suggest.as_history)


def make_experiment(
    name: str,
    space: Space,
    *,
    algorithm: str = "tpe",
    max_evals: int = 100,
    seed: int = 0,
    source: str = "hapt",
    epochs: int | None = None,
    validation_subjects: int = VALIDATION_SUBJECTS,
    selection: str = DEFAULT_RULE,
    pruner: pruners.PrunerSettings | None = None,
    liar: str = "none",
    stop_after_no_improvement: int | None = None,
    stop_after_s: float | None = None,
    keep_artifacts: str = DEFAULT_KEEP,
    test_curves: bool = False,
) -> Experiment:
    """pruner: default pruners.DEFAULT with its default parameters; the stop rules: workers/stops.py."""
    if liar not in LIARS:
        raise ValueError(f"liar must be one of {', '.join(LIARS)}, got {liar!r}")
    check_name(name)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if max_evals < 1:
        raise ValueError(f"max_evals must be positive, got {max_evals}")
    if epochs is not None and epochs not in RANGES["training_epochs"]:
        raise ValueError(f"epochs must lie in {RANGES['training_epochs']} (training_epochs' range), got {epochs}")
    if not 1 <= validation_subjects < TRAIN_SUBJECTS:
        raise ValueError(
            f"validation_subjects must be between 1 and {TRAIN_SUBJECTS - 1} (of the {TRAIN_SUBJECTS} "
            f"training subjects), got {validation_subjects}"
        )
    check_rule(selection)
    models_kept(keep_artifacts)
    return Experiment(
        name,
        json.loads(space.to_json()),
        algorithm,
        max_evals,
        Objective(source, epochs, validation_subjects, test_curves, selection),
        seed,
        time.time(),
        pruner or pruners.PrunerSettings.of(),
        liar,
        {"no_improvement": stop_after_no_improvement, "after_s": stop_after_s},
        keep_artifacts=keep_artifacts,
    )


NAME = re.compile(r"[\w.-]{1,100}", re.ASCII)  # an experiment's name: it appears in paths, logs and URLs


def check_name(name: str) -> str:
    """The name of an experiment to create (submitted or imported); a ValueError unless it is 1 to
    100 ASCII letters, digits, '-', '_' or '.'."""
    if not NAME.fullmatch(name) or not name.strip("."):
        raise ValueError(f"experiment name {name[:60]!r} must be 1 to 100 letters, digits, '-', '_' or '.'")
    return name


def stored_space(experiment: Experiment) -> Space:
    return Space.from_json(json.dumps(experiment.space))


WARM_TIDS = 1_000_000_000  # warm-start trials' tids in the suggestion history, past any real trial's


def warm_start(store: BaseStore, space: Space, sources: list[str]) -> dict:
    """Other experiments' finished trials whose points this space can produce, for the suggestion
    history (suggest.as_history): {experiments, trials: [{source, idxs, vals, loss}], left_out}.
    A point the space cannot produce (another range, a hyperparameter it fixes elsewhere) is left
    out and counted; so are failed and pruned trials (a pruned loss comes from fewer epochs)."""
    trials, left_out = [], 0
    for source in sources:
        for trial in store.trials(store.get_experiment(source).name):
            if trial.state != DONE or trial.result.status != OK or not trial.point:
                continue
            tid = WARM_TIDS + len(trials)
            try:
                idxs, vals = space.trial_misc(trial.point, tid)
            except ValueError:
                left_out += 1
                continue
            trials.append({"source": source, "tid": tid, "idxs": idxs, "vals": vals, "loss": trial.result.loss})
    return {"experiments": list(sources), "trials": trials, "left_out": left_out}


def read_points(path: str, space: Space, limit: int) -> list[dict]:
    """A YAML or JSON list of at most `limit` points (each a mapping of hyperparameters, completed
    with the defaults), each checked against the space and the hyperparameter table; a ValueError
    naming the file, the point's index and the field."""
    from search_spaces.format import read_document

    document = read_document(path)
    if not isinstance(document, list) or not all(isinstance(p, dict) for p in document):
        raise ValueError(f"{path}: expected a list of points, each a mapping of hyperparameters")
    if len(document) > limit:  # before each point is checked: that takes a while for thousands
        raise ValueError(f"{path}: {len(document)} points, more than --max-evals {limit}")
    points = []
    for index, given in enumerate(document):
        try:
            point = HParams.from_dict(given).to_dict()
            runs = space.point_of(space.trial_misc(point, 0)[1])
        except ValueError as error:
            raise ValueError(f"{path}: point {index}: {error}") from None
        changed = sorted(k for k in runs if runs[k] != point[k])
        if changed:
            raise ValueError(
                f"{path}: point {index}: {changed[0]}: the space's rounding makes {point[changed[0]]!r} "
                f"{runs[changed[0]]!r}"
            )
        points.append(point)
    return points


def submit(
    store: BaseStore,
    name: str,
    space_name_or_path: str,
    *,
    extend_to: int | None = None,
    points: str | None = None,
    warm: list[str] = (),
    **options,
) -> Experiment:
    """Validate the space (and the points file, and the warm-start experiments), then register the
    experiment (or, with extend_to, raise an existing one's budget). Nothing is written when
    validation fails. The points are queued as the first trials; the warm start enters every
    suggestion's history."""
    if extend_to is not None:
        if extend_to < 1:
            raise ValueError(f"--extend-to must be positive, got {extend_to}")
        if store.get_experiment(name).imported:
            raise ValueError(f"{name!r} holds imported results: it has no space to search further")
        if extend_to < len(store.trials(name)):
            raise ValueError(f"{name!r} already has {len(store.trials(name))} trials; --extend-to must not be lower")
        store.resume_experiment(name, extend_to)  # a stopped experiment starts again
        return store.get_experiment(name)
    space = load_space(space_name_or_path)
    experiment = make_experiment(name, space, **options)
    queued = read_points(points, space, experiment.max_evals) if points else []
    if warm:
        experiment = dataclasses.replace(experiment, warm_start=warm_start(store, space, list(warm)))
    try:
        store.create_experiment(experiment)
    except ExperimentExists:
        raise ExperimentExists(
            f"experiment {name!r} already exists; choose another --name, or continue it: "
            f"`larnn submit {space_name_or_path} --name {name} --extend-to N`, "
            f"then `larnn worker --experiment {name}`"
        ) from None
    if queued:  # under the suggestion lease: no worker inserts a trial of its own meanwhile
        while not store.acquire_lease(name, "submit", 60.0):
            time.sleep(0.1)
        try:
            for tid, point in enumerate(queued):
                store.insert_trial(Trial.new(name, tid, *space.trial_misc(point, tid)))
        finally:
            store.release_lease(name, "submit")
    return experiment
