"""Stopping hopeless trials early, per experiment (`--pruner none|median|asha`).

The worker asks its pruner after every epoch, with the trial's curve so far; the pruner decides
from what the store holds (other trials' curves, ASHA's rung records), so workers on different
machines agree and a restarted worker continues where the last one stopped. The value compared is
a trial's best validation accuracy so far (robust to one noisy epoch).

    median  after `warmup` epochs, once at least `min_trials` other trials have reported this
            epoch: prune a trial whose best-so-far is below the median of theirs at this epoch.
    asha    rungs at r, r*eta, r*eta^2, ... epochs below the trial's last epoch. Reaching a rung,
            a trial is recorded there (atomically, in the store) and goes on only if it is in the
            top 1/eta of the trials recorded at that rung so far; nobody waits for a rung to fill.
            While fewer than eta trials have reached the rung, only a trial at least as good as
            every one before it goes on (Optuna's adaptation for trials that cannot be paused
            and resumed later).
    hyperband  Hyperband over ASHA brackets (Li et al. 2018, asynchronously as in Li et al. 2020):
            bracket b is ASHA with its first rung at r*eta^b, so that a trial is not judged on
            early epochs in every bracket (ASHA's risk: a late bloomer pruned at r); the last
            bracket has no rung (trains every trial to the end). Each trial's
            bracket follows from its tid alone (all workers agree), the aggressive brackets taking
            more trials as Hyperband's budget rule says (n_b proportional to eta^s / (s + 1), s
            the bracket's rungs); each bracket keeps rung records of its own.
"""
from __future__ import annotations

import abc
import itertools
import math
import statistics
from dataclasses import dataclass

from larnn_core.records import EpochReport
from workers.store import BaseStore

KINDS = ("none", "median", "asha", "hyperband")
DEFAULTS = {"median": {"warmup": 5, "min_trials": 5}, "asha": {"min_epochs": 5, "eta": 3},
            "hyperband": {"min_epochs": 5, "eta": 3}}
DEFAULT = "asha"  # from benchmarks/bench_search.py: README, "Live curves and pruning", says why
BRACKET_KEYS = 1_000_000  # a Hyperband bracket's rung record key: bracket * BRACKET_KEYS + epoch
OPTIONS = {"warmup": "--prune-warmup", "min_trials": "--prune-min-trials", "min_epochs": "--asha-min-epochs",
           "eta": "--asha-eta"}  # each parameter's command-line option


def best_so_far(curve: list[EpochReport], epoch: int) -> float:
    """The best validation accuracy of the curve's epochs up to `epoch` (-inf before any)."""
    return max((e.validation_accuracy for e in curve if e.epoch <= epoch and e.validation_accuracy is not None),
               default=-math.inf)


class Pruner(abc.ABC):
    @abc.abstractmethod
    def prune(self, store: BaseStore, name: str, tid: int, curve: list[EpochReport]) -> bool:
        """After an epoch: stop this trial? curve: its epochs so far, the last one just ended."""


class NoPruner(Pruner):
    def prune(self, store: BaseStore, name: str, tid: int, curve: list[EpochReport]) -> bool:
        return False


@dataclass(frozen=True)
class MedianPruner(Pruner):
    warmup: int
    min_trials: int

    def prune(self, store: BaseStore, name: str, tid: int, curve: list[EpochReport]) -> bool:
        epoch = curve[-1].epoch
        if epoch <= self.warmup:
            return False
        curves = [[EpochReport.from_document(e) for e in t["curve"]] for t in store.trials(name) if t["tid"] != tid]
        others = [best_so_far(other, epoch) for other in curves if any(e.epoch >= epoch for e in other)]
        return len(others) >= self.min_trials and best_so_far(curve, epoch) < statistics.median(others)


@dataclass(frozen=True)
class ASHAPruner(Pruner):
    min_epochs: int
    eta: int
    max_epochs: int  # the trial's training_epochs: no rung at or past it

    @property
    def rungs(self) -> list[int]:
        return [self.min_epochs * self.eta ** k for k in range(64)
                if self.min_epochs * self.eta ** k < self.max_epochs]

    key_offset: int = 0  # where this pruner's rung records sit among the experiment's (Hyperband brackets)

    def prune(self, store: BaseStore, name: str, tid: int, curve: list[EpochReport]) -> bool:
        epoch = curve[-1].epoch
        if epoch not in self.rungs:
            return False
        reached = store.record_rung(name, self.key_offset + epoch, tid, best_so_far(curve, epoch))
        return not promotable(dict(reached)[tid], [value for _, value in reached], self.eta)


@dataclass(frozen=True)
class HyperbandPruner(Pruner):
    min_epochs: int
    eta: int
    max_epochs: int

    @property
    def brackets(self) -> list[ASHAPruner]:
        firsts = ASHAPruner(self.min_epochs, self.eta, self.max_epochs).rungs + [self.max_epochs]  # the last: no rung
        return [ASHAPruner(rung, self.eta, self.max_epochs, key_offset=b * BRACKET_KEYS) for b, rung in enumerate(firsts)]

    def bracket_of(self, tid: int) -> int:
        """Hyperband's share of trials per bracket, dealt by a low-discrepancy sequence of tids."""
        weights = [self.eta ** len(b.rungs) / (len(b.rungs) + 1) for b in self.brackets]
        point = (tid * 0.6180339887498949) % 1.0 * sum(weights)
        return next(b for b, edge in enumerate(itertools.accumulate(weights)) if point < edge or b == len(weights) - 1)

    def prune(self, store: BaseStore, name: str, tid: int, curve: list[EpochReport]) -> bool:
        return self.brackets[self.bracket_of(tid)].prune(store, name, tid, curve)


def promotable(value: float, competing: list[float], eta: int) -> bool:
    """In the top 1/eta of the competing values (its own among them); the best of them while
    fewer than eta have arrived."""
    keep = max(1, len(competing) // eta)
    return value >= sorted(competing, reverse=True)[keep - 1]


def settings(kind: str, **options: int | None) -> dict:
    """An experiment's `pruner` document: kind and its parameters (defaults filled in); ValueError
    naming the option that is wrong."""
    if kind not in KINDS:
        raise ValueError(f"--pruner must be one of {', '.join(KINDS)}, got {kind!r}")
    given = {key: value for key, value in options.items() if value is not None}
    unused = sorted(set(given) - set(DEFAULTS.get(kind, {})))
    if unused:
        raise ValueError(f"{OPTIONS[unused[0]]} does not apply to --pruner {kind}")
    chosen = {**DEFAULTS.get(kind, {}), **given}
    if chosen.get("eta", 2) < 2:
        raise ValueError(f"--asha-eta must be at least 2, got {chosen['eta']}")
    return {"kind": kind, **chosen}


def pruner_for(experiment: dict, max_epochs: int) -> Pruner:
    """The experiment's pruner for a trial of max_epochs epochs (experiments made before pruners
    existed have none)."""
    chosen = experiment.get("pruner") or {"kind": "none"}
    if chosen["kind"] == "median":
        return MedianPruner(chosen["warmup"], chosen["min_trials"])
    if chosen["kind"] == "asha":
        return ASHAPruner(chosen["min_epochs"], chosen["eta"], max_epochs)
    if chosen["kind"] == "hyperband":
        return HyperbandPruner(chosen["min_epochs"], chosen["eta"], max_epochs)
    return NoPruner()
