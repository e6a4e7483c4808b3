"""The store contract against MongoDB in-process (mongomock; threads share one in-memory server).

mongomock does not make a single operation atomic across threads, as a MongoDB server does, so
each collection call here holds one lock: the server's guarantee, emulated for the test double."""
import threading

import mongomock
import pytest

from tests.store_contract import StoreContract
from workers.store.mongo import MongoStore


class AtomicCollection:
    def __init__(self, collection, lock):
        self._collection, self._lock = collection, lock

    def __getattr__(self, name):
        method = getattr(self._collection, name)

        def call(*args, **kwargs):
            with self._lock:
                result = method(*args, **kwargs)
                return list(result) if name == "find" else result

        return call


class AtomicDatabase:
    def __init__(self, database, lock):
        self._database, self._lock = database, lock

    def get_collection(self, name, **options):
        return AtomicCollection(self._database.get_collection(name, **options), self._lock)


class AtomicClient:
    def __init__(self):
        self._client, self._lock = mongomock.MongoClient(), threading.Lock()

    def get_database(self, name):
        return AtomicDatabase(self._client.get_database(name), self._lock)

    def close(self):
        pass


@pytest.fixture
def make_store():
    server = AtomicClient()
    return lambda: MongoStore("mongodb://mock", client=server, database="larnn_test")


@pytest.fixture
def store(make_store):
    return make_store()


class TestMongomockStore(StoreContract):
    pass


def test_an_experiment_being_created_is_hidden_and_an_abandoned_one_is_cleared(store, monkeypatch):
    """MongoDB has no transaction here: creation marks the experiment `importing` until its trials
    are in. While marked, no reader sees it; a mark its creator left behind (it died midway)
    is cleared by the next create of that name once it is older than import_timeout_s."""
    from tests.store_contract import experiment, finished
    from workers.store import ExperimentExists
    from workers.store import mongo

    def die_midway(documents, ordered):  # the creator's process ends after the experiment's insert
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(store.trials_, "insert_many", die_midway)
        patch.setattr(store.trials_, "delete_many", lambda query: None)  # and never cleans up
        patch.setattr(store.experiments_, "delete_one", lambda query: None)
        with pytest.raises(KeyboardInterrupt):
            store.create_experiment(experiment("imp"), finished("imp", 2))
    assert store.experiments() == []
    with pytest.raises(mongo.UnknownExperiment):
        store.get_experiment("imp")
    with pytest.raises(ExperimentExists):  # a recent mark: its creator may still be writing
        store.create_experiment(experiment("imp"), finished("imp", 2))
    store.import_timeout_s = 0.0
    store.create_experiment(experiment("imp"), finished("imp", 2))
    assert [e["name"] for e in store.experiments()] == ["imp"] and len(store.trials("imp")) == 2
