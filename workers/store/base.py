"""The trial store interface. Two backends implement it (sqlite.py, mongo.py); one contract test
suite (tests/support/store_contract.py) runs against each.

Every call waits a bounded time; a store that does not answer in it (down, unreachable, locked
by another process) raises StoreUnavailable, whatever the backend, so callers retry without
knowing sqlite3 or pymongo.

Stores take and return the records of workers/records.py (Experiment, Trial with its Attempts,
larnn_core's EpochReport and TrainResult) and keep their documents (`to_document`), which stay
hyperopt-compatible. Times are seconds since the epoch. Everything is JSON: nothing is pickled
into or out of a store.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import time
from collections.abc import Sequence

from larnn_core.records import FAIL, SELECTED, EpochReport, TrainResult
from workers.records import FINAL, STATE_NAMES, Experiment, StoredFile, Trial, TrialOutcome

# a trial document's top-level fields that hold plain values (the others hold documents): a trial
# summary keeps them all
PLAIN_FIELDS = ("exp_key", "tid", "state", "owner", "book_time", "refresh_time", "attempts")
# a trial document's fields that a summary keeps besides those: its files' records (a few each)
SUMMARY_DOCUMENTS = ("files",)
# what a trial summary keeps of a result document: hyperopt's status and loss, the selected epoch
# and its numbers (larnn_core.records.SELECTED's names), and why it failed
SUMMARY_RESULT = ("status", "loss", "best_epoch", "error", *SELECTED.values())


class ExperimentExists(ValueError):
    pass


class StoreUnavailable(ConnectionError):
    """The store did not answer within its bounded wait: try again later."""


class UnknownExperiment(ValueError):
    pass


class ReadOnlyStore(ValueError):
    """A write to a store opened for a command that only reads."""


class DamagedFile(ValueError):
    """A trial's file whose bytes are missing or do not match the checksum recorded with it."""


# the interface's methods that write (the other writes go through them): a store opened read_only
# refuses each, whatever the backend
WRITES = frozenset(
    {
        "create_experiment",
        "_update_experiment",
        "acquire_lease",
        "release_lease",
        "insert_trial",
        "reserve",
        "heartbeat",
        "report_epoch",
        "append_record",
        "finish",
        "release",
        "requeue_stale",
        "note_resumed",
        "_put_file",
        "_set_file",
        "_remove_file",
    }
)


def _refused_when_read_only(method):
    @functools.wraps(method)
    def write(self, *args, **kwargs):
        if self.read_only:
            raise ReadOnlyStore(f"the store was opened read-only: {method.__name__} is a write")
        return method(self, *args, **kwargs)

    return write


class BaseStore(abc.ABC):
    """Experiments and their trials. Every method is atomic on its own."""

    read_only = False  # a backend opened for a command that only reads sets it

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """Which store this is, the same for every connection to it and without credentials:
        what a worker's result spool is kept under (workers on different stores must not deliver,
        or drop, each other's results)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in WRITES & set(vars(cls)):
            setattr(cls, name, _refused_when_read_only(vars(cls)[name]))

    # -- experiments
    @abc.abstractmethod
    def create_experiment(self, experiment: Experiment, trials: Sequence[Trial] = ()) -> None:
        """Register an experiment together with its first trials (finished ones: an import's), all
        or nothing: a failure (ExperimentExists if the name is taken, a bad trial, an outage)
        leaves no trace of either, and no reader sees the experiment before all its trials."""

    @abc.abstractmethod
    def get_experiment(self, name: str) -> Experiment:
        """UnknownExperiment if absent."""

    @abc.abstractmethod
    def experiments(self) -> list[Experiment]:
        """All experiments, oldest first."""

    @abc.abstractmethod
    def _update_experiment(self, name: str, fields: dict) -> None:
        """Set these top-level fields of the experiment's document, in one atomic write;
        UnknownExperiment if absent."""

    @abc.abstractmethod
    def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Take the experiment's suggestion lease unless another owner holds an unexpired one."""

    @abc.abstractmethod
    def release_lease(self, name: str, owner: str) -> None:
        """Give the lease back (only if owner holds it)."""

    # -- trials
    @abc.abstractmethod
    def insert_trial(self, trial: Trial) -> None:
        """Add a trial; its (exp_key, tid) must be new."""

    @abc.abstractmethod
    def trials(self, name: str, tids: Sequence[int] | None = None) -> list[Trial]:
        """All trials of an experiment (or those of these tids), by tid, curves and all."""

    @abc.abstractmethod
    def trial_summaries(self, name: str) -> list[Trial]:
        """All trials of an experiment, by tid, without what grows with their epochs: no curve, no
        attempt log, and of the result only SUMMARY_RESULT (a projection: the rest is never read).
        What suggestions, stop rules, `status` and `best` rank on: at 1000 trials of 100 epochs the
        whole trials are 50 MB and take seconds to read, their summaries milliseconds."""

    @abc.abstractmethod
    def trial_outcomes(self, name: str, since: int | None = None) -> tuple[list[TrialOutcome], int | None]:
        """The trials of an experiment changed after mark `since` (every trial when None), in no
        particular order, as the few numbers a worker reads at each of its suggestions
        (workers/history.py); and the mark to pass next time. A backend that keeps no change
        marks returns every trial and None."""

    @abc.abstractmethod
    def trial_points(self, name: str, tids: Sequence[int]) -> dict[int, tuple[dict, dict]]:
        """The misc.idxs and misc.vals of these trials (those that exist), by tid: what a worker
        reads once of each trial, since a point never changes after its insert."""

    @abc.abstractmethod
    def reserve(self, owner: str, experiment: str | None = None) -> Trial | None:
        """Atomically take the oldest queued trial (of one experiment, or of any): state RUNNING,
        owner set, attempts + 1. None when nothing is queued."""

    @abc.abstractmethod
    def heartbeat(self, name: str, tid: int, owner: str) -> bool:
        """Refresh a running trial; False if it is no longer this owner's (it was requeued)."""

    @abc.abstractmethod
    def report_epoch(self, name: str, tid: int, owner: str, report: EpochReport) -> bool:
        """Append one epoch's report to a running trial's `curve`, as heartbeat and finish are
        fenced: False, and nothing written, if the trial is no longer this owner's."""

    @abc.abstractmethod
    def append_record(self, name: str, record: str, key: int, value: float) -> list[tuple[int, float]]:
        """Atomically append (key, value) to the experiment's record named `record` (created empty
        on first use) and return all its (key, value) entries in arrival order, this one's
        included; a key already there keeps its first value. Callers that decide from what this
        returns decide from prefixes of one serial order (ASHA's rungs: key a tid, value its
        accuracy at the rung; a rerun of the trial decides from the record)."""

    @abc.abstractmethod
    def finish(self, name: str, tid: int, owner: str, state: int, result: TrainResult) -> bool:
        """Record a final state (one of FINAL) and result; False (and nothing written) if the trial
        is no longer this owner's, unless it was requeued for want of owner's heartbeats and has no
        final result yet: a complete result that an outage held up is not trained again, and an
        attempt retraining it ends as "superseded" (late_delivery)."""

    @abc.abstractmethod
    def release(self, name: str, tid: int, owner: str) -> bool:
        """Give a running trial back to the queue (a graceful stop does not count as an attempt)."""

    @abc.abstractmethod
    def requeue_stale(self, older_than: float, max_attempts: int) -> list[dict]:
        """Running trials whose heartbeat is older than `older_than` seconds go back to the queue,
        or, after max_attempts reservations, are marked failed with the reason. Returns one
        {exp_key, tid, owner, outcome: "requeued" | "failed"} per trial, for the log."""

    @abc.abstractmethod
    def state_counts(self, name: str) -> dict[int, int]:
        """{state: number of trials} without reading the trials (status polls and budget checks)."""

    @abc.abstractmethod
    def note_resumed(self, name: str, tid: int, owner: str, epoch: int | None) -> bool:
        """Record in owner's running attempt that it went on from a checkpoint of `epoch` epochs
        (`resumed_from_epoch`; None: it did not after all); fenced as report_epoch is."""

    # -- a trial's files (workers.records.FILE_KINDS): bytes kept apart from the trial's document,
    # which records each one (StoredFile); the backend's primitives, then the rules every backend shares
    @abc.abstractmethod
    def _put_file(self, name: str, tid: int, kind: str, data: bytes) -> str:
        """Keep data durably (on disk, or in the database) under a new location, and return it; no
        trial refers to it yet."""

    @abc.abstractmethod
    def _set_file(
        self, name: str, tid: int, kind: str, stored: StoredFile | None, owner: str | None
    ) -> tuple[bool, StoredFile | None]:
        """Atomically make `stored` (None: no file) the trial's file of this kind, and return
        (done, the record it replaced). With an owner, fenced as report_epoch is: (False, None)
        and nothing changed unless the trial is running and owner's. (False, None) for an unknown trial."""

    @abc.abstractmethod
    def _get_file(self, location: str) -> bytes | None:
        """The bytes at location; None if they are gone."""

    @abc.abstractmethod
    def _remove_file(self, location: str) -> None:
        """Delete the bytes at location (nothing if they are gone already)."""

    # -- derived, the same for every backend
    def set_max_evals(self, name: str, max_evals: int) -> None:
        """Raise (or lower) an experiment's budget."""
        self._update_experiment(name, {"max_evals": max_evals})

    def fail_experiment(self, name: str, reason: str) -> None:
        """Mark an experiment failed (its `failure`: reason and time): workers take no more of its
        trials. A bad experiment ends itself, never the workers that share the store."""
        self._update_experiment(name, {"failure": {"reason": reason, "time": time.time()}})

    def stop_experiment(self, name: str, reason: str) -> None:
        """End an experiment early (its `stopped`: reason and time): no more suggestions for it."""
        self._update_experiment(name, {"stopped": {"reason": reason, "time": time.time()}})

    def resume_experiment(self, name: str, max_evals: int) -> None:
        """A new budget for an experiment, stopped or not; its stop rules count from now (`resumed`)."""
        self._update_experiment(name, {"max_evals": max_evals, "stopped": None, "resumed": time.time()})

    def save_file(self, name: str, tid: int, kind: str, data: bytes, epoch: int | None, owner: str | None) -> bool:
        """Keep data as the trial's file of this kind, then delete the one it replaces. With an
        owner, only while the trial is owner's and running (False, and nothing kept, otherwise):
        a superseded worker cannot overwrite a newer checkpoint. The bytes are written before the
        record, so a record always names whole bytes; a writer killed in between leaves bytes no
        record names (in SQLite's folder: removed with the next file of the trial)."""
        location = self._put_file(name, tid, kind, data)
        stored = StoredFile(location, hashlib.sha256(data).hexdigest(), len(data), epoch, owner, time.time())
        try:
            done, replaced = self._set_file(name, tid, kind, stored, owner)
        except BaseException:  # not recorded (an outage): bytes no record names are removed
            with contextlib.suppress(Exception):
                self._remove_file(location)
            raise
        if not done:
            self._remove_file(location)
        elif replaced is not None:
            self._remove_file(replaced.location)
        return done

    def read_file(self, name: str, tid: int, kind: str) -> tuple[StoredFile, bytes] | None:
        """The trial's file of this kind and its bytes (None: it has none); DamagedFile when the
        bytes are gone or fail their checksum."""
        trials = self.trials(name, [tid])
        stored = trials[0].files.get(kind) if trials else None
        if stored is None:
            return None
        data = self._get_file(stored.location)
        if data is None:
            raise DamagedFile(f"the {kind} of trial {name}/{tid} (epoch {stored.epoch}) is missing from the store")
        if len(data) != stored.size or hashlib.sha256(data).hexdigest() != stored.sha256:
            raise DamagedFile(f"the {kind} of trial {name}/{tid} (epoch {stored.epoch}) fails its SHA-256 check")
        return stored, data

    def drop_file(self, name: str, tid: int, kind: str) -> None:
        """Delete the trial's file of this kind, if it has one (any worker may: a finished trial's
        checkpoint, a model beyond keep_artifacts)."""
        done, replaced = self._set_file(name, tid, kind, None, None)
        if done and replaced is not None:
            self._remove_file(replaced.location)

    def counts(self, name: str) -> dict[str, int]:
        """Trials by state name, every state present."""
        by_state = self.state_counts(name)
        return {label: by_state.get(state, 0) for state, label in STATE_NAMES.items()}

    def close(self) -> None:  # noqa: B027 (optional: a backend without connections needs nothing)
        """Release connections."""


def late_delivery(state: int, attempt_log: list[dict], owner: str, now: float) -> list[dict] | None:
    """finish's rule for a result from an attempt that was requeued (its worker's heartbeats stopped,
    most often in a store outage, while it trained on): the trial's attempt log with that attempt
    finished and any running one superseded; None when the result is not accepted (the trial is
    final, or owner never held it)."""
    lost = [i for i, a in enumerate(attempt_log) if a["owner"] == owner and a["outcome"] == "heartbeat lost"]
    if state in FINAL or not lost:
        return None
    log = [{**a, "end": now, "outcome": "superseded"} if a["outcome"] == "running" else a for a in attempt_log]
    log[lost[-1]] = {**log[lost[-1]], "end": now, "outcome": "finished"}
    return log


def abandoned(older_than: float, attempts: int, owner: str | None) -> TrainResult:
    """The result of a trial whose worker's heartbeats stopped once too often (requeue_stale)."""
    return TrainResult(
        FAIL,
        error=f"no heartbeat from its worker for {older_than:g} s, {attempts} times (last owner {owner}); giving up",
    )


def own_trials(experiment: Experiment, trials: Sequence[Trial]) -> list[Trial]:
    """create_experiment's trials, refused (ValueError, before anything is written) unless each
    belongs to the experiment being created and is finished (no worker may take a trial of an
    experiment that is still being created)."""
    strays = sorted({t.exp_key for t in trials} - {experiment.name})
    if strays:
        raise ValueError(f"trials of {strays[0]!r} cannot be created with experiment {experiment.name!r}")
    unfinished = [t.tid for t in trials if t.state not in FINAL]
    if unfinished:
        raise ValueError(f"trial {unfinished[0]} is not finished: an experiment is created with finished trials only")
    return list(trials)
