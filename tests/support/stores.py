"""MongoDB in-process for the tests: mongomock, with each collection call made atomic.

mongomock does not make a single operation atomic across threads, as a MongoDB server does, so
each collection call here holds one lock: the server's guarantee, emulated for the test double.
GridFS (the trials' files) runs on mongomock's database itself, each file its own documents."""

import threading

import mongomock
import mongomock.gridfs

mongomock.gridfs.enable_gridfs_integration()  # gridfs accepts mongomock's databases


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
        self.name = database.name

    @property
    def __class__(self):  # GridFS checks isinstance(database, Database): mongomock's, once integrated
        return type(self._database)

    def __getattr__(self, name):  # what GridFS asks of its database (with_options, write_concern)
        return getattr(self._database, name)

    def get_collection(self, name, **options):
        return AtomicCollection(self._database.get_collection(name, **options), self._lock)


class AtomicClient:
    def __init__(self):
        self._client, self._lock = mongomock.MongoClient(), threading.Lock()

    def get_database(self, name):
        return AtomicDatabase(self._client.get_database(name), self._lock)

    def close(self):
        pass
