"""What the store keeps: experiments, their trials and each trial's attempts, as frozen records.

Every part of the service reads these, never the documents: stores convert at their boundary
(`from_document` when they read, `to_document` when they write), and the documents keep the
format of earlier releases (docs/design.md, section 5, is checked against the fields here).
A trial's epochs and result are larnn_core's EpochReport and TrainResult (larnn_core/records.py);
the document hyperopt's algorithms read of a trial is made in one place (`hyperopt_document`), from
the little a worker reads of it at each suggestion (`TrialOutcome`, and its point).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from larnn_core.records import EpochReport, TrainResult
from larnn_core.selection import DEFAULT_RULE, LEGACY_RULE, VALIDATION_SUBJECTS
from workers.pruners import PrunerSettings

# hyperopt's job states, and PRUNED: stopped early by the experiment's pruner (workers/pruners.py),
# a final state that is no failure (5: not one of hyperopt's, whose 4 is "cancelled")
NEW, RUNNING, DONE, ERROR, PRUNED = 0, 1, 2, 3, 5
STATE_NAMES = {NEW: "queued", RUNNING: "running", DONE: "done", ERROR: "failed", PRUNED: "pruned"}
FINAL = (DONE, ERROR, PRUNED)
ATTEMPT_OUTCOMES = ("running", "finished", "given back", "heartbeat lost", "superseded")
HYPEROPT_CMD = ("domain_attachment", "FMinIter_Domain")  # what hyperopt's Trials expect in misc.cmd


@dataclass(frozen=True)
class Attempt:
    """One reservation of a trial: who held it, when, and how it ended (ATTEMPT_OUTCOMES; a
    worker whose trial was requeued for want of heartbeats ends as "heartbeat lost", and as
    "finished" if its complete result arrives later; the attempt that was retraining it then ends
    as "superseded")."""

    owner: str
    start: float
    end: float | None = None
    outcome: str = "running"
    resumed_from_epoch: int | None = None  # the epochs of the checkpoint it went on from

    def to_document(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        if self.resumed_from_epoch is None:  # attempts of earlier releases read back unchanged
            del document["resumed_from_epoch"]
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Attempt:
        return cls(**document)


@dataclass(frozen=True)
class StoredFile:
    """A file the store keeps for a trial (FILE_KINDS): where, how long, its SHA-256 (checked on
    every read), the epoch it holds, who wrote it and when."""

    location: str  # the backend's: a file name in the store's folder (SQLite), a GridFS id (MongoDB)
    sha256: str
    size: int
    epoch: int | None
    owner: str | None
    time: float

    def to_document(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> StoredFile:
        return cls(**document)


# a trial's files: its latest checkpoint while it runs (larnn_core/checkpoint.py), then the model
# of its selected epoch (what `larnn export` writes out), kept as the experiment's keep_artifacts says
CHECKPOINT, MODEL = "checkpoint", "model"
FILE_KINDS = (CHECKPOINT, MODEL)


NO_RESULT = TrainResult("new")  # a trial's result until it ends (hyperopt's "new")
CURVE_ATTEMPT = "attempt"  # a stored epoch report's attempt: its number in the trial's attempt_log, from 1


def curve_entry(report: EpochReport, attempt: int) -> dict[str, Any]:
    """An epoch report as a trial's stored curve keeps it: tagged with the attempt that trained it,
    so a requeued trial's new attempt starts a curve of its own (the pruner, status and plots read
    the current attempt's, which [1, 2, 1, 2, 3] was not) and the earlier ones stay on record."""
    return {**report.to_document(), CURVE_ATTEMPT: attempt}


@dataclass(frozen=True)
class Trial:
    """One point of an experiment's search and what became of it."""

    exp_key: str
    tid: int
    idxs: dict[str, list] = field(default_factory=dict)  # hyperopt's misc.idxs and misc.vals: the point
    vals: dict[str, list] = field(default_factory=dict)
    state: int = NEW
    owner: str | None = None
    book_time: float | None = None  # when its current (or last) attempt began
    refresh_time: float | None = None  # its last heartbeat, epoch report or end
    attempts: int = 0  # reservations that count towards max_attempts
    attempt_log: tuple[Attempt, ...] = ()
    curve: tuple[EpochReport, ...] = ()  # epochs its current (or last) attempt reported
    result: TrainResult = NO_RESULT
    files: dict[str, StoredFile] = field(default_factory=dict)  # by kind (FILE_KINDS)

    @classmethod
    def new(
        cls, exp_key: str, tid: int, idxs: dict, vals: dict, owner: str | None = None, now: float | None = None
    ) -> Trial:
        """A queued trial, or one reserved by owner at once (the suggesting worker runs it)."""
        if owner is None:
            return cls(exp_key, tid, idxs, vals)
        now = time.time() if now is None else now
        return cls(exp_key, tid, idxs, vals, RUNNING, owner, now, now, 1, (Attempt(owner, now),))

    @property
    def point(self) -> dict[str, Any]:
        """The hyperparameters it ran (its result's `space`, as the 2018 files keep them); {} before."""
        return self.result.extra.get("space") or {}

    def to_document(self) -> dict[str, Any]:
        """The stored trial: hyperopt's fields, so its algorithms read them unchanged, plus ours."""
        return {
            "exp_key": self.exp_key,
            "tid": self.tid,
            "spec": None,
            "version": 0,
            "misc": {"tid": self.tid, "cmd": list(HYPEROPT_CMD), "workdir": None, "idxs": self.idxs, "vals": self.vals},
            "state": self.state,
            "owner": self.owner,
            "book_time": self.book_time,
            "refresh_time": self.refresh_time,
            "attempts": self.attempts,
            "result": self.result.to_document(),
            "attempt_log": [a.to_document() for a in self.attempt_log],
            "curve": [curve_entry(e, len(self.attempt_log)) for e in self.curve],
            "files": {kind: f.to_document() for kind, f in self.files.items()},
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Trial:
        """Trials stored before attempt logs and live curves existed read with empty ones. The
        stored curve keeps every attempt's epochs (CURVE_ATTEMPT); the record's is the current
        attempt's (entries stored before they were tagged count as the current attempt's)."""
        misc = document.get("misc") or {}
        attempt = len(document.get("attempt_log") or ())
        curve = [e for e in document.get("curve") or () if e.get(CURVE_ATTEMPT, attempt) == attempt]
        return cls(
            document["exp_key"],
            document["tid"],
            misc.get("idxs") or {},
            misc.get("vals") or {},
            document["state"],
            document.get("owner"),
            document.get("book_time"),
            document.get("refresh_time"),
            document.get("attempts", 0),
            tuple(Attempt.from_document(a) for a in document.get("attempt_log") or ()),
            tuple(EpochReport.from_document({k: v for k, v in e.items() if k != CURVE_ATTEMPT}) for e in curve),
            TrainResult.from_document(document.get("result") or {"status": "new"}),
            {kind: StoredFile.from_document(f) for kind, f in (document.get("files") or {}).items()},
        )


def hyperopt_document(
    exp_key: str, tid: int, state: int, status: str, loss: float | None, idxs: dict, vals: dict
) -> dict[str, Any]:
    """A trial as hyperopt's Trials keep one (insert_trial_docs), with what its algorithms read of
    a result, status and loss: not the curves."""
    return {
        "exp_key": exp_key,
        "tid": tid,
        "spec": None,
        "version": 0,
        "owner": None,
        "book_time": None,
        "refresh_time": None,
        "result": {"status": status, **({"loss": loss} if loss is not None else {})},
        "state": state,
        "misc": {"tid": tid, "cmd": HYPEROPT_CMD, "workdir": None, "idxs": idxs, "vals": vals},
    }


class TrialOutcome(NamedTuple):
    """What a worker reads of each trial at every suggestion (BaseStore.trial_outcomes): a few
    numbers, where a summary is a record of dozens. The trial's point never changes once inserted,
    so a worker reads it once (BaseStore.trial_points, workers/history.py)."""

    tid: int
    state: int
    refresh_time: float | None
    status: str
    loss: float | None  # what hyperopt minimises and the stop rules compare (TrainResult.loss)

    @classmethod
    def of(cls, tid: int, state: int, refresh_time: float | None, result: dict[str, Any]) -> TrialOutcome:
        """From a result document, or the part of one a store projects (SUMMARY_RESULT)."""
        outcome = TrainResult.from_document(result)
        return cls(tid, state, refresh_time, outcome.status, outcome.loss)


@dataclass(frozen=True)
class Objective:
    """What each trial of an experiment trains on: the data source, an epochs override (None: the
    point's training_epochs), the training subjects held out for validation, whether the test split
    is read at every epoch, the selection rule (larnn_core/selection.py)."""

    source: str = "hapt"
    epochs: int | None = None
    validation_subjects: int = VALIDATION_SUBJECTS
    test_curves: bool = False  # evaluate the test split at every epoch (test-picked curves), not once
    selection: str = DEFAULT_RULE

    def to_document(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Objective:
        """Older experiments also stored a `metric` (never read), and no selection rule (theirs is
        LEGACY_RULE, whatever the default now is); imports name their files as source."""
        values = {f.name: document[f.name] for f in dataclasses.fields(cls) if f.name in document}
        return cls(**{"selection": LEGACY_RULE, **values})


DEFAULT_KEEP = "top-10"


def models_kept(keep: str) -> int | None:
    """An experiment's keep_artifacts as a count of models kept: "all" (None: no bound), "none"
    (0), or "top-K" (the K best finished trials'); ValueError for anything else."""
    if keep == "all":
        return None
    if keep == "none":
        return 0
    count = keep.removeprefix("top-")
    if keep.startswith("top-") and count.isdigit() and int(count) >= 1:
        return int(count)
    raise ValueError(f"keep_artifacts must be top-K (K >= 1), all or none, got {keep[:40]!r}")


@dataclass(frozen=True)
class Experiment:
    """A search: its space, algorithm, budget, objective and seed, its pruner, liar and stop rules,
    and what happened to it (failed, stopped, resumed). An import (`larnn import-results`) has
    algorithm "imported" and says where its trials came from."""

    name: str
    space: dict[str, Any] | None  # the declarative space as JSON (None: an import that fits no built-in space)
    algorithm: str
    max_evals: int
    objective: Objective
    seed: int | None
    created: float
    pruner: PrunerSettings = PrunerSettings("none")
    liar: str = "none"
    stop: dict[str, Any] = field(default_factory=lambda: {"no_improvement": None, "after_s": None})
    warm_start: dict[str, Any] | None = None  # {experiments, trials: [{source, tid, idxs, vals, loss}], left_out}
    failure: dict[str, Any] | None = None  # {reason, time} once failed
    stopped: dict[str, Any] | None = None  # {reason, time} once stopped
    resumed: float | None = None  # when its budget was last raised (--extend-to)
    space_name: str | None = None  # an import's built-in space
    imported_from: list[str] | None = None  # an import's files
    trial_order: str | None = None  # an import's: "file times" or "unordered"
    keep_artifacts: str = DEFAULT_KEEP  # whose models stay in the store once trials end (models_kept)
    confirms: dict[str, Any] | None = None  # a confirmation's {experiment, seeds, configurations} (workers/confirm.py)

    @property
    def imported(self) -> bool:
        return self.algorithm == "imported"

    def to_document(self) -> dict[str, Any]:
        document = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        document.update(objective=self.objective.to_document(), pruner=self.pruner.to_document())
        return {key: value for key, value in document.items() if value is not None or key in REQUIRED}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Experiment:
        """Experiments of earlier releases read too (no pruner: none; no liar: none)."""
        values = {f.name: document[f.name] for f in dataclasses.fields(cls) if document.get(f.name) is not None}
        values.update(
            objective=Objective.from_document(document.get("objective") or {}),
            pruner=PrunerSettings.from_document(document.get("pruner")),
        )
        values.setdefault("space", None)
        values.setdefault("seed", None)
        return cls(**values)


REQUIRED = ("name", "space", "algorithm", "max_evals", "objective", "seed", "created")  # always in the document
