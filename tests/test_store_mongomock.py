"""The store contract against MongoDB in-process (mongomock; threads share one in-memory server,
each collection call atomic as on a server: tests/support/stores.py)."""

import pytest

from larnn_core.records import EpochReport
from tests.support.results import result_with
from tests.support.store_contract import StoreContract, experiment, finished
from tests.support.stores import AtomicClient
from workers.records import DONE, Trial
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


QUERIES = (
    "find",
    "find_one",
    "find_one_and_update",
    "find_one_and_delete",
    "update_one",
    "update_many",
    "delete_one",
    "delete_many",
    "count_documents",
)


def test_every_query_of_the_store_is_narrowed_by_an_index_it_creates(make_store, monkeypatch):
    """mongomock has no query planner: every filter the store sends is recorded while it serves a
    worker's life (submit, suggest, reserve, report, finish, give back, requeue, status), and each
    must name the first key of an index of its collection, so MongoDB scans one experiment's or
    one state's trials, never the whole collection."""
    import mongomock

    sent = []
    for method in QUERIES:
        original = getattr(mongomock.collection.Collection, method)

        def recording(self, filter=None, *args, _original=original, **kwargs):
            sent.append((self.name, dict(filter or {})))
            return _original(self, filter, *args, **kwargs)

        monkeypatch.setattr(mongomock.collection.Collection, method, recording)
    store = make_store()
    store.create_experiment(experiment("a"), finished("a", 2))
    store.create_experiment(experiment("b"))
    assert store.acquire_lease("b", "w1", 30)
    store.insert_trial(Trial.new("b", 0, {"x": [0]}, {"x": [0.0]}, owner="w1"))
    store.release_lease("b", "w1")
    store.insert_trial(Trial.new("b", 1, {"x": [0]}, {"x": [0.5]}))
    assert store.reserve("w2", "b").tid == 1 and store.reserve("w3") is None
    assert store.heartbeat("b", 0, "w1") and store.report_epoch("b", 0, "w1", EpochReport(1))
    store.append_record("b", "rung 1", 0, 0.5)
    assert store.finish("b", 0, "w1", DONE, result_with([0.5])) and store.release("b", 1, "w2")
    store.reserve("w2")
    store.requeue_stale(-1, max_attempts=1)
    store.trials("b"), store.trials("b", tids=[0]), store.trial_summaries("b"), store.state_counts("b")
    store.experiments(), store.get_experiment("b"), store.set_max_evals("b", 3)
    collections = {"experiments": store.experiments_, "trials": store.trials_, "records": store.records_}
    indexes = {
        name: [spec["key"][0][0] for spec in collection.index_information().values()]
        for name, collection in collections.items()
    }
    indexes["meta"] = ["_id"]  # the store's version: one document, read by _id
    whole = {("experiments", "importing"), ("experiments", ""), ("rungs", "")}  # every experiment; the migration's
    unnarrowed = [
        (collection, query)
        for collection, query in sent
        if (collection, ",".join(query)) not in whole and not any(first in query for first in indexes[collection])
    ]
    assert {"trials", "experiments", "records"} <= {collection for collection, _ in sent}
    assert not unnarrowed, unnarrowed
    assert set(indexes["trials"]) == {"_id", "exp_key", "state"}
