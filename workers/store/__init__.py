"""Trial stores, chosen by URL: sqlite:///PATH (embedded default) or mongodb://... (many machines)."""

from __future__ import annotations

import os

from workers.records import DONE, ERROR, FINAL, NEW, PRUNED, RUNNING, STATE_NAMES
from workers.store.base import BaseStore, ExperimentExists, ReadOnlyStore, StoreUnavailable, UnknownExperiment

DEFAULT_URL = "sqlite:///larnn.db"


def store_url(url: str | None = None) -> str:
    """--store, else $LARNN_STORE, else the embedded default (larnn.db in the working directory)."""
    return url or os.environ.get("LARNN_STORE") or DEFAULT_URL


def open_store(url: str | None = None, read_only: bool = False) -> BaseStore:
    """The store at url (store_url's default); read_only for the commands that only read: they
    refuse any write, and create or change nothing (see each backend)."""
    url = store_url(url)
    if url.startswith("sqlite:///"):
        from workers.store.sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite:///") :], read_only=read_only)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from workers.store.mongo import MongoStore

        return MongoStore(url, read_only=read_only)
    raise ValueError(f"unknown store URL {url!r}: use sqlite:///PATH or mongodb://HOST/DB")


__all__ = [
    "DONE",
    "ERROR",
    "FINAL",
    "NEW",
    "PRUNED",
    "RUNNING",
    "STATE_NAMES",
    "BaseStore",
    "ExperimentExists",
    "ReadOnlyStore",
    "StoreUnavailable",
    "UnknownExperiment",
    "open_store",
    "store_url",
]
