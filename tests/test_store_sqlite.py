"""The store contract on real SQLite files (the cross-process test is in test_workers.py)."""

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.support.results import result_with
from tests.support.store_contract import StoreContract, experiment
from workers.records import DONE, Trial
from workers.store import open_store


@pytest.fixture
def make_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    return lambda read_only=False: open_store(url, read_only=read_only)


@pytest.fixture
def store(make_store):
    store = make_store()
    yield store
    store.close()


class TestSQLiteStore(StoreContract):
    pass


def test_a_store_is_created_by_its_first_write_and_read_as_empty_before(tmp_path):
    """A command refused before it writes, or one that only reads, leaves no file or folder."""
    path = tmp_path / "new" / "store.db"
    for read_only in (True, False):
        store = open_store(f"sqlite:///{path}", read_only=read_only)
        assert store.experiments() == [] and store.trials("x") == [] and store.state_counts("x") == {}
        store.close()
    assert list(tmp_path.iterdir()) == []
    store = open_store(f"sqlite:///{path}")
    store.create_experiment(experiment("first"))
    assert [e.name for e in open_store(f"sqlite:///{path}", read_only=True).experiments()] == ["first"]


def _write_at_once(url, barrier, results):
    store = open_store(url)  # the file does not exist yet
    barrier.wait()
    try:
        store.append_record("race", "r", os.getpid(), 0.0)
        results.put("ok")
    except Exception as error:  # reported to the test, which names it
        results.put(repr(error))


def _read_meanwhile(url, barrier, results):
    store = open_store(url, read_only=True)
    barrier.wait()
    try:
        for _ in range(50):
            store.experiments(), store.state_counts("race"), store.trial_summaries("race")
        results.put("ok")
    except Exception as error:
        results.put(repr(error))


def test_workers_that_start_at_once_on_a_new_store_create_it_once_and_all_write(tmp_path):
    """Six processes open a store that does not exist and write at the same moment, while two read
    it, sixty times. Before the schema was created under the write lock, one round in five to
    fifteen failed ("no such table: records" in a file another process had just made, or a lock on
    its journal mode); a reader of a file whose creator had not committed its tables yet read "no
    such table: experiments" (a `larnn status` beside a starting `larnn search`)."""
    context = multiprocessing.get_context("fork")
    for round_ in range(60):
        url = f"sqlite:///{tmp_path / str(round_) / 'store.db'}"
        barrier, results = context.Barrier(8), context.Queue()
        processes = [context.Process(target=_write_at_once, args=(url, barrier, results)) for _ in range(6)]
        processes += [context.Process(target=_read_meanwhile, args=(url, barrier, results)) for _ in range(2)]
        for p in processes:
            p.start()
        outcomes = [results.get(timeout=60) for _ in processes]
        for p in processes:
            p.join(timeout=60)
        assert outcomes == ["ok"] * 8, (round_, outcomes)
        assert len(open_store(url).append_record("race", "r", -1, 0.0)) == 7


def _write_trials(url, first, barrier):
    """Insert 60 trials, reserve, heartbeat and finish each: every kind of write, as a worker's."""
    store = open_store(url)
    barrier.wait()
    for tid in range(first, first + 60):
        store.insert_trial(Trial.new("busy", tid, {"x": [tid]}, {"x": [tid / 100]}))
        owner = f"w{first}"
        if store.reserve(owner, "busy") is not None:
            store.heartbeat("busy", tid, owner)
            store.finish("busy", tid, owner, DONE, result_with([tid / 1000]))


def test_change_marks_miss_no_write_of_processes_writing_at_once(tmp_path):
    """Three processes write trials while this one reads only what changed since its last read,
    as a worker's History does: what it has gathered equals one full read at the end."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    reader = open_store(url)
    reader.create_experiment(experiment("busy"))
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    writers = [context.Process(target=_write_trials, args=(url, first, barrier)) for first in (0, 1000, 2000)]
    for p in writers:
        p.start()
    barrier.wait()
    gathered, mark, reads = {}, None, 0
    while any(p.is_alive() for p in writers) or reads == 0:
        outcomes, mark = reader.trial_outcomes("busy", mark)
        gathered.update((o.tid, o) for o in outcomes)
        reads += 1
    for p in writers:
        p.join(timeout=60)
        assert p.exitcode == 0
    outcomes, mark = reader.trial_outcomes("busy", mark)
    gathered.update((o.tid, o) for o in outcomes)
    full = {o.tid: o for o in reader.trial_outcomes("busy")[0]}
    assert len(full) == 180 and gathered == full and reads > 3
    assert reader.trial_outcomes("busy", mark) == ([], mark)


def test_a_reader_keeps_the_journal_mode_and_leaves_no_file_beside_the_store(tmp_path):
    path = tmp_path / "store.db"
    writer = open_store(f"sqlite:///{path}")
    writer.create_experiment(experiment("a"))
    writer.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=DELETE")  # as another tool might have left it
    reader = open_store(f"sqlite:///{path}", read_only=True)
    assert [e.name for e in reader.experiments()] == ["a"]
    reader.close()
    assert [p.name for p in tmp_path.iterdir()] == ["store.db"]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_a_store_made_before_attempt_logs_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE experiments (name TEXT PRIMARY KEY, doc TEXT NOT NULL, created REAL NOT NULL,
            lease_owner TEXT, lease_until REAL NOT NULL DEFAULT 0);
        CREATE TABLE trials (exp_key TEXT NOT NULL, tid INTEGER NOT NULL, state INTEGER NOT NULL, owner TEXT,
            book_time REAL, refresh_time REAL, attempts INTEGER NOT NULL, misc TEXT NOT NULL, result TEXT NOT NULL,
            PRIMARY KEY (exp_key, tid));
        INSERT INTO trials VALUES ('exp', 0, 0, NULL, NULL, NULL, 0, '{"idxs": {}, "vals": {}}', '{"status": "new"}');
    """)
    old.commit()
    old.close()
    store = open_store(f"sqlite:///{path}")
    assert store.trials("exp")[0].attempt_log == ()
    assert store.reserve("w1").attempt_log[0].owner == "w1"


def test_connections_of_ended_threads_are_closed(make_store):
    """A worker starts a heartbeat thread per trial: the store must not keep a connection per trial."""
    import threading

    store = make_store()
    for _ in range(20):
        thread = threading.Thread(target=store.experiments)
        thread.start()
        thread.join()
    store.experiments()
    assert len(store._connections) <= 2  # this thread's, and at most the last ended one's


def test_a_second_store_on_a_file_this_process_has_open_still_sees_other_processes_writes(tmp_path):
    """Opening the same file again in one process (a command's second store, a test's reader)
    must not drop the first connection's locks: that let a writing process that exits delete the
    WAL both of this process's connections still read, and they never saw a write again."""
    path = tmp_path / "store.db"
    first = open_store(f"sqlite:///{path}")
    first.create_experiment(experiment("a"))
    second = open_store(f"sqlite:///{path}")
    for tid in range(3):  # each from a process of its own, which closes its connection as it exits
        row = f"('a', {tid}, 0, 0, '{{}}', '{{}}')"
        insert = (
            f"import sqlite3; sqlite3.connect({str(path)!r}, isolation_level=None).execute("
            f'"INSERT INTO trials (exp_key, tid, state, attempts, misc, result) VALUES {row}")'
        )
        subprocess.run([sys.executable, "-c", insert], check=True)
        assert len(second.trials("a")) == len(first.trials("a")) == tid + 1


def test_bytes_no_record_names_are_removed_with_the_next_file_once_a_minute_old(store):
    """A writer killed between its bytes and their record leaves a stray file in the trial's folder:
    the next file kept for the trial removes it once it is a minute old (a younger one may be a live
    writer's, not recorded yet)."""
    from workers.records import CHECKPOINT, Trial

    store.create_experiment(experiment("a"))
    store.insert_trial(Trial.new("a", 0, {}, {}, owner="w"))
    old, young = (store.files_folder / store._put_file("a", 0, CHECKPOINT, b"stray") for _ in range(2))
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert store.save_file("a", 0, CHECKPOINT, b"epoch 1", 1, "w")
    kept = store.files_folder / store.trials("a")[0].files[CHECKPOINT].location
    assert not old.exists() and young.exists() and kept.read_bytes() == b"epoch 1"
