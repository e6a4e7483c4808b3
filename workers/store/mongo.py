"""MongoDB trial store, for workers on many machines (pymongo 4.x).

Reservation and the suggestion lease are single `find_one_and_update` calls, atomic on the
server; writes use majority write concern with journaling. Not hyperopt's MongoTrials, which
calls pymongo 3 APIs and unpickles code from the database.

Every call waits a bounded time (server selection and connection 10 s, a socket read 30 s, a
majority write 30 s); a server that does not answer in it raises StoreUnavailable.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Sequence

import gridfs
import pymongo
from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ReturnDocument
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    WTimeoutError,
)
from pymongo.write_concern import WriteConcern

from larnn_core.records import EpochReport, TrainResult
from workers.records import (
    ERROR,
    FINAL,
    NEW,
    RUNNING,
    STATE_NAMES,
    Attempt,
    Experiment,
    StoredFile,
    Trial,
    TrialOutcome,
    curve_entry,
)
from workers.store.base import (
    PLAIN_FIELDS,
    SUMMARY_DOCUMENTS,
    SUMMARY_RESULT,
    BaseStore,
    ExperimentExists,
    StoreUnavailable,
    UnknownExperiment,
    abandoned,
    late_delivery,
    own_trials,
)

HIDDEN = {"_id": 0, "lease_owner": 0, "lease_until": 0}
SUMMARY = {  # trial_summaries' projection
    "_id": 0,
    **dict.fromkeys(
        (*PLAIN_FIELDS, *SUMMARY_DOCUMENTS, "misc.idxs", "misc.vals", *(f"result.{key}" for key in SUMMARY_RESULT)), 1
    ),
}
OUTCOME = {  # trial_outcomes' projection
    "_id": 0,
    **dict.fromkeys(("tid", "state", "refresh_time", *(f"result.{key}" for key in SUMMARY_RESULT)), 1),
}
FILES = "trial_files"  # the GridFS bucket of the trials' files, in the store's database
VISIBLE = {"importing": {"$exists": False}}  # experiments whose creation has completed
DUPLICATE_KEY = 11000  # MongoDB's error code
VERSION = 2  # the store's layout (MongoStore._migrate); SQLite's VERSION counts the same steps
UNAVAILABLE = (ConnectionFailure, ExecutionTimeout, WTimeoutError)  # ConnectionFailure: also server selection


def _unavailable_as_store_error(cls):
    """Every method raises StoreUnavailable where pymongo says the server did not answer (the
    private ones too: BaseStore's shared methods call them)."""

    def translated(method):
        @functools.wraps(method)
        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except UNAVAILABLE as error:
                raise StoreUnavailable(f"MongoDB store: {type(error).__name__}: {str(error)[:300]}") from None

        return call

    for name, member in list(vars(cls).items()):
        if callable(member) and (not name.startswith("__") or name == "__init__"):
            setattr(cls, name, translated(member))
    return cls


@_unavailable_as_store_error
class MongoStore(BaseStore):
    import_timeout_s = 600.0  # a creation still marked `importing` after this long was abandoned

    def __init__(
        self, url: str, client: pymongo.MongoClient | None = None, database: str | None = None, read_only: bool = False
    ):
        """read_only (the commands that only read): no index is created and, unless an older
        store must be upgraded, nothing is written (every write is refused: BaseStore)."""
        try:
            self.client = client or pymongo.MongoClient(
                url, serverSelectionTimeoutMS=10_000, connectTimeoutMS=10_000, socketTimeoutMS=30_000
            )
        except ConfigurationError as error:  # a malformed URL (pymongo's message does not repeat it)
            raise ValueError(f"invalid MongoDB store URL: {error}") from None
        db = self.client.get_database(database) if database else self.client.get_default_database("larnn")
        scheme, hosts = re.match(r"([^:]*)://(?:[^@/]*@)?([^/?]*)", url).groups()  # no credentials
        self._identity = f"{scheme}:{','.join(sorted(hosts.split(',')))}/{db.name}"
        concern = WriteConcern(w="majority", j=True, wtimeout=30_000)
        self.experiments_ = db.get_collection("experiments", write_concern=concern)
        self.trials_ = db.get_collection("trials", write_concern=concern)
        self.records_ = db.get_collection("records", write_concern=concern)  # one document per (experiment, record)
        # the trials' files (GridFS) are written with the server's default concern: majority since MongoDB 5
        self._database = db
        if not read_only:
            self.experiments_.create_index("name", unique=True)
            self.trials_.create_index([("exp_key", 1), ("tid", 1)], unique=True)
            self.trials_.create_index([("state", 1), ("exp_key", 1), ("tid", 1)])
            self.records_.create_index([("exp_key", 1), ("record", 1)], unique=True)
        meta = db.get_collection("meta", write_concern=concern)
        version = (meta.find_one({"_id": "schema"}) or {"version": 0})["version"]
        if version > VERSION:
            raise ValueError(
                f"this MongoDB store was written by a newer larnn-hpo (store version {version}; this "
                f"one reads up to {VERSION})"
            )
        if version < VERSION and not (read_only and self.experiments_.find_one({}) is None):
            self._migrate(version, meta, db.get_collection("rungs", write_concern=concern))
        self.read_only = read_only

    @property
    def identity(self) -> str:
        return self._identity

    def _migrate(self, version: int, meta, rungs) -> None:
        """Upgrade a database of an earlier release in place; each step is safe to run twice, and
        by several workers opening the store at once. Version 1 needs no step (trials stored
        before attempt logs and live curves are read with empty ones); version 2 moves ASHA's
        `rungs` into the generic `records` (as SQLite's migration names them)."""
        if version < 2:
            for doc in rungs.find({}, sort=[("_id", 1)]):
                bracket, epoch = divmod(doc["rung"], 1_000_000)
                record = f"bracket {bracket} rung {epoch}" if bracket else f"rung {epoch}"
                self.records_.update_one(
                    {"exp_key": doc["exp_key"], "record": record},
                    {"$setOnInsert": {"keys": doc["tids"], "values": doc["values"]}},
                    upsert=True,
                )
                rungs.delete_one({"_id": doc["_id"]})
        meta.update_one({"_id": "schema"}, {"$max": {"version": VERSION}}, upsert=True)

    # -- experiments
    def create_experiment(self, experiment: Experiment, trials: Sequence[Trial] = ()) -> None:
        """Without a replica set MongoDB has no multi-document transaction, so the experiment is
        written first marked `importing` (hidden from every reader, its name taken), then its
        trials, then the mark is removed; a failure removes what was written. A creator that
        died midway leaves a mark older than import_timeout_s, which the next create of that
        name clears."""
        trials = own_trials(experiment, trials)
        name = experiment.name
        doc = {**experiment.to_document(), "lease_owner": None, "lease_until": 0.0}
        if trials:
            doc["importing"] = time.time()
        for _ in range(2):
            try:
                self.experiments_.insert_one(doc)
                break
            except DuplicateKeyError:
                if not self._clear_abandoned(name):
                    raise ExperimentExists(f"experiment {name!r} already exists") from None
        if not trials:
            return
        try:
            try:
                self.trials_.insert_many([t.to_document() for t in trials], ordered=True)
            except BulkWriteError as error:  # the first failed insert stopped the rest (ordered)
                failed = error.details["writeErrors"][0]
                if failed["code"] != DUPLICATE_KEY:
                    raise
                raise ValueError(f"trial {failed['op']['tid']} of {name!r} already exists") from None
            self.experiments_.update_one({"name": name}, {"$unset": {"importing": ""}})
        except BaseException:
            self.trials_.delete_many({"exp_key": name})
            self.experiments_.delete_one({"name": name, "importing": doc["importing"]})
            raise

    def _clear_abandoned(self, name: str) -> bool:
        """Remove an import of `name` whose creator died midway; False if there is none."""
        abandoned = self.experiments_.find_one_and_delete(
            {"name": name, "importing": {"$lt": time.time() - self.import_timeout_s}}
        )
        if abandoned is not None:
            self.trials_.delete_many({"exp_key": name})
        return abandoned is not None

    def get_experiment(self, name: str) -> Experiment:
        doc = self.experiments_.find_one({"name": name, **VISIBLE}, HIDDEN)
        if doc is None:
            raise UnknownExperiment(f"no experiment named {name!r} in the MongoDB store")
        return Experiment.from_document(doc)

    def experiments(self) -> list[Experiment]:
        return [
            Experiment.from_document(doc)
            for doc in self.experiments_.find(VISIBLE, HIDDEN, sort=[("created", 1), ("name", 1)])
        ]

    def _update_experiment(self, name: str, fields: dict) -> None:
        if self.experiments_.update_one({"name": name}, {"$set": fields}).matched_count != 1:
            raise UnknownExperiment(f"no experiment named {name!r} in the MongoDB store")

    def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        now = time.time()
        taken = self.experiments_.find_one_and_update(
            {"name": name, "$or": [{"lease_until": {"$lt": now}}, {"lease_owner": owner}]},
            {"$set": {"lease_owner": owner, "lease_until": now + seconds}},
        )
        return taken is not None

    def release_lease(self, name: str, owner: str) -> None:
        self.experiments_.update_one(
            {"name": name, "lease_owner": owner}, {"$set": {"lease_owner": None, "lease_until": 0.0}}
        )

    # -- trials
    def insert_trial(self, trial: Trial) -> None:
        try:
            self.trials_.insert_one(trial.to_document())
        except DuplicateKeyError:
            raise ValueError(f"trial {trial.tid} of {trial.exp_key!r} already exists") from None

    def trials(self, name: str, tids: Sequence[int] | None = None) -> list[Trial]:
        query = {"exp_key": name, **({"tid": {"$in": list(tids)}} if tids is not None else {})}
        return [Trial.from_document(doc) for doc in self.trials_.find(query, {"_id": 0}, sort=[("tid", 1)])]

    def trial_summaries(self, name: str) -> list[Trial]:
        return [Trial.from_document(doc) for doc in self.trials_.find({"exp_key": name}, SUMMARY, sort=[("tid", 1)])]

    def trial_outcomes(self, name: str, since: int | None = None) -> tuple[list[TrialOutcome], None]:
        """Every trial, each time: change marks would cost each trial write a second round trip
        (a counter document), and writes with marks taken in one order may land in another."""
        return [
            TrialOutcome.of(doc["tid"], doc["state"], doc.get("refresh_time"), doc.get("result") or {})
            for doc in self.trials_.find({"exp_key": name}, OUTCOME)
        ], None

    def trial_points(self, name: str, tids: Sequence[int]) -> dict[int, tuple[dict, dict]]:
        """Many tids (a worker's first read) read the experiment's points and keep those asked:
        a filter on thousands of tids costs more than the points it spares (mongomock: 9 s for
        10,000)."""
        wanted = set(tids)
        query = {"exp_key": name, **({"tid": {"$in": list(wanted)}} if len(wanted) <= 1000 else {})}
        documents = self.trials_.find(query, {"_id": 0, "tid": 1, "misc.idxs": 1, "misc.vals": 1})
        return {
            doc["tid"]: ((doc.get("misc") or {}).get("idxs") or {}, (doc.get("misc") or {}).get("vals") or {})
            for doc in documents
            if doc["tid"] in wanted
        }

    def state_counts(self, name: str) -> dict[int, int]:
        return {state: self.trials_.count_documents({"exp_key": name, "state": state}) for state in STATE_NAMES}

    def reserve(self, owner: str, experiment: str | None = None) -> Trial | None:
        query = {"state": NEW, **({"exp_key": experiment} if experiment else {})}
        now = time.time()
        trial = self.trials_.find_one_and_update(  # no projection: mongomock then returns another document
            query,
            {
                "$set": {"state": RUNNING, "owner": owner, "book_time": now, "refresh_time": now},
                "$inc": {"attempts": 1},
                "$push": {"attempt_log": Attempt(owner, now).to_document()},
            },
            sort=[("tid", 1), ("exp_key", 1)],
            return_document=ReturnDocument.AFTER,
        )
        return None if trial is None else Trial.from_document(trial)

    def _update_own(self, name: str, tid: int, owner: str, update: dict) -> bool:
        query = {"exp_key": name, "tid": tid, "owner": owner, "state": RUNNING}
        return self.trials_.update_one(query, update).modified_count == 1

    def _end_attempt(self, name: str, tid: int, owner: str, outcome: str) -> None:
        """Close owner's running attempt_log entry (after the fenced update that decided it: the log
        is a record, never what fences a worker)."""
        self.trials_.update_one(
            {"exp_key": name, "tid": tid, "attempt_log": {"$elemMatch": {"owner": owner, "outcome": "running"}}},
            {"$set": {"attempt_log.$.end": time.time(), "attempt_log.$.outcome": outcome}},
        )

    def heartbeat(self, name: str, tid: int, owner: str) -> bool:
        return self._update_own(name, tid, owner, {"$set": {"refresh_time": time.time()}})

    def report_epoch(self, name: str, tid: int, owner: str, report: EpochReport) -> bool:
        """The attempt is read first, then the push is conditional on it (still owner's, still running,
        no attempt since): one atomic update, as a single push was."""
        trial = self.trials_.find_one(
            {"exp_key": name, "tid": tid, "owner": owner, "state": RUNNING}, {"attempt_log": 1}
        )
        if trial is None:
            return False
        attempt = len(trial.get("attempt_log") or ())
        changed = self.trials_.update_one(
            {"exp_key": name, "tid": tid, "owner": owner, "state": RUNNING, "attempt_log": {"$size": attempt}},
            {"$push": {"curve": curve_entry(report, attempt)}, "$set": {"refresh_time": time.time()}},
        )
        return changed.modified_count == 1

    def append_record(self, name: str, record: str, key: int, value: float) -> list[tuple[int, float]]:
        """One single-document update: its result is the record as it stood after this arrival."""
        try:
            doc = self.records_.find_one_and_update(
                {"exp_key": name, "record": record, "keys": {"$ne": key}},
                {"$push": {"keys": key, "values": value}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # the record exists and already holds this key (the filter missed)
            doc = self.records_.find_one({"exp_key": name, "record": record})
        return list(zip(doc["keys"], doc["values"]))

    def finish(self, name: str, tid: int, owner: str, state: int, result: TrainResult) -> bool:
        assert state in FINAL
        now = time.time()
        if self._update_own(
            name, tid, owner, {"$set": {"state": state, "result": result.to_document(), "refresh_time": now}}
        ):
            self._end_attempt(name, tid, owner, "finished")
            return True
        trial = self.trials_.find_one({"exp_key": name, "tid": tid}, {"state": 1, "attempt_log": 1})
        log = None if trial is None else late_delivery(trial["state"], trial.get("attempt_log") or [], owner, now)
        if log is None:
            return False
        changed = self.trials_.update_one(  # only if nothing changed it since it was read
            {"exp_key": name, "tid": tid, "state": trial["state"], "attempt_log": trial.get("attempt_log") or []},
            {
                "$set": {
                    "state": state,
                    "owner": owner,
                    "result": result.to_document(),
                    "refresh_time": now,
                    "attempt_log": log,
                }
            },
        )
        return changed.modified_count == 1

    def release(self, name: str, tid: int, owner: str) -> bool:
        if not self._update_own(name, tid, owner, {"$set": {"state": NEW, "owner": None}, "$inc": {"attempts": -1}}):
            return False
        self._end_attempt(name, tid, owner, "given back")
        return True

    def requeue_stale(self, older_than: float, max_attempts: int) -> list[dict]:
        cutoff = time.time() - older_than
        moved = []
        while True:  # one atomic update per stale trial, so a racing heartbeat or requeue is never lost
            trial = self.trials_.find_one_and_update(
                {"state": RUNNING, "refresh_time": {"$lt": cutoff}, "attempts": {"$lt": max_attempts}},
                {"$set": {"state": NEW, "owner": None}},
            )
            if trial is None:
                break
            self._end_attempt(trial["exp_key"], trial["tid"], trial["owner"], "heartbeat lost")
            moved.append(
                {"exp_key": trial["exp_key"], "tid": trial["tid"], "owner": trial["owner"], "outcome": "requeued"}
            )
        while True:
            trial = self.trials_.find_one({"state": RUNNING, "refresh_time": {"$lt": cutoff}})
            if trial is None:
                return moved
            result = abandoned(older_than, trial["attempts"], trial["owner"]).to_document()
            if self.trials_.update_one(
                {
                    "exp_key": trial["exp_key"],
                    "tid": trial["tid"],
                    "state": RUNNING,
                    "refresh_time": trial["refresh_time"],
                },
                {"$set": {"state": ERROR, "result": result}},
            ).modified_count:
                self._end_attempt(trial["exp_key"], trial["tid"], trial["owner"], "heartbeat lost")
                moved.append(
                    {"exp_key": trial["exp_key"], "tid": trial["tid"], "owner": trial["owner"], "outcome": "failed"}
                )

    def note_resumed(self, name: str, tid: int, owner: str, epoch: int | None) -> bool:
        changed = self.trials_.update_one(
            {
                "exp_key": name,
                "tid": tid,
                "owner": owner,
                "state": RUNNING,
                "attempt_log": {"$elemMatch": {"owner": owner, "outcome": "running"}},
            },
            {"$set": {"attempt_log.$.resumed_from_epoch": epoch}},
        )
        return changed.modified_count == 1

    # -- files: GridFS in the store's database, so a worker on any machine reads any trial's
    @functools.cached_property
    def _files(self) -> gridfs.GridFS:
        return gridfs.GridFS(self._database, collection=FILES)

    def _put_file(self, name: str, tid: int, kind: str, data: bytes) -> str:
        return str(self._files.put(data, filename=f"{name}/{tid}/{kind}"))

    def _set_file(self, name, tid, kind, stored, owner):
        fence = {"owner": owner, "state": RUNNING} if owner is not None else {}
        update = (
            {"$set": {f"files.{kind}": stored.to_document()}}
            if stored is not None
            else {"$unset": {f"files.{kind}": ""}}
        )
        before = self.trials_.find_one_and_update({"exp_key": name, "tid": tid, **fence}, update, {"files": 1})
        if before is None:
            return False, None
        replaced = (before.get("files") or {}).get(kind)
        return True, None if replaced is None else StoredFile.from_document(replaced)

    def _get_file(self, location: str) -> bytes | None:
        try:
            return self._files.get(ObjectId(location)).read()
        except (gridfs.errors.NoFile, InvalidId):
            return None

    def _remove_file(self, location: str) -> None:
        self._files.delete(ObjectId(location))

    def close(self) -> None:
        self.client.close()
