"""The store contract on real SQLite files (the cross-process test is in test_workers.py)."""
import pytest

from tests.store_contract import StoreContract
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
