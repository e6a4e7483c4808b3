"""hyperopt's algorithms on stored trial documents, and the hyperparameters of a trial."""

from __future__ import annotations

import importlib
import statistics

from hyperopt import Domain, Trials

from larnn_core.hparams import HParams
from larnn_core.records import OK
from workers.experiment import ALGORITHMS, stored_space
from workers.records import DONE, PRUNED, RUNNING, Experiment, Objective, Trial

SUGGEST = {name: importlib.import_module(f"hyperopt.{name}").suggest for name in ALGORITHMS}  # hyperopt.tpe, ...


def trial_seed(experiment: Experiment, tid: int) -> int:
    """One seed per (experiment, trial): suggestions and trainings are reproducible."""
    return (experiment.seed * 1_000_003 + tid) % (2**31 - 1)


def suggest(experiment: Experiment, trials: list[Trial], tid: int) -> tuple[dict, dict]:
    """misc.idxs and misc.vals of the next trial, from the experiment's stored trials (their
    summaries are enough: BaseStore.trial_summaries)."""
    domain = Domain(lambda point: 0.0, stored_space(experiment).hyperopt())
    history = Trials(exp_key=experiment.name)
    warm = [
        (Trial(experiment.name, t["tid"], t["idxs"], t["vals"], DONE), t["loss"])
        for t in (experiment.warm_start or {}).get("trials", [])
    ]
    # hyperopt's public insert_trial_docs rewrites every document through its SONify and checks it
    # (1.3 s of 2 for 10,000 trials); these are plain JSON made by Trial.hyperopt, so they go in as they are
    history._insert_trial_docs(
        [trial.hyperopt(loss=loss) for trial, loss in warm] + as_history(trials, experiment.liar)
    )
    history.refresh()
    (doc,) = SUGGEST[experiment.algorithm]([tid], domain, history, trial_seed(experiment, tid))
    plain = {
        key: {
            label: [v.item() if hasattr(v, "item") else v for v in values] for label, values in doc["misc"][key].items()
        }
        for key in ("idxs", "vals")
    }
    return plain["idxs"], plain["vals"]


def as_history(trials: list[Trial], liar: str) -> list[dict]:
    """Stored trials as hyperopt's algorithms read them.

    A pruned trial is a measurement: its loss, minus the best validation accuracy before the stop,
    is what it reached, and pruning stops trials that rank low, as that loss says; it goes in as
    done. With a liar (constant liar, Ginsbourger et al. 2010), each running trial goes in as done
    with a made-up loss: the worst, mean or best loss of the finished trials. Without one, running
    trials go in as running, which hyperopt's TPE already reads as a loss of +inf: they sit among
    its bad points, so parallel workers do not all sample one region. A worst or a mean lie puts
    them in the same group (TPE ranks, it does not weigh losses) and changes nothing; a best lie
    makes them good points, which draws the next suggestions towards them
    (benchmarks/bench_search.py measured that as more evaluations to a target)."""
    losses = [t.result.loss for t in trials if t.state in (DONE, PRUNED) and t.result.status == OK]
    lie = {"worst": max, "best": min, "mean": statistics.fmean}[liar](losses) if liar != "none" and losses else None
    history = []
    for t in trials:
        if t.state == PRUNED:
            history.append(t.hyperopt(state=DONE))
        elif t.state == RUNNING and lie is not None:
            history.append(t.hyperopt(state=DONE, loss=lie))
        else:
            history.append(t.hyperopt())
    return history


def hyperparameters(experiment: Experiment, trial: Trial) -> dict:
    """The trial's complete point, rounded by the space's rule; a ValueError unless it is a valid
    hyperparameter set (every value in its range, larnn_core.hparams.RANGES)."""
    point = stored_space(experiment).point_of(trial.vals)
    trial_hparams(point, experiment.objective)
    return point


def trial_hparams(point: dict, objective: Objective) -> HParams:
    """What a trial trains: its point, with the experiment's epochs override when it sets one;
    a ValueError unless every value is in its range."""
    return HParams.from_dict({**point, **({"training_epochs": objective.epochs} if objective.epochs else {})})
