"""Stores written by the previous release open with this one: upgraded in place by the versioned
migration (ASHA's rung records became the store's generic named records), their experiments and
trials read exactly as that release read them, and a running ASHA experiment's rungs go on.
The fixtures (tests/data) were written by that release's own code: tests/data/make_previous_release_stores.py."""

import json
import shutil
import sqlite3
from pathlib import Path

import mongomock
import pytest

from workers.records import DONE, ERROR, PRUNED, RUNNING, Experiment, Trial, TrialOutcome
from workers.store.mongo import MongoStore
from workers.store.sqlite import VERSION, SQLiteStore

DATA = Path(__file__).resolve().parent / "data"
READS = json.loads((DATA / "previous-release-reads.json").read_text())


def sqlite_store(tmp_path):
    path = tmp_path / "store.db"
    shutil.copy(DATA / "previous-release.db", path)
    return SQLiteStore(path)


def mongo_store(tmp_path):
    client = mongomock.MongoClient()
    for name, docs in json.loads((DATA / "previous-release-mongo.json").read_text()).items():
        client["larnn"][name].insert_many(docs)
    return MongoStore("mongodb://localhost/larnn", client=client)


@pytest.fixture(params=[("sqlite", sqlite_store), ("mongo", mongo_store)], ids=["sqlite", "mongomock"])
def store_and_reads(request, tmp_path):
    backend, open_previous = request.param
    return open_previous(tmp_path), READS[backend]


def test_a_previous_release_store_reads_as_that_release_read_it(store_and_reads):
    """The records read from the upgraded store are the records of that release's own reads."""
    store, reads = store_and_reads
    assert store.experiments() == [Experiment.from_document(d) for d in reads["experiments"]]
    trials = store.trials("round3")
    assert trials == [Trial.from_document(d) for d in reads["trials"]]
    assert [t.state for t in trials] == [DONE, PRUNED, ERROR, RUNNING]
    assert all(len(t.curve) == 5 and t.curve[-1].validation_accuracy == 0.65 for t in trials)
    assert trials[0].result.chosen.test_accuracy == 0.6 and trials[1].result.extra["pruned_at_epoch"] == 5
    assert trials[2].result.error == "CUDA out of memory" and trials[3].attempt_log[0].outcome == "running"
    assert store.get_experiment("round3").pruner.to_document() == {"kind": "asha", "min_epochs": 5, "eta": 3}
    summaries = store.trial_summaries("round3")  # SQLite's summary columns, filled by the migration
    outcomes, mark = store.trial_outcomes("round3")  # what a worker's suggestions read
    assert sorted(outcomes) == [TrialOutcome.of(t.tid, t.state, t.refresh_time, t.result.to_document()) for t in trials]
    assert store.trial_points("round3", [0, 3]) == {t.tid: (t.idxs, t.vals) for t in (trials[0], trials[3])}
    assert store.heartbeat("round3", 3, trials[3].owner)
    changed, _ = store.trial_outcomes("round3", mark)  # (a MongoDB store's: all of them, every time)
    assert sorted(o.tid for o in changed) == ([3] if mark is not None else [0, 1, 2, 3])
    assert ranked_on(summaries) == ranked_on(trials)
    assert summaries[2].result.error == "CUDA out of memory" and summaries[0].curve == ()


def ranked_on(trials: list[Trial]) -> list[tuple]:
    """What suggestions, status and best read of each trial's result."""
    return [
        (
            t.result.chosen.validation_accuracy,
            t.result.chosen.test_accuracy,
            t.result.best_epoch,
            t.result.loss,
            t.result.status,
        )
        for t in trials
    ]


def test_its_asha_rungs_are_records_that_go_on_in_arrival_order(store_and_reads):
    store, _ = store_and_reads
    assert store.append_record("round3", "rung 5", 7, 0.5) == [(0, 0.65), (1, 0.62), (7, 0.5)]
    assert store.append_record("round3", "bracket 1 rung 15", 8, 0.4) == [(3, 0.7), (8, 0.4)]


def test_the_sqlite_migration_is_versioned_and_runs_once(tmp_path):
    store = sqlite_store(tmp_path)
    store.append_record("round3", "rung 5", 7, 0.5)
    store.close()
    again = SQLiteStore(tmp_path / "store.db")  # opened again: nothing to migrate, nothing lost
    assert again.append_record("round3", "rung 5", 9, 0.1)[-2:] == [(7, 0.5), (9, 0.1)]
    with sqlite3.connect(tmp_path / "store.db") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (VERSION,)
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "records" in tables and "rungs" not in tables


def test_a_store_of_a_newer_release_is_refused_in_one_line(tmp_path):
    path = tmp_path / "store.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {VERSION + 1}")
    with pytest.raises(ValueError, match=f"written by a newer larnn-hpo \\(store version {VERSION + 1}"):
        SQLiteStore(path)
