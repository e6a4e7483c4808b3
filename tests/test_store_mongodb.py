"""The store contract against a real MongoDB server: set LARNN_TEST_MONGO_URI (docker-compose's
`test` service does) to run it."""

import os
import uuid

import pytest

from tests.support.store_contract import StoreContract

URI = os.environ.get("LARNN_TEST_MONGO_URI")
pytestmark = pytest.mark.skipif(
    not URI, reason="LARNN_TEST_MONGO_URI is not set: no real MongoDB server to test against"
)


@pytest.fixture
def make_store():
    from workers.store.mongo import MongoStore

    database = f"larnn_test_{uuid.uuid4().hex[:8]}"
    stores = []

    def make(read_only: bool = False):
        stores.append(MongoStore(URI, database=database, read_only=read_only))
        return stores[-1]

    yield make
    stores[0].client.drop_database(database)
    for s in stores:
        s.close()


@pytest.fixture
def store(make_store):
    return make_store()


class TestMongoDBStore(StoreContract):
    pass
