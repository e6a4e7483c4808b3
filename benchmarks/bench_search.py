"""Search economy on a replay objective: pruners (none, median, ASHA, Hyperband) and the constant
liar, scored on what each search would hand its user. Prints and writes numbers; asserts nothing.

    python benchmarks/bench_search.py [--quick] [--seeds 20] [--trials 40] [--out bench_search.json]
    python benchmarks/bench_search.py --curves-from sqlite:///larnn.db --experiment NAME  # the service's own
    python benchmarks/bench_search.py --make-fixture DIR   # DIR: the 2018 repository's checkout

A replay maps any point of a space to a learning curve built from recorded ones. The recorded
curves are either the 57 validation curves of the 2018 LARNN searches
(github.com/guillaume-chevalier/Linear-Attention-Recurrent-Neural-Network, MIT; 35 of
results_round_1, 25 epochs, for paper-round1; 22 of results_round_2, 100 epochs, for
paper-round2), the files `larnn import-results` reads, kept as a small derived fixture
(benchmarks/data/curves_2018.json), or the curves a store keeps of an experiment's finished
trials (`--curves-from`, `--experiment`: this service's own trainings, with its protocol). A
point's noise-free curve is the blend of the recorded curves nearest to it (inverse-distance
weights; distance in hyperopt's coordinates, log for log-scaled hyperparameters, each scaled by
its spread over the recorded points); a trial observes it with Gaussian noise per trial and per
epoch. The 2018 "validation" curves were measured on the test set (the 2018 protocol): there they
are only realistic curve shapes.

What a search is scored on: the trial it would hand its user (`larnn best`'s first: the finished,
unpruned trial of the best observed objective under the experiment's selection rule), valued on
its noise-free curve at the epoch the rule selected. The observed value is printed beside it: it
is the maximum of noisy numbers, which pruning (more trials for the same epochs) inflates.

What the replay can show: how pruners spend epochs on curve shapes like real ones, and whether
stopping early loses the trials that end best. What it cannot: whether TPE or the liar find better
regions, unless the recorded curves vary with the point in a way the blend predicts. It prints
that signal: the leave-one-out Spearman correlation between each recorded curve's best and the
best of the blend of its neighbours without it. Near 0, the landscape is noise to a search, and
differences between suggestion strategies are not measured here.

The search runs the service's own code: workers.suggest (hyperopt's TPE, with the liar),
workers.pruners (the same decisions, on an in-memory stand-in for the store's trials and rung
records), larnn_core.selection (the experiment's rule). W simulated workers each advance their
trial one epoch per tick; a worker whose trial ends asks for the next suggestion while the
others' trials are running.

- pruners: the same number of trials for each pruner: the chosen trial's true value, its
  observed one and the epochs spent; means over seeds with 95 % Student-t intervals, and each
  pruner's difference with none, paired by seed (the same seed suggests the same first points).
- same_budget: the same total epochs (what none spends on those trials), the same scores.
- liar: TPE with and without the liar (pruner none): finished trials until the chosen trial's
  true value reaches the target (a run that never does within 3x the trials counts that cap).

Each claim is read from the intervals: a difference whose interval holds 0 is no difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from hyperopt import Domain

from larnn_core.records import HISTORY, OK, VALIDATION_ACCURACY, EpochReport, TrainResult
from larnn_core.selection import select
from search_spaces import Space, load_space
from workers import confirm, pruners
from workers.commands import add_pruner_options
from workers.experiment import make_experiment, stored_space
from workers.history import History
from workers.records import DONE, PRUNED, Trial, TrialOutcome
from workers.store import open_store
from workers.suggest import suggest

FIXTURE = Path(__file__).resolve().parent / "data" / "curves_2018.json"
CURVE = HISTORY[VALIDATION_ACCURACY]  # the fixture keeps each curve under its result-document name
LOG_DISTRIBUTIONS = ("loguniform", "qloguniform", "lognormal", "qlognormal")  # hyperopt's node names
QUICK = dict(seeds=3, trials=30, spaces="paper-round1")  # past TPE's 20 random start-up trials


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
    """A noise-free learning curve for any point of the space, from recorded (vals, curve) pairs of
    one length, and noisy observations of it."""

    def __init__(self, space: Space, recorded: list[tuple[dict, list[float]]], neighbours: int = 3, noise=0.004):
        params = Domain(lambda point: 0.0, space.hyperopt()).params
        self.labels = sorted(params)
        self.log = {label for label in self.labels if params[label].name in LOG_DISTRIBUTIONS}
        self.points = np.array([self.coordinates(vals) for vals, _ in recorded])
        self.scale = np.where(self.points.std(axis=0) > 0, self.points.std(axis=0), 1.0)
        self.curves = np.array([curve for _, curve in recorded])
        self.neighbours, self.noise = neighbours, noise

    def coordinates(self, vals: dict[str, list]) -> list[float]:
        """A missing label (a branch not taken) sits at 0."""
        values = [vals[label][0] if vals.get(label) else 0.0 for label in self.labels]
        return [math.log(v) if label in self.log and v > 0 else float(v) for label, v in zip(self.labels, values)]

    def blend(self, at: np.ndarray, among: np.ndarray) -> np.ndarray:
        distance = np.sqrt((((self.points[among] - at) / self.scale) ** 2).sum(axis=1))
        nearest = np.argsort(distance)[: self.neighbours]
        weights = 1.0 / (distance[nearest] + 1e-6)
        return weights @ self.curves[among][nearest] / weights.sum()

    def truth(self, vals: dict[str, list]) -> np.ndarray:
        return self.blend(np.array(self.coordinates(vals)), np.arange(len(self.curves)))

    def observe(self, truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(truth + rng.normal(0, self.noise) + rng.normal(0, self.noise, truth.shape), 0.0, 1.0)

    def signal(self) -> float:
        """Leave-one-out Spearman correlation between each recorded curve's best and its blend's."""
        from scipy.stats import spearmanr

        others = [np.delete(np.arange(len(self.curves)), i) for i in range(len(self.curves))]
        predicted = [self.blend(self.points[i], rest).max() for i, rest in enumerate(others)]
        return float(spearmanr(predicted, self.curves.max(axis=1)).statistic)


def recorded_2018(space: Space, fixture: dict) -> list[tuple[dict, list[float]]]:
    """The fixture's curves as long as the space's training_epochs, at their points in the space."""
    epochs = space.document["space"]["training_epochs"]
    return [(space.trial_misc(c["point"], 0)[1], c[CURVE]) for c in fixture["curves"] if len(c[CURVE]) == epochs]


def recorded_in_store(url: str, name: str) -> tuple[Space, list[tuple[dict, list[float]]]]:
    """An experiment's space and its finished trials' validation curves (the longest length's:
    the trials trained to the end)."""
    store = open_store(url)
    experiment = store.get_experiment(name)
    if experiment.imported:
        raise ValueError("it holds imported results, which have no space to search: replay them with --spaces")
    space = stored_space(experiment)
    curves = [
        (t.vals, [e.validation_accuracy for e in t.result.epochs])
        for t in store.trials(name)
        if t.state == DONE and t.result.epochs and all(e.validation_accuracy is not None for e in t.result.epochs)
    ]
    length = max((len(c) for _, c in curves), default=0)
    return space, [(vals, curve) for vals, curve in curves if len(curve) == length]


class Memory:
    """What the pruners read from the store: the trials with their curves and outcomes, and records
    (ASHA's rungs)."""

    def __init__(self):
        self.docs: list[Trial] = []
        self.records: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def trials(self, name: str, tids: list[int] | None = None) -> list[Trial]:
        return self.docs if tids is None else [self.docs[tid] for tid in tids]

    def trial_outcomes(self, name: str, since: int | None = None) -> tuple[list[TrialOutcome], None]:
        return [TrialOutcome(t.tid, t.state, None, t.result.status, t.result.loss) for t in self.docs], None

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
    """One simulated search: {chosen (tid, epoch), true, observed, epochs, trials, pruned,
    evaluations_to_target}.
    Trials start while fewer than max_trials have started and, with epoch_budget, while epochs are
    left; at the budget everything stops (running trials are cut off and do not count)."""
    experiment = make_experiment("replay", space, max_evals=max_trials, seed=seed, pruner=pruner, liar=liar)
    rule = experiment.objective.selection
    memory, running, spent, reached = Memory(), {}, 0, None
    finished: list[Trial] = []
    true_value: dict[int, float] = {}  # each finished trial's noise-free value at its selected epoch

    def chosen() -> Trial | None:
        """The trial `larnn best` lists first."""
        done = [t for t in finished if t.state == DONE]
        return min(done, key=lambda t: (t.result.loss, t.tid)) if done else None

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
                truth = replay.truth(vals)
                observed = replay.observe(truth, np.random.default_rng([seed, tid]))
                running[worker] = (tid, truth, observed, experiment.pruner.for_trial(len(truth)))
        if not running:
            break
        for worker in sorted(running):
            tid, truth, observed, pruner_of_trial = running[worker]
            trial = memory.docs[tid]
            epoch = len(trial.curve) + 1
            reports = [*trial.curve, EpochReport(epoch, validation_accuracy=float(observed[epoch - 1]))]
            trial = memory.docs[tid] = dataclasses.replace(trial, curve=tuple(reports))
            spent += 1
            stop = pruner_of_trial.prune(memory, "replay", tid, reports)
            if stop or epoch == len(truth):
                # replayed curves have no loss: a stand-in keeps every epoch eligible (select skips an
                # epoch whose loss is not finite) and orders epochs as their accuracy does
                reports = [dataclasses.replace(r, validation_loss=1 - r.validation_accuracy) for r in reports]
                selected = select(rule, reports)
                trial = memory.docs[tid] = dataclasses.replace(
                    trial,
                    state=PRUNED if stop and epoch < len(truth) else DONE,
                    result=TrainResult(OK, tuple(reports), best_epoch=selected.epoch, selection=rule),
                )
                true_value[tid] = float(truth[selected.epoch - 1])
                finished.append(trial)
                del running[worker]
                best = chosen()
                if reached is None and target is not None and best is not None and true_value[best.tid] >= target:
                    reached = len(finished)
            if epoch_budget is not None and spent >= epoch_budget:
                running.clear()
                break
    best = chosen()
    return {
        "chosen": {"tid": best.tid, "epoch": best.result.best_epoch} if best else None,
        "true": true_value[best.tid] if best else math.nan,
        "observed": -best.result.loss if best else math.nan,
        "epochs": spent,
        "trials": len(finished),
        "pruned": sum(t.state == PRUNED for t in finished),
        "evaluations_to_target": reached,
    }


def interval(values: list[float]) -> dict[str, float]:
    """Mean and 95 % Student-t interval over seeds (larnn confirm's), to 5 digits."""
    return {key: round(value, 5) for key, value in confirm.interval(values).items() if key in ("mean", "low", "high")}


def summary(runs: dict[str, list[dict]], baseline: str = "none") -> dict:
    """Per kind: the scores' intervals, and the paired difference of the true value with baseline's."""
    return {
        kind: {
            "true": interval([r["true"] for r in rs]),
            "observed": interval([r["observed"] for r in rs]),
            "true_minus_" + baseline: interval([r["true"] - b["true"] for r, b in zip(rs, runs[baseline])]),
            "epochs": interval([r["epochs"] for r in rs]),
            "trials": interval([r["trials"] for r in rs]),
        }
        for kind, rs in runs.items()
    }


def measure(name: str, replay: Replay, space: Space, kinds: dict, args: argparse.Namespace, target: float) -> dict:
    def log(text: str) -> None:
        print(f"{name} {text}", file=sys.stderr, flush=True)

    seeds = range(args.seeds)
    epochs = int(replay.curves.shape[1])
    same_trials = {
        k: [search(replay, space, s, "none", args.workers, n, args.trials) for n in seeds] for k, s in kinds.items()
    }
    log(f"same trials: {summary(same_trials)}")
    budget = args.trials * epochs  # what none spends on the same trials
    same_budget = {
        k: [search(replay, space, s, "none", args.workers, n, 100 * args.trials, epoch_budget=budget) for n in seeds]
        for k, s in kinds.items()
    }
    log(f"same budget: {summary(same_budget)}")
    counts = {
        label: [
            search(replay, space, kinds["none"], kind, args.workers, n, 3 * args.trials, target=target)[
                "evaluations_to_target"
            ]
            or 3 * args.trials
            for n in seeds
        ]
        for label, kind in (("with", args.liar), ("without", "none"))
    }
    liar = {label: interval(values) for label, values in counts.items()}
    liar["with_minus_without"] = interval([a - b for a, b in zip(counts["with"], counts["without"])])
    log(f"liar: {liar}")
    return {
        "curves": len(replay.curves),
        "epochs": epochs,
        "signal_spearman": round(replay.signal(), 3),
        "target": round(target, 5),
        "pruners": summary(same_trials),
        "same_budget": summary(same_budget),
        "liar": liar,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="3 seeds, 30 trials (past TPE's 20 start-up trials), paper-round1 only"
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--trials", type=int, default=40, help="trials per search (same number of trials)")
    parser.add_argument("--workers", type=int, default=4, help="simulated parallel workers")
    parser.add_argument(
        "--spaces", default="paper-round1,paper-round2", help="built-in spaces whose epochs a 2018 round used"
    )
    parser.add_argument("--curves-from", metavar="STORE", help="replay an experiment of this store instead")
    parser.add_argument("--experiment", help="with --curves-from: the experiment whose finished trials to replay")
    parser.add_argument("--liar", default="best", help="the liar compared against none")
    parser.add_argument(
        "--target", type=float, help="target accuracy (default: the recorded curves' 90th percentile of best)"
    )
    add_pruner_options(parser, kind=False)  # every kind is measured
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--make-fixture", metavar="DIR", help="rebuild the fixture from a 2018 checkout, then exit")
    args = parser.parse_args(argv)
    if args.make_fixture:
        print(f"{make_fixture(Path(args.make_fixture))} curves written to {FIXTURE}")
        return 0
    if args.quick:
        args.seeds, args.trials, args.spaces = QUICK["seeds"], QUICK["trials"], QUICK["spaces"]
    if bool(args.curves_from) != bool(args.experiment):
        parser.error("--curves-from and --experiment go together")
    started = time.perf_counter()
    kinds = {
        kind: pruners.PrunerSettings.of(kind, **{p.name: getattr(args, p.name) for p in cls.parameters})
        for kind, cls in pruners.PRUNERS.items()
    }
    if args.curves_from:
        try:
            space, recorded = recorded_in_store(args.curves_from, args.experiment)
        except (ValueError, KeyError) as error:  # an unknown experiment, an import (no space), a bad URL
            parser.error(f"--experiment {args.experiment}: {error}")
        sources = {f"{args.experiment} (store)": (space, recorded)}
    else:
        fixture = json.loads(FIXTURE.read_text())
        spaces = {name: load_space(name) for name in args.spaces.split(",")}
        sources = {name: (space, recorded_2018(space, fixture)) for name, space in spaces.items()}
    result = {
        "seeds": args.seeds,
        "trials": args.trials,
        "workers": args.workers,
        "liar_kind": args.liar,
        "pruner_settings": {kind: settings.to_document() for kind, settings in kinds.items()},
        "sources": {},
    }
    for name, (space, recorded) in sources.items():
        if len(recorded) < 4:
            parser.error(f"{name}: {len(recorded)} finished curves of full length; a replay needs at least 4")
        replay = Replay(space, recorded)
        target = args.target or float(np.quantile(replay.curves.max(axis=1), 0.9))
        result["sources"][name] = measure(name, replay, space, kinds, args, target)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
