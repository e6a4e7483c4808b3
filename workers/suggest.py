"""hyperopt's algorithms on a worker's history of an experiment, and the hyperparameters of a trial."""

from __future__ import annotations

import importlib
import math
import statistics
from typing import NamedTuple

import numpy as np
from hyperopt import Trials
from hyperopt.base import JOB_VALID_STATES

from larnn_core.hparams import HParams
from larnn_core.records import OK
from workers import tpe
from workers.experiment import ALGORITHMS, stored_space
from workers.history import History
from workers.records import DONE, PRUNED, RUNNING, Experiment, Objective, Trial, hyperopt_document

SUGGEST = {name: importlib.import_module(f"hyperopt.{name}").suggest for name in ALGORITHMS}  # hyperopt.tpe, ...


def trial_seed(experiment: Experiment, tid: int) -> int:
    """One seed per (experiment, trial): suggestions and trainings are reproducible. A
    confirmation's trials share theirs across configurations (workers/confirm.py): the j-th trial
    of every configuration trains with the j-th seed."""
    replicate = tid % experiment.confirms["seeds"] if experiment.confirms else tid
    return (experiment.seed * 1_000_003 + replicate) % (2**31 - 1)


class Observations(NamedTuple):
    """The trials as hyperopt's algorithms are to read them (as_history), a row each."""

    tids: np.ndarray
    states: np.ndarray
    statuses: np.ndarray
    losses: np.ndarray  # NaN where a trial has none (a diverged one's may be NaN too: see scored)
    scored: np.ndarray  # whether it has a loss


def suggest(experiment: Experiment, history: History, tid: int) -> tuple[dict, dict]:
    """misc.idxs and misc.vals of the next trial, from the experiment's history as last read.
    TPE past its random start-up runs on the history's arrays (workers/tpe.py); the other
    algorithms, and TPE before, read hyperopt's documents, as hyperopt's own suggest does."""
    seed = trial_seed(experiment, tid)
    seen = as_history(history, experiment.liar)
    valid = np.isin(seen.states, list(JOB_VALID_STATES))  # the trials hyperopt's Trials.refresh keeps
    if experiment.algorithm == "tpe" and np.count_nonzero(valid) >= tpe.STARTUP:
        tids, losses = seen.tids[valid], np.where(seen.scored, seen.losses, math.inf)[valid]
        order = np.argsort(tids, kind="stable")
        idxs, vals = history.posterior.suggest(tid, seed, tids[order], losses[order], history.observed(tids))
    else:
        docs = [
            hyperopt_document(experiment.name, t, state, status, loss if scored else None, *history.points[t])
            for t, state, status, loss, scored in zip(*(column.tolist() for column in seen))
        ]
        trials = Trials(exp_key=experiment.name)
        # hyperopt's public insert_trial_docs rewrites every document through its SONify and checks
        # it; these are plain JSON, so they go in as they are
        trials._insert_trial_docs(docs)
        trials.refresh()
        (doc,) = SUGGEST[experiment.algorithm]([tid], history.domain, trials, seed)
        idxs, vals = doc["misc"]["idxs"], doc["misc"]["vals"]
    return _plain(idxs), _plain(vals)


def _plain(values: dict) -> dict:
    """numpy's numbers as Python's, so that they store as JSON."""
    return {label: [v.item() if hasattr(v, "item") else v for v in values] for label, values in values.items()}


def as_history(history: History, liar: str) -> Observations:
    """The trials and the warm start's as hyperopt's algorithms are to read them.

    A pruned trial is a measurement: its loss, minus the best validation accuracy before the stop,
    is what it reached, and pruning stops trials that rank low, as that loss says; it goes in as
    done. With a liar (constant liar, Ginsbourger et al. 2010), each running trial goes in as done
    with a made-up loss: the worst, mean or best loss of the finished trials. Without one, running
    trials go in as running, which hyperopt's TPE already reads as a loss of +inf: they sit among
    its bad points, so parallel workers do not all sample one region. A worst or a mean lie puts
    them in the same group (TPE ranks, it does not weigh losses) and changes nothing; a best lie
    makes them good points, which draws the next suggestions towards them
    (benchmarks/bench_search.py measured that as more evaluations to a target)."""
    columns = history.columns
    states = np.array(columns["state"], dtype=np.int64)
    statuses = np.array(columns["status"], dtype=object)
    scored = np.array([loss is not None for loss in columns["loss"]], dtype=bool)
    losses = np.array([math.nan if loss is None else loss for loss in columns["loss"]], dtype=np.float64)
    finished = np.isin(states, (DONE, PRUNED)) & (statuses == OK) & scored
    told = losses[finished].tolist()
    lie = {"worst": max, "best": min, "mean": statistics.fmean}[liar](told) if liar != "none" and told else None
    states[states == PRUNED] = DONE
    if lie is not None:
        lying = states == RUNNING
        states[lying], statuses[lying], losses[lying], scored[lying] = DONE, OK, lie, True
    warm = len(history.warm)
    return Observations(
        np.array([*columns["tid"], *(t for t, _ in history.warm)], dtype=np.int64),
        np.append(states, np.full(warm, DONE)),
        np.append(statuses, np.full(warm, OK, dtype=object)),
        np.append(losses, [loss for _, loss in history.warm]),
        np.append(scored, np.ones(warm, dtype=bool)),
    )


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
