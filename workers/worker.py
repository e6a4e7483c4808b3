"""A long-lived worker: takes the next trial of any experiment with budget left, trains, reports.

No driver process: when nothing is queued, the worker takes the experiment's short suggestion
lease, runs the experiment's hyperopt algorithm on the stored trials and inserts the new trial
already reserved to itself. While a trial runs, a thread sends heartbeats; a trial whose
heartbeats stop goes back to the queue (requeue_stale, run by every worker), and after
max_attempts it is marked failed. SIGTERM (or Ctrl-C) stops at the next epoch boundary and gives
the trial back. At every epoch boundary the trial's checkpoint is kept in the store (fenced by
owner), so a trial that a stopped, killed or preempted worker leaves goes on, on any worker, from
its last epoch; when it ends its selected-epoch model is kept instead (as many as the
experiment's keep_artifacts says). A finished result is written to a local spool file before any store call and
removed only once the store has accepted it, so an unreachable store or a killed worker never
loses a result: the next worker on the machine delivers it. A spool that cannot be written stops
the worker before it trains results it could not keep. An experiment whose suggestion or
hyperparameters fail is marked failed and skipped; the worker goes on with the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import signal
import socket
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from larnn_core.checkpoint import DESCRIBED, IDENTITY, Checkpoint, CheckpointRefused, model_bytes
from larnn_core.records import FAIL, OK, EpochReport, TrainResult
from workers.history import History
from workers.objective import ObjectiveFunction, train_objective
from workers.pruners import Pruner
from workers.records import CHECKPOINT, DONE, ERROR, FINAL, MODEL, PRUNED, Trial, models_kept
from workers.report import ranked
from workers.stops import stop_reason
from workers.store import BaseStore, StoreUnavailable
from workers.store.base import DamagedFile
from workers.suggest import hyperparameters, suggest, trial_hparams, trial_seed

log = logging.getLogger("larnn.worker")


class StopRequested(Exception):
    """SIGTERM / Ctrl-C: leave at the epoch boundary and give the trial back."""


class TrialLost(Exception):
    """The trial was requeued to another worker (our heartbeats did not arrive in time)."""


class SpoolUnwritable(RuntimeError):
    """The local result spool cannot be written: the worker stops taking trials."""


class ExperimentFailed(RuntimeError):
    """The one experiment this worker was asked to work on is marked failed."""


def default_owner() -> str:
    """host:pid:random: unique across machines, processes and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def default_spool() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "larnn" / "spool"


MAX_BACKOFF_S = 60.0  # the longest wait between two tries of an unavailable store


def wait_for_store(open_store: Callable[[], BaseStore], retry_s: float = 1.0) -> BaseStore:
    """open_store(), tried again after each StoreUnavailable (a store that is down or locked when
    a worker starts), with the worker's logged backoff: a worker waits for its store, it does not
    exit (a supervisor would not know whether to start it again)."""
    backoff = retry_s
    while True:
        try:
            return open_store()
        except StoreUnavailable as error:
            log.warning("waiting for the trial store (%s); retrying in %.0f s", error, backoff)
            time.sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)


class Worker:
    def __init__(
        self,
        store: BaseStore,
        objective: ObjectiveFunction = train_objective,
        *,
        experiment: str | None = None,
        device: str = "auto",
        owner: str | None = None,
        heartbeat_s: float = 10.0,
        stale_after_s: float = 120.0,
        max_attempts: int = 3,
        lease_s: float = 60.0,
        poll_s: float = 2.0,
        idle_exit_s: float | None = None,
        max_trials: int | None = None,
        spool: Path | None = None,
        retry_s: float = 1.0,
        checkpoint_every_s: float = 0.0,
    ):
        self.store, self.objective, self.experiment, self.device = store, objective, experiment, device
        self.owner = owner or default_owner()
        self.heartbeat_s, self.stale_after_s, self.max_attempts = heartbeat_s, stale_after_s, max_attempts
        self.lease_s, self.poll_s, self.idle_exit_s, self.max_trials = lease_s, poll_s, idle_exit_s, max_trials
        # a folder per store: a worker delivers (or, when the store says the trial moved on, drops)
        # only the results of its own store
        self.spool = Path(spool or default_spool()) / hashlib.sha256(store.identity.encode()).hexdigest()[:16]
        self.retry_s = retry_s  # first wait after a store error; doubles up to MAX_BACKOFF_S
        self.checkpoint_every_s = checkpoint_every_s  # 0: a checkpoint at every epoch boundary
        earlier = sorted(self.spool.parent.glob("*.json"))  # spooled before there was a folder per store
        if earlier:
            log.warning(
                "%d result(s) spooled by an earlier release in %s, whose store they do not name: move "
                "each into its store's folder (this store's is %s) and a worker of that store delivers it",
                len(earlier),
                self.spool.parent,
                self.spool,
            )
        self.stopping = threading.Event()
        self.finished = 0
        self.histories: dict[str, History] = {}  # by experiment: what this worker has read of its trials

    # -- the loop
    def run(self) -> int:
        """Work until stopped, idle for idle_exit_s, or max_trials finished. Returns trials finished."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        log.info("worker %s started (device %s)", self.owner, self.device)
        idle_since = time.monotonic()
        backoff = self.retry_s
        while not self.stopping.is_set() and (self.max_trials is None or self.finished < self.max_trials):
            try:
                self.check_spool()
                self.flush_spool()
                trial = self.next_trial()
                backoff = self.retry_s
            except StoreUnavailable as error:
                log.warning("waiting for the trial store (%s); retrying in %.0f s", error, backoff)
                self.stopping.wait(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            if trial is None:
                if self.idle_exit_s is not None and time.monotonic() - idle_since > self.idle_exit_s:
                    log.info("idle for %.0f s: exiting", self.idle_exit_s)
                    break
                self.stopping.wait(self.poll_s)
                continue
            try:
                self.run_trial(trial)
            except StoreUnavailable as error:  # the trial goes back to the queue when its heartbeats stop
                log.warning("trial %s/%d abandoned: the store went away (%s)", trial.exp_key, trial.tid, error)
            idle_since = time.monotonic()
        log.info("worker %s stopped after %d trial(s)", self.owner, self.finished)
        return self.finished

    def stop(self) -> None:
        self.stopping.set()

    def check_spool(self) -> None:
        """SpoolUnwritable unless a result could be spooled now."""
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.spool) as probe:
                probe.write(b"probe")
        except OSError as error:
            raise SpoolUnwritable(
                f"cannot write to the result spool {self.spool} ({error.strerror or error}): "
                "no trial is taken until results can be kept (free the disk, or point "
                "XDG_CACHE_HOME at a writable folder)"
            ) from None

    def next_trial(self) -> dict | None:
        """A queued trial, else a new suggestion for an experiment with budget left, else None."""
        for moved in self.store.requeue_stale(self.stale_after_s, self.max_attempts):
            log.warning(
                "trial %s/%d %s: no heartbeat from %s for %.0f s",
                moved["exp_key"],
                moved["tid"],
                "requeued" if moved["outcome"] == "requeued" else "failed after its last attempt",
                moved["owner"],
                self.stale_after_s,
            )
        if self.experiment:
            failure = self.store.get_experiment(self.experiment).failure
            if failure:
                raise ExperimentFailed(f"experiment {self.experiment!r} has failed: {failure['reason']}")
        trial = self.store.reserve(self.owner, self.experiment)
        if trial is not None:
            return trial
        experiments = [self.store.get_experiment(self.experiment)] if self.experiment else self.store.experiments()
        for experiment in experiments:
            name = experiment.name
            if experiment.failure or experiment.stopped or experiment.confirms:
                continue  # a confirmation's trials are all queued by `larnn confirm`: none to suggest
            if sum(self.store.state_counts(name).values()) >= experiment.max_evals:
                continue  # budget spent: checked cheaply, before taking the lease and reading trials
            if not self.store.acquire_lease(name, self.owner, self.lease_s):
                continue
            try:
                experiment = self.store.get_experiment(name)
                history = self.histories.get(name)
                if history is None or not history.fits(experiment):
                    history = self.histories[name] = History(experiment)
                history.refresh(self.store)
                if len(history) >= experiment.max_evals:
                    continue
                reason = stop_reason(experiment, history.outcomes, time.time())
                if reason:
                    log.info("experiment %s stopped: %s", name, reason)
                    self.store.stop_experiment(name, reason)
                    continue
                tid = max(history.by_tid, default=-1) + 1
                try:
                    idxs, vals = suggest(experiment, history, tid)
                except Exception as error:  # the experiment's fault: it ends, the worker goes on
                    self.fail_experiment(name, f"suggesting trial {tid} failed: {_summary(error)}")
                    continue
                trial = Trial.new(name, tid, idxs, vals, owner=self.owner)
                self.store.insert_trial(trial)
                return trial
            finally:
                self.store.release_lease(name, self.owner)
        return None

    def fail_experiment(self, name: str, reason: str) -> None:
        log.error("experiment %s marked failed: %s", name, reason)
        self.store.fail_experiment(name, reason)

    # -- one trial
    def run_trial(self, trial: Trial) -> None:
        """Train a reserved trial and report its result; a stop request gives it back, a lost
        reservation drops it, and an exception of the objective is the trial's failure."""
        name, tid = trial.exp_key, trial.tid
        experiment = self.store.get_experiment(name)
        if experiment.failure:  # a trial queued before its experiment failed
            self.report(name, tid, ERROR, TrainResult(FAIL, error=f"experiment failed: {experiment.failure['reason']}"))
            return
        try:
            point = hyperparameters(experiment, trial)
        except Exception as error:  # the experiment's space cannot build this point: the experiment's fault
            reason = f"building the hyperparameters of trial {tid} failed: {_summary(error)}"
            self.fail_experiment(name, reason)
            self.report(name, tid, ERROR, TrainResult(FAIL, error=reason))
            return
        last_epoch = trial_hparams(point, experiment.objective).training_epochs
        pruner = experiment.pruner.for_trial(last_epoch)
        started = time.time()
        with Heartbeats(self.store, name, tid, self.owner, self.heartbeat_s) as heartbeats:
            session = TrialSession(
                self.store,
                name,
                tid,
                self.owner,
                pruner,
                heartbeats.lost,
                self.stopping,
                last_epoch,
                self.checkpoint_every_s,
            )
            try:
                log.info("trial %s/%d: %s", name, tid, json.dumps(point))
                result = self.objective(point, experiment.objective, trial_seed(experiment, tid), self.device, session)
            except StopRequested:
                self.store.release(name, tid, self.owner)
                log.info("trial %s/%d given back to the queue", name, tid)
                return
            except TrialLost:
                log.warning("trial %s/%d was requeued to another worker; dropping this run", name, tid)
                return
            except Exception as error:  # the objective's failure is the trial's result, not the worker's end
                result = TrainResult(
                    FAIL, error=f"{type(error).__name__}: {error}", extra={"traceback": traceback.format_exc()}
                )
            state, result = judge(result, session.pruned_at)
            kept = models_kept(experiment.keep_artifacts)
            with_model = state != ERROR and kept != 0 and session.keep_model(result)
        if state == PRUNED:
            log.info("trial %s/%d pruned at epoch %d", name, tid, session.pruned_at)
        # `space`: the sampled point, as in the 2018 result files (`hyperparameters` adds the defaults)
        ran = dict(space=point, worker=self.owner, trial_wall_time_s=time.time() - started)
        if not self.report(name, tid, state, dataclasses.replace(result, extra={**result.extra, **ran})):
            return  # the trial is another worker's now: so is its checkpoint
        try:
            if session.checkpointed:
                self.store.drop_file(name, tid, CHECKPOINT)  # an ended trial keeps its model only
        except StoreUnavailable as error:
            log.warning(
                "the checkpoint of %s/%d was not deleted (%s): the next trial's tidying does it", name, tid, error
            )
        if with_model:
            self.tidy_files(name, kept)

    def tidy_files(self, name: str, kept: int | None) -> None:
        """Delete the models beyond the experiment's `kept` best (None: keep all), and checkpoints
        that ended trials still hold (their worker stopped between its result and the deletion).
        Any worker may, after it kept a model (one read of the trial summaries); a store outage
        only delays it to the next."""
        try:
            ended = [t for t in self.store.trial_summaries(name) if t.state in FINAL]
            for trial in ended:
                if CHECKPOINT in trial.files:
                    self.store.drop_file(name, trial.tid, CHECKPOINT)
            with_model = [t for t in ended if MODEL in t.files]
            best = {t.tid for t in ranked(with_model, include_pruned=True)[:kept]}
            for trial in with_model:
                if trial.tid not in best:
                    self.store.drop_file(name, trial.tid, MODEL)
        except StoreUnavailable as error:
            log.warning("the files of %s were not tidied (%s): the next trial does it", name, error)

    def report(self, name: str, tid: int, state: int, result: TrainResult) -> bool:
        """Spool to disk, then hand to the store (retrying until it accepts), then unspool; whether
        the store took it. If the spool cannot be written, the result goes straight to the store
        and the worker stops."""
        record = {"name": name, "tid": tid, "owner": self.owner, "state": state, "result": result.to_document()}
        path = self.spool / f"{name}.{tid}.{re.sub(r'[:/]', '_', self.owner)}.json"
        part = path.with_suffix(".part")
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
            part.write_text(json.dumps(record))
            os.replace(part, path)  # other workers only ever see whole files
        except OSError as error:
            log.error(
                "cannot spool the result of %s/%d to %s (%s): delivering it directly, then stopping",
                name,
                tid,
                self.spool,
                error.strerror or error,
            )
            self._hand_over(record, "memory (the spool is not writable)")
            self.finished += 1
            raise SpoolUnwritable(
                f"cannot write to the result spool {self.spool} ({error.strerror or error})"
            ) from None
        accepted = self._deliver(path)
        self.finished += 1
        return accepted

    def flush_spool(self) -> None:
        """Deliver results that a worker on this machine spooled but could not hand over (it was
        killed in between); the store accepts one only while its trial is still that worker's."""
        if not self.spool.exists():
            return
        orphans = [p for p in self.spool.glob("*.json.claimed-*") if not _alive(int(p.name.rsplit("-", 1)[1]))]
        for path in sorted(self.spool.glob("*.json")) + orphans:
            self._deliver(path)

    def _deliver(self, path: Path) -> bool:
        """Claim the spool file by renaming it (one worker wins), then hand it to the store."""
        claimed = path.with_name(path.name.split(".json")[0] + f".json.claimed-{os.getpid()}")
        try:
            os.replace(path, claimed)
        except FileNotFoundError:  # another worker claimed it first and delivers it
            return False
        accepted = self._hand_over(json.loads(claimed.read_text()), str(claimed))
        claimed.unlink()
        return accepted

    def _hand_over(self, spooled: dict, kept_in: str) -> bool:
        """store.finish, retried with a logged backoff while the store is unavailable; whether it
        accepted the result."""
        backoff = self.retry_s
        while True:
            try:
                accepted = self.store.finish(
                    spooled["name"],
                    spooled["tid"],
                    spooled["owner"],
                    spooled["state"],
                    TrainResult.from_document(spooled["result"]),
                )
                break
            except StoreUnavailable as error:
                log.warning(
                    "store unavailable (%s); result of %s/%d kept in %s, retrying in %.0f s",
                    error,
                    spooled["name"],
                    spooled["tid"],
                    kept_in,
                    backoff,
                )
                time.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
        if accepted:
            log.info("result of %s/%d delivered", spooled["name"], spooled["tid"])
        else:
            log.warning(
                "trial %s/%d was requeued or finished before this result arrived; result dropped",
                spooled["name"],
                spooled["tid"],
            )
        return accepted


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Heartbeats:
    """Refreshes a running trial in the store from a thread of its own while the trial trains;
    `lost` is set once the store says the trial is no longer this owner's (it was requeued)."""

    def __init__(self, store: BaseStore, name: str, tid: int, owner: str, period_s: float):
        self.store, self.name, self.tid, self.owner, self.period_s = store, name, tid, owner, period_s
        self.lost, self._ended = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._ended.set()  # the thread ends after its current call; the caller never waits for it

    def _beat(self) -> None:
        while not self._ended.wait(self.period_s):
            try:
                if not self.store.heartbeat(self.name, self.tid, self.owner):
                    self.lost.set()
                    return
            except StoreUnavailable as error:
                log.warning("heartbeat for %s/%d failed: %s", self.name, self.tid, error)


class TrialSession:
    """The objective's link to the store for one trial.

    Called after each epoch (on_epoch): leaves at the epoch boundary when the worker stops
    (StopRequested) or lost the trial (TrialLost), stores the epoch's report (fenced by owner: a
    superseded worker writes nothing) and asks the pruner, which decides from the store. After the
    last epoch the training is complete: a stop request lets its result be delivered (giving it
    back threw the whole training away) and the pruner's verdict does not make it a pruned trial.

    `save` keeps each epoch's checkpoint in the store before that epoch's report (with
    checkpoint_every_s, the first one after that long since the last, and always the one before a
    stop or after the last epoch), so a stop loses no trained epoch and a kill at most an epoch (or
    checkpoint_every_s); `resume_from` offers the trial's checkpoint to a training that starts, and
    the epochs it holds are reported again as the new attempt's curve; `keep_model` keeps the
    selected epoch's weights once the training has ended."""

    def __init__(
        self,
        store: BaseStore,
        name: str,
        tid: int,
        owner: str,
        pruner: Pruner,
        lost: threading.Event,
        stopping: threading.Event,
        last_epoch: int,
        checkpoint_every_s: float = 0.0,
    ):
        self.store, self.name, self.tid, self.owner, self.pruner = store, name, tid, owner, pruner
        self.lost, self.stopping, self.last_epoch = lost, stopping, last_epoch
        self.checkpoint_every_s, self.last_kept = checkpoint_every_s, time.monotonic()
        self.pending: Checkpoint | None = None  # this epoch's checkpoint, when it was not due (save)
        self.checkpointed = False  # whether the trial may have a checkpoint in the store (found or kept)
        self.curve: list[EpochReport] = []
        self.sent = 0  # reports the store has (one that failed in an outage goes with the next)
        self.pruned_at: int | None = None  # the epoch at which the pruner stopped the trial
        self.resumed: int | None = None  # the epoch of the checkpoint the training went on from
        self.best: tuple[int, dict] | None = None  # the best epoch so far and its weights (the last checkpoint's)

    def __call__(self, report: EpochReport) -> bool:
        """True: the pruner stops the trial here."""
        if self.lost.is_set():
            raise TrialLost()
        final = report.epoch == self.last_epoch
        if self.stopping.is_set() and not final:
            if self.pending is not None:  # the epoch's checkpoint, not due yet: a stop keeps it
                self._keep(self.pending)
            raise StopRequested()
        self.curve.append(report)
        try:
            for pending in self.curve[self.sent :]:
                if not self.store.report_epoch(self.name, self.tid, self.owner, pending):
                    raise TrialLost()
                self.sent += 1
            if self.pruner.prune(self.store, self.name, self.tid, self.curve) and not final:
                self.pruned_at = report.epoch
                return True
        except StoreUnavailable as error:  # the curve is in the result too; the trial goes on
            log.warning(
                "epoch %d of %s/%d not reported yet (it goes with the next): %s",
                report.epoch,
                self.name,
                self.tid,
                error,
            )
        return False

    def resume_from(self, identity: dict) -> Checkpoint | None:
        """The trial's checkpoint, if it has one; CheckpointRefused if it is damaged or another training's."""
        try:
            found = self.store.read_file(self.name, self.tid, CHECKPOINT)
        except DamagedFile as error:
            self.checkpointed = True  # its record stays until a new one replaces it
            raise CheckpointRefused(str(error)) from None
        if found is None:
            return None
        self.checkpointed = True
        checkpoint = Checkpoint.from_bytes(found[1], identity)
        self.resumed, self.curve, self.sent = checkpoint.epoch, list(checkpoint.epochs), 0
        if checkpoint.best is not None:
            self.best = (checkpoint.best_epoch, checkpoint.best)
        log.info("trial %s/%d resumes from its checkpoint of epoch %d", self.name, self.tid, checkpoint.epoch)
        if not self.store.note_resumed(self.name, self.tid, self.owner, checkpoint.epoch):
            raise TrialLost()
        return checkpoint

    def refused(self, error: CheckpointRefused) -> None:
        """The checkpoint was refused: the training starts again from scratch."""
        log.warning("trial %s/%d: checkpoint refused (%s); training from scratch", self.name, self.tid, error)
        if self.resumed is not None:  # the attempt log said it went on from the checkpoint
            self.store.note_resumed(self.name, self.tid, self.owner, None)
        self.resumed, self.curve, self.sent, self.best = None, [], 0, None

    def save(self, checkpoint: Checkpoint) -> None:
        """Keeps the checkpoint when it is due (fenced by owner); one that is not stays pending
        until the epoch's report, which keeps it if the worker is stopping. A store outage skips it
        (the next one goes)."""
        if checkpoint.best is not None:
            self.best = (checkpoint.best_epoch, checkpoint.best)  # a snapshot: training never writes into it
        if self.lost.is_set():
            raise TrialLost()
        due = time.monotonic() - self.last_kept >= self.checkpoint_every_s
        self.pending = None if due or checkpoint.epoch == self.last_epoch else checkpoint
        if self.pending is None:
            self._keep(checkpoint)

    def _keep(self, checkpoint: Checkpoint) -> None:
        self.last_kept, self.pending, self.checkpointed = time.monotonic(), None, True
        try:
            saved = self.store.save_file(
                self.name, self.tid, CHECKPOINT, checkpoint.to_bytes(), checkpoint.epoch, self.owner
            )
        except StoreUnavailable as error:
            log.warning("checkpoint of epoch %d of %s/%d not kept: %s", checkpoint.epoch, self.name, self.tid, error)
            return
        if not saved:
            raise TrialLost()

    def keep_model(self, result: TrainResult) -> bool:
        """Keeps the selected epoch's weights as the trial's model (fenced by owner), described by
        the result's provenance: what rebuilds and evaluates it (`larnn export`). Whether it did."""
        if self.best is None or self.best[0] != result.best_epoch:
            return False
        document = result.to_document()
        description = {**{name: document.get(name) for name in (*IDENTITY, *DESCRIBED)}, "epoch": result.best_epoch}
        try:
            return self.store.save_file(
                self.name, self.tid, MODEL, model_bytes(self.best[1], description), result.best_epoch, self.owner
            )
        except StoreUnavailable as error:
            log.warning("the model of %s/%d was not kept: %s", self.name, self.tid, error)
            return False


def judge(result: TrainResult, pruned_at: int | None = None) -> tuple[int, TrainResult]:
    """The trial's final state and result: DONE for an ok result with a finite loss, PRUNED for one
    its pruner stopped (it counts towards max_evals; its loss is its best before the stop), ERROR
    with the reason otherwise."""
    if result.status != OK:
        return ERROR, dataclasses.replace(result, status=FAIL, error=result.error or "objective reported failure")
    if result.loss is None or math.isnan(result.loss):
        return ERROR, dataclasses.replace(result, status=FAIL, error=f"objective returned loss {result.loss!r}")
    if pruned_at is not None:
        return PRUNED, dataclasses.replace(result, extra={**result.extra, "pruned_at_epoch": pruned_at})
    return DONE, result


def _summary(error: BaseException) -> str:
    """One line naming the error, at most about 300 characters."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"
