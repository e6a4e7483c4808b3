"""Search economy on a replay objective: pruners (none, median, ASHA, Hyperband) and the constant liar.
Prints and writes numbers; asserts nothing.

    python benchmarks/bench_search.py [--quick] [--seeds 10] [--trials 40] [--out bench_search.json]
    python benchmarks/bench_search.py --make-fixture DIR   # DIR: the 2018 repository's checkout

The replay objective is built from real learning curves: the 57 validation curves of the 2018
LARNN searches (github.com/guillaume-chevalier/Linear-Attention-Recurrent-Neural-Network, MIT;
results_round_1: 25 epochs, results_round_2: 100 epochs), the files `larnn import-results` reads,
kept as a small derived fixture, benchmarks/data/curves_2018.json. A point suggested in the space
trains the blend of the curves of the 2018 points nearest to it (inverse-distance weights; distance
in hyperopt's coordinates, log for log-scaled hyperparameters, each scaled by its spread over the
2018 points), plus Gaussian noise per trial and per epoch. The 2018 "validation" curves were
measured on the test set (the 2018 protocol): here they are only realistic curve shapes to prune.

The search runs the service's own code: workers.suggest (hyperopt's TPE on the trial documents,
with the liar), workers.pruners (the same decisions, on an in-memory stand-in for the store's
trials and rung records). W simulated workers each advance their trial one epoch per tick; a
worker whose trial ends asks for the next suggestion while the others' trials are running.

- pruners: the same number of trials for none, median, ASHA and Hyperband: the best accuracy reached (the
  best trial `larnn best` shows: pruned trials excluded) and the epochs spent; means over seeds.
- same_budget: the same total epochs (what none spends on those trials): the best accuracy.
- liar: TPE with and without the liar (pruner none): finished trials until one reaches the target
  accuracy (a run that never does within 3x the trials counts that cap).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from hyperopt import Domain

from larnn_core.records import HISTORY, OK, VALIDATION_ACCURACY, EpochReport, TrainResult
from search_spaces import Space, load_space
from workers import pruners
from workers.commands import add_pruner_options
from workers.experiment import make_experiment
from workers.history import History
from workers.records import DONE, PRUNED, Trial
from workers.suggest import suggest

FIXTURE = Path(__file__).resolve().parent / "data" / "curves_2018.json"
CURVE = HISTORY[VALIDATION_ACCURACY]  # the fixture keeps each curve under its result-document name
LOG_DISTRIBUTIONS = ("loguniform", "qloguniform", "lognormal", "qlognormal")  # hyperopt's node names


def make_fixture(checkout: Path, out: Path = FIXTURE) -> int:
    """The derived fixture from the 2018 result files (read as `larnn import-results` reads them)."""
    from analysis.import2018 import read_result

    curves = []
    for path in sorted(checkout.glob("results_round_*/UCIHAR/*.json")):
        result = TrainResult.from_document(read_result(path))
        curves.append(
            {
                "file": f"{path.parent.parent.name}/{path.name}",
                "point": result.extra["space"],
                CURVE: [round(e.validation_accuracy, 5) for e in result.epochs],
            }
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "source": "github.com/guillaume-chevalier/Linear-Attention-Recurrent-Neural-Network, "
                "results_round_*/UCIHAR (MIT License, Copyright (c) 2018 Guillaume Chevalier); "
                "'validation' curves measured on the test set",
                "curves": curves,
            },
            indent=0,
        )
    )
    return len(curves)


class Replay:
    """A learning curve for any point of the space, from the 2018 curves of its length."""

    def __init__(self, space: Space, fixture: dict, neighbours: int = 3, noise: float = 0.004):
        epochs = space.document["space"]["training_epochs"]
        chosen = [c for c in fixture["curves"] if len(c[CURVE]) == epochs]
        params = Domain(lambda point: 0.0, space.hyperopt()).params
        self.labels = sorted(params)
        self.log = {label for label in self.labels if params[label].name in LOG_DISTRIBUTIONS}
        self.points = np.array([self.coordinates(space.trial_misc(c["point"], 0)[1]) for c in chosen])
        self.scale = np.where(self.points.std(axis=0) > 0, self.points.std(axis=0), 1.0)
        self.curves = np.array([c[CURVE] for c in chosen])
        self.neighbours, self.noise = neighbours, noise

    def coordinates(self, vals: dict[str, list]) -> list[float]:
        return [math.log(vals[label][0]) if label in self.log else float(vals[label][0]) for label in self.labels]

    def curve(self, vals: dict[str, list], rng: np.random.Generator) -> np.ndarray:
        distance = np.sqrt((((self.points - self.coordinates(vals)) / self.scale) ** 2).sum(axis=1))
        nearest = np.argsort(distance)[: self.neighbours]
        weights = 1.0 / (distance[nearest] + 1e-6)
        blend = weights @ self.curves[nearest] / weights.sum()
        return np.clip(blend + rng.normal(0, self.noise) + rng.normal(0, self.noise, blend.shape), 0.0, 1.0)


class Memory:
    """What the pruners read from the store: the trials with their curves, and records (ASHA's rungs)."""

    def __init__(self):
        self.docs: list[Trial] = []
        self.records: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def trials(self, name: str) -> list[Trial]:
        return self.docs

    def append_record(self, name: str, record: str, key: int, value: float) -> list[tuple[int, float]]:
        if key not in dict(self.records[record]):
            self.records[record].append((key, value))
        return list(self.records[record])


def search(
    replay: Replay,
    space: Space,
    pruner: pruners.PrunerSettings,
    liar: str,
    workers: int,
    seed: int,
    max_trials: int,
    epoch_budget: int | None = None,
    target: float | None = None,
) -> dict:
    """One simulated search: {best_accuracy, epochs, trials, evaluations_to_target}. Trials start
    while fewer than max_trials have started and, with epoch_budget, while epochs are left; at the
    budget everything stops (running trials are cut off and do not count)."""
    experiment = make_experiment("replay", space, max_evals=max_trials, seed=seed, pruner=pruner, liar=liar)
    memory, running, spent, reached = Memory(), {}, 0, None
    finished: list[Trial] = []

    def best(states: tuple[int, ...] = (DONE,)) -> float:
        return max((-t.result.loss for t in finished if t.state in states), default=math.nan)

    while True:
        for worker in range(workers):
            if (
                worker not in running
                and len(memory.docs) < max_trials
                and (epoch_budget is None or spent < epoch_budget)
            ):
                tid = len(memory.docs)
                idxs, vals = suggest(experiment, History.of(experiment, memory.docs), tid)
                memory.docs.append(Trial.new("replay", tid, idxs, vals, owner=f"w{worker}"))
                curve = replay.curve(vals, np.random.default_rng([seed, tid]))
                running[worker] = (tid, curve, experiment.pruner.for_trial(len(curve)))
        if not running:
            break
        for worker in sorted(running):
            tid, curve, pruner_of_trial = running[worker]
            trial = memory.docs[tid]
            epoch = len(trial.curve) + 1
            reports = [*trial.curve, EpochReport(epoch, validation_accuracy=float(curve[epoch - 1]))]
            trial = memory.docs[tid] = dataclasses.replace(trial, curve=tuple(reports))
            spent += 1
            stop = pruner_of_trial.prune(memory, "replay", tid, reports)
            if stop or epoch == len(curve):
                best_epoch = max(reports, key=lambda e: e.validation_accuracy).epoch
                trial = memory.docs[tid] = dataclasses.replace(
                    trial,
                    state=PRUNED if stop and epoch < len(curve) else DONE,
                    result=TrainResult(OK, tuple(reports), best_epoch=best_epoch),
                )
                finished.append(trial)
                del running[worker]
                if reached is None and target is not None and best() >= target:
                    reached = len(finished)
            if epoch_budget is not None and spent >= epoch_budget:
                running.clear()
                break
    return {
        "best_accuracy": best(),
        "epochs": spent,
        "trials": len(finished),
        "pruned": sum(t.state == PRUNED for t in finished),
        "evaluations_to_target": reached,
    }


def mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 seeds, 16 trials (under 2 minutes on 2 cores)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=40, help="trials per search (same number of trials)")
    parser.add_argument("--workers", type=int, default=4, help="simulated parallel workers")
    parser.add_argument("--space", default="paper-round2", help="a built-in space whose epochs a 2018 round used")
    parser.add_argument("--liar", default="best", help="the liar compared against none")
    parser.add_argument(
        "--target", type=float, help="target accuracy (default: the 2018 curves' 95th percentile of best)"
    )
    add_pruner_options(parser, kind=False)  # every kind is measured
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--make-fixture", metavar="DIR", help="rebuild the fixture from a 2018 checkout, then exit")
    args = parser.parse_args(argv)
    if args.make_fixture:
        print(f"{make_fixture(Path(args.make_fixture))} curves written to {FIXTURE}")
        return 0
    if args.quick:
        args.seeds, args.trials = 3, 16
    started = time.perf_counter()
    space = load_space(args.space)
    replay = Replay(space, json.loads(FIXTURE.read_text()))
    target = args.target or float(np.quantile(replay.curves.max(axis=1), 0.95))
    kinds = {
        kind: pruners.PrunerSettings.of(kind, **{p.name: getattr(args, p.name) for p in cls.parameters})
        for kind, cls in pruners.PRUNERS.items()
    }
    seeds = range(args.seeds)
    runs = {kind: [] for kind in kinds}
    same_budget = {kind: [] for kind in kinds}
    for kind, settings in kinds.items():
        for seed in seeds:
            runs[kind].append(search(replay, space, settings, "none", args.workers, seed, args.trials))
            print(f"{kind} seed {seed}: {runs[kind][-1]}", file=sys.stderr)
    budget = args.trials * replay.curves.shape[1]  # what none spends on the same trials
    for kind, settings in kinds.items():
        for seed in seeds:
            same_budget[kind].append(
                search(replay, space, settings, "none", args.workers, seed, 100 * args.trials, epoch_budget=budget)
            )
            print(f"{kind} same budget seed {seed}: {same_budget[kind][-1]}", file=sys.stderr)
    liar = {}
    for label, kind in (("with", args.liar), ("without", "none")):
        counts = []
        for seed in seeds:
            run = search(replay, space, kinds["none"], kind, args.workers, seed, 3 * args.trials, target=target)
            counts.append(run["evaluations_to_target"] or 3 * args.trials)
            print(
                f"liar {kind} seed {seed}: {run['evaluations_to_target']} evaluations to {target:.4f}", file=sys.stderr
            )
        liar[label] = mean(counts)
    result = {
        "space": args.space,
        "curves": len(replay.curves),
        "epochs": int(replay.curves.shape[1]),
        "seeds": args.seeds,
        "trials": args.trials,
        "workers": args.workers,
        "liar_kind": args.liar,
        "pruner_settings": {kind: settings.to_document() for kind, settings in kinds.items()},
        "target": round(target, 5),
        "pruners": {
            kind: {
                "best_accuracy": mean([r["best_accuracy"] for r in rs]),
                "epochs": mean([r["epochs"] for r in rs]),
                "pruned": mean([r["pruned"] for r in rs]),
            }
            for kind, rs in runs.items()
        },
        "same_budget": {kind: mean([r["best_accuracy"] for r in rs]) for kind, rs in same_budget.items()},
        "same_budget_trials": {kind: mean([r["trials"] for r in rs]) for kind, rs in same_budget.items()},
        "liar": liar,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
