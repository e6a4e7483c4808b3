"""`larnn confirm EXP --top K --seeds S`: does the search's best configuration stay the best?

A search ranks its configurations on one training each, selected on a few validation subjects:
the ranking mixes the configurations' merit with each training's luck. A confirmation trains
EXP's top K configurations again with S new seeds each (and, when asked, the LSTM baseline of the
best one's size), as the trials of an experiment of its own, queued at once and run by ordinary
workers: it scales over a fleet and survives faults as a search does. Configuration i's j-th
trial trains with seed j of the confirmation (suggest.trial_seed), so every configuration meets
the same seeds and differences between configurations are paired: what the seeds share (data
order, initial draws) cancels out. None of those seeds is a seed of the search's trials.

Its report gives, per configuration, the mean and standard deviation over the seeds of the
selected epoch's validation accuracy and of the test accuracy there, a 95 % Student-t interval
of each mean, the configurations re-ranked by mean validation accuracy, and each one's paired
difference with the first (the mean of the per-seed differences, with its 95 % interval).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from typing import Any

from larnn_core.hparams import HParams
from larnn_core.records import OK, TEST_ACCURACY, VALIDATION_ACCURACY
from search_spaces.space import from_document
from workers import pruners
from workers.experiment import make_experiment, stored_space
from workers.records import DONE, Experiment, Trial
from workers.report import CONFIRMED, best_trials, wrapped
from workers.store import BaseStore

METRICS = (VALIDATION_ACCURACY, TEST_ACCURACY)  # the selected epoch's, per trial
LEVEL = 0.95  # the intervals' confidence


def confirmation_name(source: str) -> str:
    return f"{source}-confirm"


def configurations(store: BaseStore, source: str, top: int, baseline: str | None) -> list[dict]:
    """The points to confirm: the source's `top` best distinct configurations (each with the tid of
    its first trial), then the LSTM baseline of the best one (its sizes, optimiser and schedule)."""
    chosen: list[dict] = []
    for row in best_trials(store, source, top):
        # complete (every hyperparameter, defaults included): the points a space leaves out would
        # not tell a configuration from its LSTM baseline
        point = HParams.from_dict(row["hyperparameters"]).to_dict() if row["hyperparameters"] else None
        if point and point not in [c["point"] for c in chosen]:
            chosen.append({"tid": row["tid"], "point": point, "label": f"trial {row['tid']}"})
    if not chosen:
        raise ValueError(f"experiment {source!r} has no finished trial to confirm yet")
    if baseline == "lstm":
        point = {**chosen[0]["point"], "model": "lstm"}
        chosen.append({"tid": None, "point": point, "label": f"lstm (trial {chosen[0]['tid']}'s size)"})
    return chosen


def make_confirmation(
    store: BaseStore,
    source: str,
    *,
    top: int,
    seeds: int,
    baseline: str | None = None,
    name: str | None = None,
    epochs: int | None = None,
    seed: int | None = None,
) -> Experiment:
    """Register the confirmation experiment of `source` and queue its trials (`planned`); nothing is
    written when a check fails."""
    if seeds < 2:
        raise ValueError(f"--seeds must be at least 2 (an interval needs two trainings), got {seeds}")
    origin = store.get_experiment(source)
    if origin.confirms:
        raise ValueError(f"{source!r} is itself a confirmation (of {origin.confirms['experiment']!r})")
    chosen = configurations(store, source, top, baseline)
    document = {
        "description": f"confirmation of {source}'s top {top} over {seeds} seeds",
        "space": {"configuration": {"choice": [c["point"] for c in chosen]}},
    }
    space = from_document(document, f"{source}-confirmation", source=f"the configurations of {source!r}")
    objective = origin.objective
    experiment = make_experiment(
        name or confirmation_name(source),
        space,
        algorithm="rand",  # never asked: every trial is queued here
        max_evals=len(chosen) * seeds,
        seed=(origin.seed or 0) + 1 if seed is None else seed,  # trial_seed: none of the search's seeds
        source="hapt" if origin.imported else objective.source,
        epochs=epochs if epochs is not None else objective.epochs,
        validation_subjects=objective.validation_subjects,
        selection=objective.selection,
        pruner=pruners.PrunerSettings.of("none"),
        keep_artifacts=origin.keep_artifacts,
    )
    confirms = {
        "experiment": source,
        "seeds": seeds,
        "configurations": [{"label": c["label"], "tid": c["tid"]} for c in chosen],
    }
    experiment = dataclasses.replace(experiment, confirms=confirms)
    trials = planned(experiment)  # every trial made before anything is written
    store.create_experiment(experiment)
    for trial in trials:
        store.insert_trial(trial)
    return experiment


def planned(experiment: Experiment) -> list[Trial]:
    """Every trial of a confirmation, queued: configuration i's j-th at tid i * seeds + j."""
    space, seeds = stored_space(experiment), experiment.confirms["seeds"]
    points = experiment.space["document"]["space"]["configuration"]["choice"]
    return [
        Trial.new(experiment.name, tid, *space.trial_misc(point, tid))
        for i, point in enumerate(points)
        for tid in range(i * seeds, (i + 1) * seeds)
    ]


def queue(store: BaseStore, experiment: Experiment) -> None:
    """Queue the trials a crash kept out of the store while `larnn confirm` made the confirmation.
    Workers never suggest a trial of a confirmation (workers/worker.py): nothing else inserts one."""
    have = {o.tid for o in store.trial_outcomes(experiment.name)[0]}
    for trial in planned(experiment):
        if trial.tid not in have:
            store.insert_trial(trial)


def interval(values: list[float]) -> dict[str, Any]:
    """Mean, standard deviation and the 95 % Student-t interval of the mean (None below 2 values)."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "low": None, "high": None}
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": 1, "mean": mean, "sd": None, "low": None, "high": None}
    from scipy import stats  # here: the commands that only read answer without importing scipy

    sd = statistics.stdev(values)
    half = stats.t.ppf((1 + LEVEL) / 2, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half}


def confirmation_report(store: BaseStore, name: str) -> dict[str, Any]:
    """Per configuration, each metric's interval over the seeds done so far, best mean validation
    accuracy first, and the paired differences with that first one."""
    experiment = store.get_experiment(name)
    if not experiment.confirms:
        raise ValueError(f"{name!r} is not a confirmation (larnn confirm makes one)")
    seeds, chosen = experiment.confirms["seeds"], experiment.confirms["configurations"]
    by_seed: list[dict[int, dict[str, float]]] = [{} for _ in chosen]
    for trial in store.trial_summaries(name):
        i, j = divmod(trial.tid, seeds)
        if trial.state == DONE and trial.result.status == OK:
            epoch = trial.result.chosen
            by_seed[i][j] = {metric: getattr(epoch, metric) for metric in METRICS}
    rows = [
        {
            "configuration": configuration["label"],
            "tid": configuration["tid"],
            "done": len(by_seed[i]),
            "of": seeds,
            **{
                metric: interval([r[metric] for r in by_seed[i].values() if r[metric] is not None])
                for metric in METRICS
            },
            "seeds": by_seed[i],
        }
        for i, configuration in enumerate(chosen)
    ]
    rows.sort(key=lambda r: (r[VALIDATION_ACCURACY]["mean"] is None, -(r[VALIDATION_ACCURACY]["mean"] or 0)))
    first = rows[0]
    for row in rows[1:]:
        shared = sorted(set(row["seeds"]) & set(first["seeds"]))
        row["difference_with_first"] = {
            metric: interval(
                [
                    row["seeds"][j][metric] - first["seeds"][j][metric]
                    for j in shared
                    if row["seeds"][j][metric] is not None and first["seeds"][j][metric] is not None
                ]
            )
            for metric in METRICS
        }
    return {
        "experiment": name,
        "confirms": experiment.confirms["experiment"],
        "seeds": seeds,
        "epochs": experiment.objective.epochs,
        "level": LEVEL,
        "configurations": rows,
        "time": time.time(),
    }


def latest_report(store: BaseStore, source: str) -> dict[str, Any] | None:
    """The report of the latest confirmation of `source` (None when none was made)."""
    made = [e for e in store.experiments() if e.confirms and e.confirms["experiment"] == source]
    return confirmation_report(store, max(made, key=lambda e: e.created).name) if made else None


def with_confirmed(store: BaseStore, source: str, rows: list[dict]) -> list[dict]:
    """`larnn best` rows with the latest confirmation of `source` beside the search's numbers: per
    confirmed trial its mean [95 % interval] over the seeds (`confirmed_validation`,
    `confirmed_test`) and, for JSON, the whole `confirmation`. Rows unchanged when none was made."""
    report = latest_report(store, source)
    if report is None:
        return rows
    by_tid = {row["tid"]: row for row in report["configurations"] if row["tid"] is not None}
    return [
        {
            **row,
            **{key: span(by_tid[row["tid"]][metric]) for key, metric in zip(CONFIRMED, METRICS)},
            "confirmation": {
                "experiment": report["experiment"],
                **{metric: by_tid[row["tid"]][metric] for metric in METRICS},
            },
        }
        if row["tid"] in by_tid
        else {**row, **dict.fromkeys(CONFIRMED)}
        for row in rows
    ]


def span(summary: dict[str, Any]) -> str:
    """mean [low, high], or the mean alone (n=1), or - (no value yet)."""
    if summary["mean"] is None:
        return "-"
    if summary["low"] is None:
        return f"{summary['mean']:.4f} (n=1)"
    return f"{summary['mean']:.4f} [{summary['low']:.4f}, {summary['high']:.4f}]"


def format_report(report: dict[str, Any], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(report, indent=2)
    rows = report["configurations"]
    lines = wrapped(
        f"confirmation {report['experiment']} of {report['confirms']}: {len(rows)} configurations x",
        f"{report['seeds']} seeds; mean [{report['level']:.0%} interval] over the seeds of the selected "
        "epoch's validation accuracy and of the test accuracy there".split(),
    )
    width = max(len(r["configuration"]) for r in rows)
    lines.append(f"{'rank':>4}  {'configuration':<{width}}  {'done':>5}  {'validation':<26}  {'test':<26}")
    for rank, row in enumerate(rows, 1):
        lines.append(
            f"{rank:>4}  {row['configuration']:<{width}}  {row['done']:>2}/{row['of']:<2}  "
            f"{span(row[VALIDATION_ACCURACY]):<26}  {span(row[TEST_ACCURACY]):<26}"
        )
    if len(rows) > 1:
        lines.append(f"paired differences with {rows[0]['configuration']} (same seeds):")
        for row in rows[1:]:
            difference = row["difference_with_first"]
            lines.append(
                f"      {row['configuration']:<{width}}  validation {span(difference[VALIDATION_ACCURACY])}  "
                f"test {span(difference[TEST_ACCURACY])}"
            )
            lines += [f"{' ' * (8 + width)}{verdict}" for verdict in _verdict(difference[VALIDATION_ACCURACY])]
    return "\n".join(lines)


def _verdict(difference: dict[str, Any]) -> list[str]:
    """What the validation interval says (none below 2 seeds): worse, better, or no difference."""
    if difference["low"] is None:
        return []
    if difference["high"] < 0:
        return ["(worse on validation)"]
    if difference["low"] > 0:
        return ["(better on validation)"]
    return ["(no difference on validation that the seeds can tell)"]
