"""Stopping hopeless trials early, per experiment (`--pruner none|median|asha|hyperband`).

The worker asks its pruner after every epoch, with the trial's curve so far; the pruner decides
from what the store holds (other trials' curves, ASHA's rung records), so workers on different
machines agree and a restarted worker continues where the last one stopped. The value compared is
a trial's best validation accuracy so far (robust to one noisy epoch).

    median  after `warmup` epochs, once at least `min_trials` completed trials reached this
            epoch: prune a trial whose best-so-far is below the median of theirs at this epoch.
            Completed trials only, as Optuna's MedianPruner: running trials' curves are still
            moving, and pruned ones are the low ones, which would pull the median down. Unlike
            Optuna, which sets the trial's best value so far against the others' values at the
            epoch, both sides are best-so-far: one lucky epoch does not carry a trial past
            others judged on a single noisy one.
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

Every pruner is a class here, registered under its kind in PRUNERS, declaring its parameters
(name, command-line flag, default, least value) and checking them when it is made: a wrong value
is a PrunerSettingError naming the parameter, which `larnn submit` reports under the flag. The
command line's options, the stored `pruner` document (PrunerSettings) and the worker's pruner
for each trial all come from the registry, so a new pruner is a class here and its test.
"""

from __future__ import annotations

import abc
import itertools
import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from larnn_core.records import EpochReport

if TYPE_CHECKING:  # the store's records name PrunerSettings: no import of the store at run time
    from workers.store import BaseStore

DEFAULT = "median"  # from benchmarks/bench_search.py: README, "Search economy", says why


@dataclass(frozen=True)
class Parameter:
    """A pruner's setting: its name (the pruner's field and the stored key), the command-line flag
    that sets it, its default, its least value and what it means."""

    name: str
    flag: str
    default: int
    least: int
    help: str


class PrunerSettingError(ValueError):
    """A pruner's setting that cannot be; `parameter` names it (the command line maps it to its flag)."""

    def __init__(self, parameter: str, problem: str):
        super().__init__(f"{parameter} {problem}")
        self.parameter, self.problem = parameter, problem


def best_so_far(curve: list[EpochReport], epoch: int) -> float:
    """The best validation accuracy of the curve's epochs up to `epoch` (-inf before any)."""
    return max(
        (e.validation_accuracy for e in curve if e.epoch <= epoch and e.validation_accuracy is not None),
        default=-math.inf,
    )


class Pruner(abc.ABC):
    kind: ClassVar[str]
    parameters: ClassVar[tuple[Parameter, ...]] = ()

    def __post_init__(self) -> None:
        """Each parameter a whole number of at least its least value (dataclass pruners)."""
        for parameter in self.parameters:
            value = getattr(self, parameter.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < parameter.least:
                raise PrunerSettingError(
                    parameter.name, f"must be a whole number of at least {parameter.least}, got {value!r}"
                )

    @classmethod
    def for_trial(cls, values: dict[str, int], max_epochs: int) -> Pruner:
        """The pruner of one trial that trains at most max_epochs epochs."""
        return cls(**values)

    @abc.abstractmethod
    def prune(self, store: BaseStore, name: str, tid: int, curve: list[EpochReport]) -> bool:
        """After an epoch: stop this trial? curve: its epochs so far, the last one just ended."""


PRUNERS: dict[str, type[Pruner]] = {}


def registered(cls: type[Pruner]) -> type[Pruner]:
    PRUNERS[cls.kind] = cls
    return cls


@registered
class NoPruner(Pruner):
    kind = "none"

    def prune(self, store: BaseStore, name: str, tid: int, curve: list[EpochReport]) -> bool:
        return False


class CompletedCurves:
    """The curves of an experiment's completed trials, each read whole once: at each read, the
    trials' outcomes changed since the last one (BaseStore.trial_outcomes) name the newly
    completed trials, and only those are read. A completed trial's curve never changes."""

    def __init__(self) -> None:
        self.curves: dict[int, tuple[EpochReport, ...]] = {}
        self.mark: int | None = None

    def read(self, store: BaseStore, name: str) -> dict[int, tuple[EpochReport, ...]]:
        from workers.records import DONE  # records import this module (PrunerSettings)

        outcomes, self.mark = store.trial_outcomes(name, self.mark)
        new = sorted({o.tid for o in outcomes if o.state == DONE} - set(self.curves))
        for trial in store.trials(name, new) if new else ():
            self.curves[trial.tid] = trial.curve
        return self.curves


@registered
@dataclass(frozen=True)
class MedianPruner(Pruner):
    kind: ClassVar[str] = "median"
    parameters: ClassVar[tuple[Parameter, ...]] = (
        Parameter("warmup", "--prune-warmup", 5, 1, "epochs before any stop"),
        Parameter("min_trials", "--prune-min-trials", 5, 1, "completed trials that must have reached the epoch"),
    )
    warmup: int = 5
    min_trials: int = 5
    completed: CompletedCurves = field(default_factory=CompletedCurves, compare=False, repr=False)  # this trial's

    def prune(self, store: BaseStore, name: str, tid: int, curve: list[EpochReport]) -> bool:
        epoch = curve[-1].epoch
        if epoch <= self.warmup:
            return False
        others = [
            best_so_far(other, epoch)
            for other_tid, other in self.completed.read(store, name).items()
            if other_tid != tid and any(e.epoch >= epoch for e in other)
        ]
        return len(others) >= self.min_trials and best_so_far(curve, epoch) < statistics.median(others)


@dataclass(frozen=True)
class RungPruner(Pruner):
    """What ASHA and Hyperband share: rungs at min_epochs * eta^k epochs, below the trial's last."""

    parameters: ClassVar[tuple[Parameter, ...]] = (
        Parameter("min_epochs", "--asha-min-epochs", 5, 1, "the first rung, in epochs"),
        Parameter("eta", "--asha-eta", 3, 2, "rungs at R, R*ETA, R*ETA^2, ...; the top 1/ETA go on"),
    )
    min_epochs: int = 5
    eta: int = 3
    max_epochs: int | None = None  # the trial's training_epochs: no rung at or past it

    @classmethod
    def for_trial(cls, values: dict[str, int], max_epochs: int) -> RungPruner:
        return cls(**values, max_epochs=max_epochs)

    @property
    def rungs(self) -> list[int]:
        return [self.min_epochs * self.eta**k for k in range(64) if self.min_epochs * self.eta**k < self.max_epochs]


@registered
@dataclass(frozen=True)
class ASHAPruner(RungPruner):
    kind: ClassVar[str] = "asha"
    record: str = "rung"  # its rung records' names in the store: "<record> <epoch>"

    def prune(self, store: BaseStore, name: str, tid: int, curve: list[EpochReport]) -> bool:
        epoch = curve[-1].epoch
        if epoch not in self.rungs:
            return False
        reached = store.append_record(name, f"{self.record} {epoch}", tid, best_so_far(curve, epoch))
        return not promotable(dict(reached)[tid], [value for _, value in reached], self.eta)


@registered
@dataclass(frozen=True)
class HyperbandPruner(RungPruner):
    kind: ClassVar[str] = "hyperband"

    @property
    def brackets(self) -> list[ASHAPruner]:
        """Bracket b: ASHA from the b-th rung, with rung records "bracket b rung <epoch>" (bracket 0's
        are plain ASHA's, "rung <epoch>")."""
        firsts = self.rungs + [self.max_epochs]  # the last: no rung
        return [
            ASHAPruner(rung, self.eta, self.max_epochs, record=f"bracket {b} rung" if b else "rung")
            for b, rung in enumerate(firsts)
        ]

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


def flags() -> dict[str, Parameter]:
    """Every pruner parameter by its command-line flag (pruners may share one, as ASHA and Hyperband do)."""
    return {parameter.flag: parameter for cls in PRUNERS.values() for parameter in cls.parameters}


@dataclass(frozen=True)
class PrunerSettings:
    """An experiment's pruner as stored with it: the kind and its parameters, defaults filled in."""

    kind: str
    values: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, kind: str = DEFAULT, **given: int | None) -> PrunerSettings:
        """Checked as the pruner checks itself; PrunerSettingError naming the parameter (or `kind`)."""
        if kind not in PRUNERS:
            raise PrunerSettingError("kind", f"must be one of {', '.join(PRUNERS)}, got {kind!r}")
        pruner = PRUNERS[kind]
        given = {name: value for name, value in given.items() if value is not None}
        for name in given:
            if name not in {p.name for p in pruner.parameters}:
                raise PrunerSettingError(name, f"does not apply to the {kind} pruner")
        values = {p.name: given.get(p.name, p.default) for p in pruner.parameters}
        pruner(**values)  # checks them
        return cls(kind, tuple(values.items()))

    def to_document(self) -> dict[str, Any]:
        return {"kind": self.kind, **dict(self.values)}

    @classmethod
    def from_document(cls, document: dict[str, Any] | None) -> PrunerSettings:
        """Experiments made before pruners existed have none."""
        document = document or {"kind": "none"}
        return cls.of(document["kind"], **{k: v for k, v in document.items() if k != "kind"})

    def for_trial(self, max_epochs: int) -> Pruner:
        return PRUNERS[self.kind].for_trial(dict(self.values), max_epochs)
