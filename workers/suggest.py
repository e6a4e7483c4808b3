"""hyperopt's algorithms on stored trial documents, and the hyperparameters of a trial."""
from __future__ import annotations

import importlib

import hyperopt
from hyperopt import Domain, Trials

from larnn_core.hparams import HParams
from workers.experiment import ALGORITHMS, stored_space
from workers.store import DONE, PRUNED

SUGGEST = {name: importlib.import_module(f"hyperopt.{name}").suggest for name in ALGORITHMS}  # hyperopt.tpe, ...


def trial_seed(experiment: dict, tid: int) -> int:
    """One seed per (experiment, trial): suggestions and trainings are reproducible."""
    return (experiment["seed"] * 1_000_003 + tid) % (2**31 - 1)


def suggest(experiment: dict, trials: list[dict], tid: int) -> tuple[dict, dict]:
    """misc.idxs and misc.vals of the next trial, from the experiment's stored trials."""
    domain = Domain(lambda point: 0.0, stored_space(experiment).hyperopt())
    history = Trials(exp_key=experiment["name"])
    # a pruned trial is a measurement for TPE: its loss, minus the best validation accuracy before the
    # stop, is what it reached, and pruning stops trials that rank low, as that loss says
    history.insert_trial_docs([{**t, "state": DONE if t["state"] == PRUNED else t["state"],
                                "misc": {**t["misc"], "cmd": tuple(t["misc"]["cmd"])}} for t in trials])
    history.refresh()
    (doc,) = SUGGEST[experiment["algorithm"]]([tid], domain, history, trial_seed(experiment, tid))
    plain = {key: {label: [v.item() if hasattr(v, "item") else v for v in values]
                   for label, values in doc["misc"][key].items()} for key in ("idxs", "vals")}
    return plain["idxs"], plain["vals"]


def hyperparameters(experiment: dict, trial: dict) -> dict:
    """The trial's complete point, rounded by the space's rule; a ValueError unless it is a valid
    hyperparameter set (every value in its range, larnn_core.hparams.RANGES)."""
    space = stored_space(experiment)
    chosen = {label: values[0] for label, values in trial["misc"]["vals"].items() if values}
    point = space.point(hyperopt.space_eval(space.hyperopt(), chosen))
    trial_hparams(point, experiment["objective"])
    return point


def trial_hparams(point: dict, settings: dict) -> HParams:
    """What a trial trains: its point, with the experiment's epochs override when it sets one;
    a ValueError unless every value is in its range."""
    return HParams.from_dict({**point, **({"training_epochs": settings["epochs"]} if settings.get("epochs") else {})})
