"""The store contract on real SQLite files (the cross-process test is in test_workers.py)."""

import sqlite3

import pytest

from tests.support.store_contract import StoreContract
from workers.store import open_store


@pytest.fixture
def make_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    return lambda: open_store(url)


@pytest.fixture
def store(make_store):
    store = make_store()
    yield store
    store.close()


class TestSQLiteStore(StoreContract):
    pass


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
