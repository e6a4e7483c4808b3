"""What a worker keeps of an experiment's trials between its suggestions.

A suggestion needs every trial's state and loss, which change, and its point, which does not once
the trial is inserted. So a History reads the outcomes at every suggestion (BaseStore.
trial_outcomes: a few numbers per trial) and the points only of trials it has not seen
(BaseStore.trial_points), and keeps the points as the arrays TPE reads (workers/tpe.py). At
10,000 trials a suggestion that read every trial's summary spent 0.8 s reading
(benchmarks/bench_fleet.py; README, "How far one store goes").
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from hyperopt import Domain

from workers.experiment import stored_space
from workers.records import Experiment, Trial, TrialOutcome
from workers.store import BaseStore
from workers.tpe import Posterior


class History:
    """One experiment's trials as one worker has read them; `refresh` before each suggestion."""

    def __init__(self, experiment: Experiment):
        self.name, self.created, self.experiment = experiment.name, experiment.created, experiment
        self.points: dict[int, tuple[dict, dict]] = {}  # tid -> (misc.idxs, misc.vals), warm start's too
        warm = (experiment.warm_start or {}).get("trials", [])
        self.warm: list[tuple[int, float]] = [(t["tid"], t["loss"]) for t in warm]  # (tid, loss)
        # per label, the tids that have a value for it and their values, both in tid order
        self.labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.mark: int | None = None  # the store's change mark as of the last refresh (trial_outcomes)
        self.by_tid: dict[int, TrialOutcome] = {}
        self._add({t["tid"]: (t["idxs"], t["vals"]) for t in warm})

    @classmethod
    def of(cls, experiment: Experiment, trials: Sequence[Trial]) -> History:
        """A history of trial records at hand (tests, benchmarks, replays), as a store would give."""
        history = cls(experiment)
        history.update(
            [TrialOutcome.of(t.tid, t.state, t.refresh_time, t.result.to_document()) for t in trials],
            {t.tid: (t.idxs, t.vals) for t in trials},
        )
        return history

    def fits(self, experiment: Experiment) -> bool:
        """Whether it is this experiment's (not one deleted and created again under its name)."""
        return (self.name, self.created) == (experiment.name, experiment.created)

    def __len__(self) -> int:
        return len(self.by_tid)

    @property
    def outcomes(self) -> list[TrialOutcome]:
        return list(self.by_tid.values())

    def refresh(self, store: BaseStore) -> None:
        """Read what changed since the last refresh: outcomes, and the points of new trials."""
        outcomes, mark = store.trial_outcomes(self.name, self.mark)
        unseen = [o.tid for o in outcomes if o.tid not in self.points]
        self.update(
            outcomes, store.trial_points(self.name, unseen) if unseen else {}, self.mark is None or mark is None
        )
        self.mark = mark

    def update(self, outcomes: list[TrialOutcome], points: dict[int, tuple[dict, dict]], every: bool = True) -> None:
        """Take these outcomes (`every`: they are all the trials there are) and new points."""
        self._add({tid: point for tid, point in points.items() if tid not in self.points})
        outcomes = [o for o in outcomes if o.tid in self.points]  # a trial deleted between the reads
        if every:
            self.by_tid = {}
        self.by_tid.update((o.tid, o) for o in outcomes)

    @property
    def columns(self) -> dict[str, tuple]:
        """The outcomes field by field (TPE reads them as arrays)."""
        values = list(zip(*self.by_tid.values())) or [()] * len(TrialOutcome._fields)
        return dict(zip(TrialOutcome._fields, values))

    def observed(self, tids: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per label of the space, the tids among these that have a value for it, and the values
        (tid order)."""
        observed = {}
        for label in self.domain.params:
            label_tids, values = self.labels.get(label, (np.zeros(0, dtype=np.int64), np.zeros(0)))
            among = np.isin(label_tids, tids)
            observed[label] = (label_tids[among], values[among])
        return observed

    @functools.cached_property
    def domain(self) -> Domain:
        """hyperopt's view of the experiment's space, made at the first suggestion (where a space
        hyperopt refuses fails its experiment, workers/worker.py)."""
        return Domain(lambda point: 0.0, stored_space(self.experiment).hyperopt())

    @functools.cached_property
    def posterior(self) -> Posterior:
        """TPE's graph for the space, built at its first use."""
        return Posterior(self.domain)

    def _add(self, points: dict[int, tuple[dict, dict]]) -> None:
        if not points:
            return
        self.points.update(points)
        ordered = sorted(points.items())
        for label in {label for idxs, _ in points.values() for label, ids in idxs.items() if ids}:
            new = [(tid, vals[label][0]) for tid, (idxs, vals) in ordered if idxs.get(label)]
            added = np.asarray([value for _, value in new])
            tids, values = self.labels.get(label, (np.zeros(0, dtype=np.int64), added[:0]))
            tids = np.concatenate([tids, np.array([tid for tid, _ in new], dtype=np.int64)])
            values = np.concatenate([values, added])
            if np.any(np.diff(tids) < 0):  # points read out of tid order (a warm start's come first)
                order = np.argsort(tids, kind="stable")
                tids, values = tids[order], values[order]
            self.labels[label] = (tids, values)
