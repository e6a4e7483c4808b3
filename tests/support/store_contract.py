"""The contract every trial store backend must satisfy. Each backend's test module subclasses
StoreContract and provides a `store` fixture (and `make_store(read_only=False)`, another connection
to the same store)."""

import dataclasses
import threading
import time

import pytest

from larnn_core.records import FAIL, EpochReport, TrainResult
from search_spaces import load_space
from tests.support.results import result_with
from workers.experiment import make_experiment
from workers.history import History
from workers.records import (
    CHECKPOINT,
    DONE,
    ERROR,
    MODEL,
    NEW,
    PRUNED,
    RUNNING,
    Attempt,
    Experiment,
    Objective,
    Trial,
    TrialOutcome,
)
from workers.store import ExperimentExists, ReadOnlyStore, StoreUnavailable, UnknownExperiment
from workers.store.base import SUMMARY_RESULT, WRITES, DamagedFile
from workers.suggest import suggest


def experiment(name="exp", max_evals=10, created=None):
    return Experiment(name, {"space": {"batch_size": 256}}, "tpe", max_evals, Objective(), 0, created or time.time())


def queued(store, name="exp", n=3):
    for tid in range(n):
        store.insert_trial(Trial.new(name, tid, {"x": [tid]}, {"x": [0.5 * tid]}))


def finished(name="exp", n=3):
    return [Trial(name, tid, state=DONE, result=result_with([0.1 * tid])) for tid in range(n)]


class StoreContract:
    def test_each_attempt_of_a_trial_has_a_curve_of_its_own(self, store):
        """A requeued or given-back trial's next attempt read [1, 2, 1, 2, 3] as its curve."""
        store.create_experiment(experiment("a"))
        store.insert_trial(Trial.new("a", 0, {}, {}, owner="first"))
        for epoch in (1, 2):
            assert store.report_epoch("a", 0, "first", EpochReport(epoch))
        assert store.release("a", 0, "first")  # given back at an epoch boundary
        assert store.reserve("first", "a").tid == 0  # the same worker takes it again
        assert store.trials("a")[0].curve == ()
        assert store.report_epoch("a", 0, "first", EpochReport(1))
        assert store.requeue_stale(-1, max_attempts=5)  # its heartbeat stopped
        assert store.reserve("second", "a").tid == 0
        assert not store.report_epoch("a", 0, "first", EpochReport(2))  # the superseded attempt writes nothing
        for epoch in (1, 2, 3):
            assert store.report_epoch("a", 0, "second", EpochReport(epoch))
        (trial,) = store.trials("a")
        assert [e.epoch for e in trial.curve] == [1, 2, 3] and len(trial.attempt_log) == 3

    def test_a_store_opened_read_only_reads_and_refuses_every_write(self, store, make_store):
        store.create_experiment(experiment("a"))
        queued(store, "a", 2)
        before = (store.experiments(), store.trials("a"))
        reader = make_store(read_only=True)
        assert (reader.experiments(), reader.trials("a")) == before and reader.counts("a")["queued"] == 2
        writes = {
            "create_experiment": (experiment("b"),),
            "_update_experiment": ("a", {"max_evals": 3}),
            "acquire_lease": ("a", "me", 10.0),
            "release_lease": ("a", "me"),
            "insert_trial": (Trial.new("a", 9, {}, {}),),
            "reserve": ("me",),
            "heartbeat": ("a", 0, "me"),
            "report_epoch": ("a", 0, "me", EpochReport(1)),
            "append_record": ("a", "rung 1", 0, 0.5),
            "finish": ("a", 0, "me", DONE, result_with([0.5])),
            "release": ("a", 0, "me"),
            "requeue_stale": (0.0, 3),
            "note_resumed": ("a", 0, "me", 2),
            "_put_file": ("a", 0, CHECKPOINT, b"x"),
            "_set_file": ("a", 0, CHECKPOINT, None, None),
            "_remove_file": ("0" * 24,),
        }
        assert set(writes) == WRITES
        for name, args in writes.items():
            with pytest.raises(ReadOnlyStore, match=f"{name} is a write"):
                getattr(reader, name)(*args)
        with pytest.raises(ReadOnlyStore):
            reader.set_max_evals("a", 5)  # the writes built on those
        assert (store.experiments(), store.trials("a")) == before
        assert reader.read_file("a", 0, CHECKPOINT) is None
        with pytest.raises(ReadOnlyStore):
            reader.save_file("a", 0, CHECKPOINT, b"x", 1, None)

    def test_experiments(self, store):
        store.create_experiment(experiment("a", created=1.0))
        store.create_experiment(experiment("b", created=2.0))
        assert store.get_experiment("a").max_evals == 10
        assert [e.name for e in store.experiments()] == ["a", "b"]
        with pytest.raises(ExperimentExists, match="'a' already exists"):
            store.create_experiment(experiment("a"))
        with pytest.raises(UnknownExperiment, match="'zzz'"):
            store.get_experiment("zzz")
        store.set_max_evals("a", 25)
        assert store.get_experiment("a").max_evals == 25
        assert store.get_experiment("a") == dataclasses.replace(experiment("a", created=1.0), max_evals=25)

    def test_an_experiment_is_created_with_its_finished_trials(self, store):
        store.create_experiment(experiment("imp"), finished("imp", 3))
        assert store.trials("imp") == finished("imp", 3)
        assert [t.result.loss for t in store.trials("imp")] == [-0.0, -0.1, -0.2]
        assert store.counts("imp")["done"] == 3 and store.get_experiment("imp").name == "imp"

    def test_a_failed_creation_leaves_nothing(self, store):
        broken = finished("imp", 3) + finished("imp", 1)  # tid 0 twice: the fourth insert fails
        with pytest.raises(ValueError, match="trial 0 of 'imp' already exists"):
            store.create_experiment(experiment("imp"), broken)
        assert store.experiments() == [] and store.trials("imp") == []
        store.create_experiment(experiment("imp"), finished("imp", 2))  # the name is free again
        assert len(store.trials("imp")) == 2

    def test_creation_with_trials_refused_before_writing(self, store):
        store.create_experiment(experiment("taken"), finished("taken", 1))
        with pytest.raises(ExperimentExists):
            store.create_experiment(experiment("taken"), finished("taken", 3))
        assert len(store.trials("taken")) == 1
        with pytest.raises(ValueError, match="trials of 'other'"):
            store.create_experiment(experiment("imp"), finished("other", 1))
        with pytest.raises(ValueError, match="trial 0 is not finished"):
            store.create_experiment(experiment("imp"), [Trial.new("imp", 0, {}, {})])
        assert [e.name for e in store.experiments()] == ["taken"] and store.trials("imp") == []

    def test_epoch_reports_are_fenced_by_owner_and_round_trip(self, store):
        queued(store, "exp", 1)
        trial = store.reserve("w1", "exp")
        reports = tuple(EpochReport(e, train_loss=1.0 / e, validation_accuracy=0.5 + 0.1 * e) for e in (1, 2))
        assert all(store.report_epoch("exp", trial.tid, "w1", r) for r in reports)
        assert not store.report_epoch("exp", trial.tid, "w2", EpochReport(3))  # not w2's trial
        assert store.requeue_stale(-1, max_attempts=5)  # w1's heartbeat is lost: superseded
        assert not store.report_epoch("exp", trial.tid, "w1", EpochReport(3))
        (stored,) = store.trials("exp")
        assert stored.curve == reports

    def test_the_pruned_state_is_final_and_counted(self, store):
        queued(store, "exp", 2)
        first = store.reserve("w1", "exp")
        pruned = dataclasses.replace(result_with([0.4]), extra={"pruned_at_epoch": 3})
        assert store.finish("exp", first.tid, "w1", PRUNED, pruned)
        assert store.counts("exp") == {"queued": 1, "running": 0, "done": 0, "failed": 0, "pruned": 1}
        assert store.reserve("w2", "exp").tid == 1  # a pruned trial is never taken again
        assert store.trials("exp")[0].result == pruned

    def test_named_records_keep_arrival_order_and_a_keys_first_value(self, store):
        assert store.append_record("exp", "rung 3", 7, 0.8) == [(7, 0.8)]
        assert store.append_record("exp", "rung 3", 2, 0.6) == [(7, 0.8), (2, 0.6)]
        assert store.append_record("exp", "rung 9", 7, 0.9) == [(7, 0.9)]  # another record
        assert store.append_record("other", "rung 3", 7, 0.1) == [(7, 0.1)]  # another experiment
        assert store.append_record("exp", "rung 3", 7, 0.99) == [(7, 0.8), (2, 0.6)]  # 7 again: its first value stays

    def test_lease_is_exclusive_until_released_or_expired(self, store):
        store.create_experiment(experiment())
        assert store.acquire_lease("exp", "w1", 30)
        assert not store.acquire_lease("exp", "w2", 30)
        assert store.acquire_lease("exp", "w1", 30)  # renewal by the holder
        store.release_lease("exp", "w2")  # not the holder: no effect
        assert not store.acquire_lease("exp", "w2", 30)
        store.release_lease("exp", "w1")
        assert store.acquire_lease("exp", "w2", 0.05)
        time.sleep(0.1)
        assert store.acquire_lease("exp", "w1", 30)

    def test_trials_round_trip_as_json(self, store):
        trial = Trial.new("exp", 0, {"lr": [0]}, {"lr": [0.01]})
        store.insert_trial(trial)
        (stored,) = store.trials("exp")
        assert stored == trial and stored.vals == {"lr": [0.01]} and stored.state == NEW and stored.attempts == 0
        for key in ("tid", "spec", "result", "misc", "state", "owner", "book_time", "refresh_time", "exp_key"):
            assert key in stored.to_document()  # hyperopt's fields
        with pytest.raises(ValueError, match="trial 0 of 'exp' already exists"):
            store.insert_trial(Trial.new("exp", 0, {}, {}))

    def test_reserve_takes_the_oldest_queued_trial_once(self, store):
        queued(store, "exp", 2)
        queued(store, "other", 1)
        first = store.reserve("w1", "exp")
        assert (first.tid, first.state, first.owner, first.attempts) == (0, RUNNING, "w1", 1)
        assert first.book_time is not None and first.refresh_time is not None
        assert first.attempt_log == (Attempt("w1", first.book_time),)
        assert store.reserve("w2", "exp").tid == 1
        assert store.reserve("w3", "exp") is None
        assert store.reserve("w3").exp_key == "other"
        assert store.reserve("w3") is None

    def test_concurrent_reservations_never_share_a_trial(self, store, make_store):
        queued(store, "exp", 30)
        taken, errors = [], []

        def worker(i):
            own = make_store()
            try:
                while (trial := own.reserve(f"w{i}")) is not None:
                    taken.append(trial.tid)
            except Exception as error:  # surfaced below
                errors.append(error)
            finally:
                own.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert sorted(taken) == list(range(30))

    def test_heartbeat_and_finish_belong_to_the_owner(self, store):
        queued(store, "exp", 1)
        store.reserve("w1")
        assert store.heartbeat("exp", 0, "w1")
        assert not store.heartbeat("exp", 0, "w2")
        assert not store.finish("exp", 0, "w2", DONE, result_with([1.0]))
        result = result_with([0.5, 0.9])
        assert store.finish("exp", 0, "w1", DONE, result)
        (trial,) = store.trials("exp")
        assert trial.state == DONE and trial.result == result
        assert not store.heartbeat("exp", 0, "w1")  # finished: nothing to refresh
        assert store.counts("exp") == {"queued": 0, "running": 0, "done": 1, "failed": 0, "pruned": 0}

    def test_release_gives_the_trial_back_without_counting_an_attempt(self, store):
        queued(store, "exp", 1)
        store.reserve("w1")
        assert not store.release("exp", 0, "w2")
        assert store.release("exp", 0, "w1")
        (trial,) = store.trials("exp")
        assert trial.state == NEW and trial.attempts == 0
        assert store.reserve("w2").attempts == 1

    def test_stale_trials_are_requeued_then_failed(self, store):
        queued(store, "exp", 2)
        store.reserve("w1")
        store.reserve("w2")
        time.sleep(0.2)
        assert store.heartbeat("exp", 1, "w2")  # alive
        assert store.requeue_stale(older_than=0.1, max_attempts=2) == [
            {"exp_key": "exp", "tid": 0, "owner": "w1", "outcome": "requeued"}
        ]
        trials = store.trials("exp")
        assert trials[0].state == NEW and trials[0].owner is None and trials[0].attempts == 1
        assert trials[1].state == RUNNING
        assert not store.heartbeat("exp", 0, "w1")  # the old owner lost it
        assert store.reserve("w3", "exp").tid == 0
        time.sleep(0.2)
        store.heartbeat("exp", 1, "w2")
        assert store.requeue_stale(older_than=0.1, max_attempts=2) == [
            {"exp_key": "exp", "tid": 0, "owner": "w3", "outcome": "failed"}
        ]
        trial = store.trials("exp")[0]
        assert trial.state == ERROR and trial.result.status == "fail"
        assert "no heartbeat" in trial.result.error and "2 times" in trial.result.error

    def test_a_complete_result_held_up_past_a_requeue_is_kept(self, store):
        """Its worker's heartbeats stopped in an outage while it trained on; the trial was requeued
        and taken again. The finished result was dropped and the trial trained a second time."""
        queued(store, "exp", 1)
        store.reserve("w1")
        assert store.requeue_stale(-1, max_attempts=3)[0]["outcome"] == "requeued"
        assert store.reserve("w2").tid == 0  # retraining it
        assert not store.finish("exp", 0, "stranger", DONE, result_with([0.1]))  # never held it
        assert store.finish("exp", 0, "w1", DONE, result_with([0.7]))
        (trial,) = store.trials("exp")
        assert trial.state == DONE and trial.result == result_with([0.7]) and trial.owner == "w1"
        assert [a.outcome for a in trial.attempt_log] == ["finished", "superseded"]
        assert not store.report_epoch("exp", 0, "w2", EpochReport(1))  # the retraining stops here
        assert not store.finish("exp", 0, "w2", DONE, result_with([0.2]))
        assert not store.finish("exp", 0, "w1", DONE, result_with([0.3]))  # a final result stays
        assert store.trials("exp")[0].result == result_with([0.7])

    def test_each_trial_keeps_the_log_of_its_attempts(self, store):
        queued(store, "exp", 2)
        store.reserve("w1")
        store.release("exp", 0, "w1")
        store.reserve("w2")
        store.reserve("w3")  # trial 1
        time.sleep(0.2)
        store.heartbeat("exp", 0, "w2")
        store.requeue_stale(older_than=0.1, max_attempts=5)  # trial 1: w3 lost it
        assert store.finish("exp", 0, "w2", DONE, result_with([0.5]))
        store.reserve("w4")  # trial 1 again
        logs = {t.tid: t.attempt_log for t in store.trials("exp")}
        assert [(e.owner, e.outcome) for e in logs[0]] == [("w1", "given back"), ("w2", "finished")]
        assert [(e.owner, e.outcome) for e in logs[1]] == [("w3", "heartbeat lost"), ("w4", "running")]
        assert all(e.end >= e.start for log in logs.values() for e in log if e.end is not None)
        assert logs[1][-1].end is None

    def test_a_failed_experiment_records_its_reason(self, store):
        store.create_experiment(experiment("bad"))
        store.create_experiment(experiment("good"))
        store.fail_experiment("bad", "suggesting trial 0 failed: ValueError: low >= high")
        assert store.get_experiment("bad").failure["reason"] == "suggesting trial 0 failed: ValueError: low >= high"
        assert store.get_experiment("good").failure is None
        with pytest.raises(UnknownExperiment):
            store.fail_experiment("missing", "reason")

    def test_summaries_leave_out_what_grows_with_the_epochs_and_keep_what_ranks(self, store):
        """What suggestions, stop rules, status and best read: the summary of each trial."""
        store.create_experiment(experiment("a"))
        store.insert_trial(Trial.new("a", 0, {"lr": [0]}, {"lr": [0.01]}, owner="w1", now=100.0))
        assert store.report_epoch("a", 0, "w1", EpochReport(1, validation_accuracy=0.5))
        result = dataclasses.replace(result_with([0.5, 0.75, 0.625], test_accuracy=0.7), seed=7, device="cpu")
        assert store.finish("a", 0, "w1", DONE, result)
        store.insert_trial(Trial.new("a", 1, {"lr": [1]}, {"lr": [0.1]}, owner="w2"))
        store.finish("a", 1, "w2", ERROR, TrainResult(FAIL, error="diverged"))
        store.insert_trial(Trial.new("a", 2, {}, {}))
        full, summaries = store.trials("a"), store.trial_summaries("a")
        assert [t.tid for t in summaries] == [0, 1, 2]
        for whole, summary in zip(full, summaries):
            assert summary == dataclasses.replace(
                whole,
                attempt_log=(),
                curve=(),
                result=TrainResult.from_document(
                    {k: v for k, v in whole.result.to_document().items() if k in SUMMARY_RESULT}
                ),
            )
        done = summaries[0].result
        assert (done.loss, done.best_epoch, done.chosen.validation_accuracy, done.chosen.test_accuracy) == (
            -0.75,
            2,
            0.75,
            0.7,
        )
        assert done.epochs == () and done.seed is None and summaries[1].result.error == "diverged"
        assert store.trial_summaries("missing") == []

    def test_outcomes_and_points_are_what_suggestions_read_and_a_mark_brings_only_the_changes(self, store):
        """Each kind of write to a trial changes its outcome's mark (SQLite), or every trial comes
        each time with no mark (MongoDB); either way what was read adds up to a full read."""
        store.create_experiment(experiment("a"))
        store.insert_trial(Trial.new("a", 0, {"lr": [0]}, {"lr": [0.01]}, owner="w1", now=100.0))
        store.insert_trial(Trial.new("a", 1, {"lr": [1]}, {"lr": [0.1]}))
        queued(store, "other", 2)
        outcomes, mark = store.trial_outcomes("a")
        assert sorted(outcomes) == [(0, RUNNING, 100.0, "new", None), (1, NEW, None, "new", None)]
        assert store.trial_points("a", [1, 7]) == {1: ({"lr": [1]}, {"lr": [0.1]})}
        assert store.trial_points("a", []) == {} and store.trial_outcomes("missing")[0] == []
        assert set(store.trial_points("a", range(5000))) == {0, 1}  # a worker's first read asks for many
        writes = [
            ({0}, lambda: store.finish("a", 0, "w1", DONE, result_with([0.5, 0.75]))),
            ({1}, lambda: store.reserve("w2", "a")),
            ({1}, lambda: store.heartbeat("a", 1, "w2")),
            ({1}, lambda: store.report_epoch("a", 1, "w2", EpochReport(1, validation_accuracy=0.4))),
            ({1}, lambda: store.save_file("a", 1, CHECKPOINT, b"state", 1, "w2")),
            ({1}, lambda: store.release("a", 1, "w2")),
            ({2}, lambda: store.insert_trial(Trial.new("a", 2, {"lr": []}, {"lr": []}))),
            (set(), lambda: store.finish("other", 0, "nobody", DONE, result_with([0.5]))),
            ({1, 2}, lambda: (store.reserve("w3", "a"), store.reserve("w3", "a"), store.requeue_stale(-1, 5))),
        ]
        for changed, write in writes:
            write()
            outcomes, next_mark = store.trial_outcomes("a", mark)
            full = sorted(store.trial_outcomes("a")[0])
            if next_mark is None:  # a backend without marks: every trial, every time
                assert sorted(outcomes) == full
                continue
            assert {o.tid for o in outcomes} == changed and set(outcomes) <= set(full) and next_mark >= mark
            mark = next_mark
        assert full[0] == TrialOutcome(0, DONE, full[0].refresh_time, "ok", -0.75)

    def test_a_history_read_change_by_change_equals_one_read_at_once(self, store):
        """A worker's History (workers/history.py) kept across 40 suggestions and the writes between
        them holds what a fresh one reads, and TPE suggests the same from both."""
        exp = make_experiment("h", load_space("smoke"), algorithm="rand", seed=1)
        store.create_experiment(exp)
        kept = History(exp)
        for tid in range(40):
            kept.refresh(store)
            idxs, vals = suggest(exp, kept, tid)
            store.insert_trial(Trial.new("h", tid, idxs, vals, owner="w"))
            if tid % 4 == 1:
                store.finish("h", tid - 1, "w", PRUNED, result_with([0.2, 0.3], stopped_at_epoch=2))
            if tid % 4 == 2:
                store.finish("h", tid - 1, "w", ERROR, TrainResult(FAIL, error="diverged"))
            if tid % 4 == 3:
                store.finish("h", tid - 1, "w", DONE, result_with([0.5, 0.1 * (tid % 7)]))
                store.heartbeat("h", tid, "w")
        kept.refresh(store)
        fresh = History(exp)
        fresh.refresh(store)
        assert kept.by_tid == fresh.by_tid and len(kept) == 40
        assert sorted(zip(*kept.columns.values())) == sorted(zip(*fresh.columns.values()))
        tpe = dataclasses.replace(exp, algorithm="tpe")
        assert suggest(tpe, kept, 40) == suggest(tpe, fresh, 40)

    def test_trials_are_read_by_tid(self, store):
        queued(store, "exp", 5)
        queued(store, "other", 2)
        assert [t.tid for t in store.trials("exp", tids=[3, 1, 7])] == [1, 3]
        assert store.trials("exp", tids=[]) == [] and len(store.trials("exp")) == 5

    def test_inserted_running_trial_belongs_to_its_suggester(self, store):
        store.insert_trial(Trial.new("exp", 0, {}, {}, owner="w1"))
        assert store.reserve("w2") is None
        assert store.heartbeat("exp", 0, "w1")
        assert store.trials("exp")[0].attempts == 1

    def test_state_counts(self, store):
        queued(store, "exp", 3)
        store.reserve("w1")
        store.reserve("w2")
        store.finish("exp", 0, "w1", DONE, result_with([0.0]))
        assert {k: v for k, v in store.state_counts("exp").items() if v} == {NEW: 1, RUNNING: 1, DONE: 1}
        assert store.counts("exp") == {"queued": 1, "running": 1, "done": 1, "failed": 0, "pruned": 0}
        assert not any(store.state_counts("nothing").values())

    # -- a trial's files
    def test_a_checkpoint_is_kept_for_its_owner_only_and_replaces_the_older_one(self, store, make_store):
        store.create_experiment(experiment("a"))
        store.insert_trial(Trial.new("a", 0, {}, {}, owner="first"))
        assert store.read_file("a", 0, CHECKPOINT) is None
        assert store.save_file("a", 0, CHECKPOINT, b"epoch 1", 1, "first")
        first = store.read_file("a", 0, CHECKPOINT)[0]
        assert store.save_file("a", 0, CHECKPOINT, b"epoch 2", 2, "first")
        stored, data = make_store().read_file("a", 0, CHECKPOINT)  # any connection reads it
        assert (data, stored.epoch, stored.size, stored.owner) == (b"epoch 2", 2, 7, "first")
        assert store._get_file(first.location) is None  # the older checkpoint is deleted
        assert store.requeue_stale(-1, max_attempts=5) and store.reserve("second", "a").tid == 0
        assert store.note_resumed("a", 0, "second", 2) and not store.note_resumed("a", 0, "first", 2)
        assert [a.resumed_from_epoch for a in store.trials("a")[0].attempt_log] == [None, 2]
        # the superseded worker writes nothing, and leaves no bytes behind
        assert not store.save_file("a", 0, CHECKPOINT, b"stale epoch 3", 3, "first")
        assert store.read_file("a", 0, CHECKPOINT)[1] == b"epoch 2"
        assert store.save_file("a", 0, CHECKPOINT, b"epoch 3", 3, "second")
        assert store.read_file("a", 0, CHECKPOINT)[0].owner == "second"
        assert not store.save_file("a", 7, CHECKPOINT, b"no such trial", 1, "second")

    def test_files_are_checked_against_their_checksum_and_dropped_by_anyone(self, store):
        store.create_experiment(experiment("a"))
        store.insert_trial(Trial.new("a", 0, {}, {}, owner="w"))
        assert store.save_file("a", 0, MODEL, b"weights", 4, "w")
        assert store.save_file("a", 0, CHECKPOINT, b"state", 4, "w")
        summary = store.trial_summaries("a")[0]
        assert set(summary.files) == {MODEL, CHECKPOINT} and summary.files == store.trials("a")[0].files
        stored = summary.files[MODEL]
        store._remove_file(stored.location)
        store._set_file(
            "a", 0, MODEL, dataclasses.replace(stored, location=store._put_file("a", 0, MODEL, b"weightz")), None
        )
        with pytest.raises(DamagedFile, match="model of trial a/0 \\(epoch 4\\) fails its SHA-256 check"):
            store.read_file("a", 0, MODEL)
        store._remove_file(store.trials("a")[0].files[MODEL].location)
        with pytest.raises(DamagedFile, match="is missing from the store"):
            store.read_file("a", 0, MODEL)
        assert store.finish("a", 0, "w", DONE, result_with([0.5]))
        store.drop_file("a", 0, CHECKPOINT)  # a final trial's: no owner needed
        store.drop_file("a", 0, CHECKPOINT)  # twice is harmless
        assert set(store.trials("a")[0].files) == {MODEL}

    def test_bytes_a_failed_record_leaves_are_removed(self, store, monkeypatch):
        store.create_experiment(experiment("a"))
        store.insert_trial(Trial.new("a", 0, {}, {}, owner="w"))
        written, put = [], store._put_file
        monkeypatch.setattr(store, "_put_file", lambda *args: written.append(put(*args)) or written[-1])

        def outage(*args):
            raise StoreUnavailable("the store went away")

        monkeypatch.setattr(store, "_set_file", outage)
        with pytest.raises(StoreUnavailable):
            store.save_file("a", 0, CHECKPOINT, b"epoch 1", 1, "w")
        assert len(written) == 1 and store._get_file(written[0]) is None
