"""The store contract against MongoDB in-process (mongomock; threads share one in-memory server,
each collection call atomic as on a server: tests/support/stores.py)."""

import pytest

from tests.support.store_contract import StoreContract
from tests.support.stores import AtomicClient
from workers.store.mongo import MongoStore


@pytest.fixture
def make_store():
    server = AtomicClient()
    return lambda read_only=False: MongoStore(
        "mongodb://mock", client=server, database="larnn_test", read_only=read_only
    )


@pytest.fixture
def store(make_store):
    return make_store()


class TestMongomockStore(StoreContract):
    pass


def test_an_experiment_being_created_is_hidden_and_an_abandoned_one_is_cleared(store, monkeypatch):
    """MongoDB has no transaction here: creation marks the experiment `importing` until its trials
    are in. While marked, no reader sees it; a mark its creator left behind (it died midway)
    is cleared by the next create of that name once it is older than import_timeout_s."""
    from tests.support.store_contract import experiment, finished
    from workers.store import ExperimentExists, mongo

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
    assert [e.name for e in store.experiments()] == ["imp"] and len(store.trials("imp")) == 2
