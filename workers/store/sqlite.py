"""SQLite trial store: the embedded default, for one machine and several processes.

WAL journal (readers never block the writer), short `BEGIN IMMEDIATE` transactions (the write
lock is taken up front, so two reservations cannot interleave), a busy timeout and a few retries
with backoff; a lock held longer than that (by another process) or a file that cannot be opened
raises StoreUnavailable, so the worker logs the outage and retries at its own pace. Each thread
has its own connection: a worker's heartbeat thread waiting for the lock never holds up the
delivery of a result.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import random
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from larnn_core.files import atomic_write
from larnn_core.records import EpochReport, TrainResult
from workers.records import (
    ERROR,
    FINAL,
    NEW,
    RUNNING,
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

RECORDS = """CREATE TABLE records (
    arrival INTEGER PRIMARY KEY AUTOINCREMENT, exp_key TEXT NOT NULL, record TEXT NOT NULL,
    key INTEGER NOT NULL, value REAL NOT NULL, UNIQUE (exp_key, record, key))"""
# A trial's point ([idxs, vals]) and its result's SUMMARY_RESULT values, as JSON arrays written with
# every write of misc or result and stored first in the row: a summary reads a few hundred bytes of
# each row. json_extract over the result parsed all of it (its per-epoch history: 30 ms for 1000
# trials of 100 epochs), refuses the NaN that Python's JSON writes for a diverged loss, and a column
# after the curve is reached through the curve's overflow pages.
TRIALS = """CREATE TABLE trials (
    point TEXT NOT NULL DEFAULT '[{}, {}]', outcome TEXT NOT NULL DEFAULT '[]',
    exp_key TEXT NOT NULL, tid INTEGER NOT NULL, state INTEGER NOT NULL, owner TEXT,
    book_time REAL, refresh_time REAL, attempts INTEGER NOT NULL, misc TEXT NOT NULL, result TEXT NOT NULL,
    attempt_log TEXT NOT NULL DEFAULT '[]', curve TEXT NOT NULL DEFAULT '[]', files TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (exp_key, tid))"""
TRIALS_INDEX = "CREATE INDEX trials_state ON trials (state, exp_key, tid)"  # reserve's and requeue_stale's
SCHEMA = (  # a new store's tables, at VERSION but for the change marks (CHANGE_MARKS, added after)
    """CREATE TABLE experiments (
    name TEXT PRIMARY KEY, doc TEXT NOT NULL, created REAL NOT NULL,
    lease_owner TEXT, lease_until REAL NOT NULL DEFAULT 0)""",
    TRIALS,
    TRIALS_INDEX,
    RECORDS,
)
DOCUMENT_COLUMNS = ("misc", "result", "attempt_log", "curve", "files")  # a trial document's fields that hold JSON
COLUMNS = ", ".join((*PLAIN_FIELDS, *DOCUMENT_COLUMNS))
SUMMARY = ", ".join((*PLAIN_FIELDS, "point", "outcome", *SUMMARY_DOCUMENTS))  # trial_summaries' projection
INSERT = (  # a whole row: the summary columns, then COLUMNS
    f"INSERT INTO trials (point, outcome, {COLUMNS}) "
    f"VALUES ({', '.join('?' * (2 + len(PLAIN_FIELDS) + len(DOCUMENT_COLUMNS)))})"
)


def _add_attempt_logs_and_curves(db) -> None:
    """Version 1: trials keep the log of their attempts and their live curve (empty for older trials)."""
    present = [row[1] for row in db.execute("PRAGMA table_info(trials)")]
    for column in ("attempt_log", "curve"):
        if column not in present:
            db.execute(f"ALTER TABLE trials ADD COLUMN {column} TEXT NOT NULL DEFAULT '[]'")


def _rungs_to_records(db) -> None:
    """Version 2: ASHA's rung table becomes the store's generic named records, in the same arrival
    order; rung r (Hyperband's bracket b kept b * 1000000 + epoch) is the record "rung r" (or
    "bracket b rung epoch"), as workers/pruners.py names them."""
    db.execute(RECORDS)
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rungs'").fetchall():
        db.execute(
            "INSERT INTO records (arrival, exp_key, record, key, value) "
            "SELECT arrival, exp_key, CASE WHEN rung >= 1000000 "
            "THEN 'bracket ' || (rung / 1000000) || ' rung ' || (rung % 1000000) ELSE 'rung ' || rung END, "
            "tid, value FROM rungs ORDER BY arrival"
        )
        db.execute("DROP TABLE rungs")


def _point(misc: dict) -> str:
    """The `point` column of a trial whose misc this is."""
    return json.dumps([misc.get("idxs") or {}, misc.get("vals") or {}])


def _outcome(result: dict) -> str:
    """The `outcome` column of a trial whose result document this is."""
    return json.dumps([result.get(key) for key in SUMMARY_RESULT])


@functools.lru_cache(maxsize=2**17)
def _outcome_values(text: str) -> tuple:
    """TrialOutcome's status and loss from an outcome column. Memoised on the
    text: every slot of a worker process reads every trial's outcome when it starts."""
    result = {key: value for key, value in zip(SUMMARY_RESULT, json.loads(text)) if value is not None}
    return TrialOutcome.of(0, 0, None, result)[3:]


def _summary_columns(db) -> None:
    """Version 3: the trials table is rebuilt with its summary columns first (TRIALS), its rows copied
    (with no files: version 4's column)."""
    db.execute("ALTER TABLE trials RENAME TO trials_before_summaries")
    db.execute(TRIALS)
    columns = COLUMNS.replace("files", "'{}'")
    for row in db.execute(f"SELECT {columns} FROM trials_before_summaries ORDER BY exp_key, tid").fetchall():
        misc, result = (
            json.loads(row[len(PLAIN_FIELDS) + DOCUMENT_COLUMNS.index(name)]) for name in ("misc", "result")
        )
        db.execute(INSERT, (_point(misc), _outcome(result), *row))
    db.execute("DROP TABLE trials_before_summaries")
    db.execute(TRIALS_INDEX)


def _add_files(db) -> None:
    """Version 4: trials record their files (checkpoint, model; none for older trials)."""
    if "files" not in [row[1] for row in db.execute("PRAGMA table_info(trials)")]:
        db.execute("ALTER TABLE trials ADD COLUMN files TEXT NOT NULL DEFAULT '{}'")


# Version 5: every insert or update of a trial takes the store's next change mark, so a worker
# reads only the outcomes that changed since its last suggestion (trial_outcomes). Write
# transactions are serialised, so marks grow in commit order: a reader that has seen mark M has
# seen every change up to M, and any later one gets a mark above M. The marks sit in a narrow
# table of their own: a trigger that updated the trials row would write it (and its curve) twice.
CHANGE_MARKS = (
    "CREATE TABLE changes (mark INTEGER NOT NULL)",
    "INSERT INTO changes VALUES (0)",
    """CREATE TABLE trial_changes (
    exp_key TEXT NOT NULL, tid INTEGER NOT NULL, changed INTEGER NOT NULL, PRIMARY KEY (exp_key, tid))""",
    "CREATE INDEX trial_changes_order ON trial_changes (exp_key, changed)",
    *(
        f"""CREATE TRIGGER trial_{event.lower()}d AFTER {event} ON trials BEGIN
    UPDATE changes SET mark = mark + 1;
    INSERT OR REPLACE INTO trial_changes VALUES (NEW.exp_key, NEW.tid, (SELECT mark FROM changes));
    END"""
        for event in ("INSERT", "UPDATE")
    ),
    "INSERT INTO trial_changes SELECT exp_key, tid, 0 FROM trials",
    # the budget check before each suggestion (state_counts) reads this index alone
    "CREATE INDEX trials_experiment_state ON trials (exp_key, state)",
)


def _change_marks(db) -> None:
    for statement in CHANGE_MARKS:
        db.execute(statement)


# each version's step from the one before; a store made before versions were kept is version 0
MIGRATIONS = {
    1: _add_attempt_logs_and_curves,
    2: _rungs_to_records,
    3: _summary_columns,
    4: _add_files,
    5: _change_marks,
}
VERSION = max(MIGRATIONS)


FILES_SUFFIX = ".files"  # larnn.db's trial files are kept in larnn.db.files/

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def refuse_foreign(path: Path) -> None:
    """A file that is not a SQLite database, a damaged one, or another program's database is
    refused in one line, before anything is written to it (opened for writing, a store would turn
    its journal to WAL and add its tables)."""
    if path.exists() and not path.is_file():  # a folder, a FIFO, a device: stat() only, nothing opened
        raise ValueError(f"{path} is not a regular file: not a larnn store")
    if not path.is_file() or path.stat().st_size == 0:
        return  # a new store, or one this class is about to create
    with open(path, "rb") as file:
        header = file.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise ValueError(f"{path} is not a SQLite database (its first bytes are not SQLite's): not a larnn store")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            # damage past the header too (5 ms for a store of 3000 trials): a write would spread it
            ((verdict,), *_) = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as error:
        raise ValueError(f"{path} is a damaged SQLite database ({error}): not a readable larnn store") from None
    if verdict != "ok":
        raise ValueError(f"{path} is a damaged SQLite database ({verdict[:200]}): restore it from a copy")
    if tables and "experiments" not in tables:
        raise ValueError(
            f"{path} is another program's SQLite database (tables: {', '.join(sorted(tables)[:3])}"
            f"{', ...' if len(tables) > 3 else ''}): not a larnn store"
        )


class SQLiteStore(BaseStore):
    # The files this process has opened as stores. POSIX drops every lock a process holds on a
    # file when any one of its descriptors of that file is closed, and refuse_foreign opens and
    # closes the file outside SQLite: run on a file this process already has open, it would drop
    # that connection's locks, another process's last connection would then take the WAL for its
    # own and delete it, and this process would read a stale, unlinked WAL from then on. So a
    # file is probed once per process, before its first connection.
    _probed: set[Path] = set()
    _probed_lock = threading.Lock()

    def __init__(self, path: str | Path, busy_timeout_s: float = 5.0, retries: int = 3, read_only: bool = False):
        """Each call waits at most about retries x busy_timeout_s for another process's lock.

        The file (and its folder) is created by the first write, so a command refused before it
        writes leaves nothing behind, and a missing store reads as empty. read_only (the commands
        that only read): every write is refused (BaseStore) and the file's journal mode is kept
        (its -wal and -shm files go with the last connection, as after any reader). An older store
        is upgraded when opened, by readers too, since they cannot read its old layout."""
        self.path = Path(path)
        self.busy_timeout_s, self.retries = busy_timeout_s, retries
        self._local = threading.local()
        self._connections: dict[threading.Thread, sqlite3.Connection] = {}
        self._connections_lock = threading.Lock()
        with SQLiteStore._probed_lock:
            if self.path.resolve() not in SQLiteStore._probed:
                refuse_foreign(self.path)
                SQLiteStore._probed.add(self.path.resolve())
        self.read_only = read_only
        self._prepared = False  # the schema is known to be at VERSION (_prepare)
        if self._exists() and (not read_only or self._read("PRAGMA user_version") != [(VERSION,)]):
            with self._translated():
                self._prepare()

    @property
    def identity(self) -> str:
        return f"sqlite:{self.path.resolve()}"

    def _exists(self) -> bool:
        return self.path.is_file()  # empty is not missing: a new store's pages can all be in its -wal file

    def _prepare(self) -> None:
        """The folder, and the schema at VERSION: a new store's created, an older one's upgraded in
        place (by readers too, which cannot read its old layout). Once per store object, before its
        first write, under the write lock: workers that start at once on a new store create it
        once, and none writes before its tables exist."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreUnavailable(f"cannot create the folder of {self.path}: {error}") from None
        reader, self.read_only = self.read_only, False
        try:
            self._retrying(self._migrate, True)
        finally:
            self.read_only = reader
        self._prepared = True

    def _migrate(self, db) -> None:
        """A new store gets the current schema; an older one is upgraded in place, one version's
        step at a time (MIGRATIONS), in the one transaction that also sets its version."""
        ((version,),) = db.execute("PRAGMA user_version").fetchall()
        if version > VERSION:
            raise ValueError(
                f"{self.path} was written by a newer larnn-hpo (store version {version}; this one "
                f"reads up to {VERSION})"
            )
        if version == VERSION:
            return
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'experiments'").fetchall():
            for statement in (*SCHEMA, *CHANGE_MARKS):
                db.execute(statement)
        else:
            for step in range(version + 1, VERSION + 1):
                MIGRATIONS[step](db)
        db.execute(f"PRAGMA user_version = {VERSION}")

    @staticmethod
    def _log_attempt(db, name: str, tid: int, change) -> None:
        """attempt_log = change(attempt_log), inside the caller's transaction."""
        ((log,),) = db.execute("SELECT attempt_log FROM trials WHERE exp_key = ? AND tid = ?", (name, tid)).fetchall()
        db.execute(
            "UPDATE trials SET attempt_log = ? WHERE exp_key = ? AND tid = ?",
            (json.dumps(change(json.loads(log))), name, tid),
        )

    @staticmethod
    def _ended(owner: str | None, outcome: str, now: float):
        """A change that closes owner's running attempt with outcome."""

        def change(log: list) -> list:
            return [
                {**entry, "end": now, "outcome": outcome}
                if entry["outcome"] == "running" and entry["owner"] == owner
                else entry
                for entry in log
            ]

        return change

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use; those of threads that have ended (a
        worker starts a heartbeat thread per trial) are closed then, so a worker that runs for
        days holds one connection per live thread, not one per trial."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
            try:
                if not self.read_only:  # a reader keeps the file's journal mode
                    db.execute("PRAGMA journal_mode=WAL")  # locked while another process creates the file
                    db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error:
                db.close()
                raise
            self._local.db = db
            with self._connections_lock:
                for thread in [t for t in self._connections if not t.is_alive()]:
                    self._connections.pop(thread).close()
                self._connections[threading.current_thread()] = db
        return db

    def _transaction(self, work, begin: bool = True):
        """Run work(db) in one short write transaction, retrying on lock errors; StoreUnavailable
        when the database stays locked or cannot be opened."""
        with self._translated():
            if begin and not self._prepared:
                self._prepare()
            elif not begin and not self._prepared and not self._schema_ready():
                return []  # reads of a store not yet created, or whose creator is still at it: it holds nothing
            return self._retrying(work, begin)

    def _schema_ready(self) -> bool:
        """Whether the file exists and holds the schema at VERSION (remembered once it does): another
        process may have made the file and not yet committed its tables."""
        if self._exists():
            version = self._retrying(lambda db: db.execute("PRAGMA user_version").fetchall(), False)
            self._prepared = version == [(VERSION,)]
        return self._prepared

    @contextlib.contextmanager
    def _translated(self):
        try:
            yield
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"SQLite store {self.path}: {error}") from None
        except sqlite3.DatabaseError as error:  # damaged since it was opened: no retry mends it
            raise ValueError(f"SQLite store {self.path} is damaged ({error}): restore it from a copy") from None

    def _retrying(self, work, begin: bool):
        for retry in range(self.retries):
            try:
                db = self.db
                if begin:
                    db.execute("BEGIN IMMEDIATE")
                try:
                    value = work(db)
                except BaseException:
                    if begin and db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                if begin:
                    db.execute("COMMIT")
                return value
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error) or retry == self.retries - 1:
                    raise
                time.sleep(min(1.0, 0.01 * 2**retry) * random.random())

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        return self._transaction(lambda db: db.execute(sql, args).fetchall(), begin=False)

    # -- experiments
    def create_experiment(self, experiment: Experiment, trials: Sequence[Trial] = ()) -> None:
        def work(db):  # one transaction: the experiment and its trials commit together or not at all
            try:
                db.execute(
                    "INSERT INTO experiments (name, doc, created) VALUES (?, ?, ?)",
                    (experiment.name, json.dumps(experiment.to_document()), experiment.created),
                )
            except sqlite3.IntegrityError:
                raise ExperimentExists(f"experiment {experiment.name!r} already exists") from None
            for trial in own_trials(experiment, trials):
                self._insert_trial(db, trial)

        self._transaction(work)

    def get_experiment(self, name: str) -> Experiment:
        rows = self._read("SELECT doc FROM experiments WHERE name = ?", (name,))
        if not rows:
            raise UnknownExperiment(f"no experiment named {name!r} in {self.path}")
        return Experiment.from_document(json.loads(rows[0][0]))

    def experiments(self) -> list[Experiment]:
        return [
            Experiment.from_document(json.loads(doc))
            for (doc,) in self._read("SELECT doc FROM experiments ORDER BY created, name")
        ]

    def _update_experiment(self, name: str, fields: dict) -> None:
        def work(db):
            rows = db.execute("SELECT doc FROM experiments WHERE name = ?", (name,)).fetchall()
            if not rows:
                raise UnknownExperiment(f"no experiment named {name!r} in {self.path}")
            db.execute(
                "UPDATE experiments SET doc = ? WHERE name = ?",
                (json.dumps({**json.loads(rows[0][0]), **fields}), name),
            )

        self._transaction(work)

    def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        now = time.time()
        return self._transaction(
            lambda db: (
                db.execute(
                    "UPDATE experiments SET lease_owner = ?, lease_until = ? "
                    "WHERE name = ? AND (lease_until < ? OR lease_owner = ?)",
                    (owner, now + seconds, name, now, owner),
                ).rowcount
                == 1
            )
        )

    def release_lease(self, name: str, owner: str) -> None:
        self._transaction(
            lambda db: db.execute(
                "UPDATE experiments SET lease_owner = NULL, lease_until = 0 WHERE name = ? AND lease_owner = ?",
                (name, owner),
            )
        )

    # -- trials
    def insert_trial(self, trial: Trial) -> None:
        self._transaction(lambda db: self._insert_trial(db, trial))

    @staticmethod
    def _insert_trial(db, trial: Trial) -> None:
        doc = trial.to_document()
        try:
            db.execute(
                INSERT,
                (
                    _point(doc["misc"]),
                    _outcome(doc["result"]),
                    *(doc[column] for column in PLAIN_FIELDS),
                    *(json.dumps(doc[column]) for column in DOCUMENT_COLUMNS),
                ),
            )
        except sqlite3.IntegrityError:
            raise ValueError(f"trial {trial.tid} of {trial.exp_key!r} already exists") from None

    @staticmethod
    def _trial(row: tuple) -> Trial:
        """A trials row (COLUMNS): its plain columns, then its JSON ones."""
        plain, documents = row[: len(PLAIN_FIELDS)], row[len(PLAIN_FIELDS) :]
        return Trial.from_document(
            {**dict(zip(PLAIN_FIELDS, plain)), **{name: json.loads(v) for name, v in zip(DOCUMENT_COLUMNS, documents)}}
        )

    def trials(self, name: str, tids: Sequence[int] | None = None) -> list[Trial]:
        among, args = (
            ("", ()) if tids is None else (" AND tid IN (SELECT value FROM json_each(?))", (json.dumps(list(tids)),))
        )
        rows = self._read(f"SELECT {COLUMNS} FROM trials WHERE exp_key = ?{among} ORDER BY tid", (name, *args))
        return [self._trial(r) for r in rows]

    def trial_summaries(self, name: str) -> list[Trial]:
        """The plain columns, the summary columns (TRIALS) and SUMMARY_DOCUMENTS: not misc, result or curve."""
        plain = len(PLAIN_FIELDS)
        return [
            Trial.from_document(
                {
                    **dict(zip(PLAIN_FIELDS, row[:plain])),
                    "misc": dict(zip(("idxs", "vals"), json.loads(row[plain]))),
                    "result": {
                        key: value
                        for key, value in zip(SUMMARY_RESULT, json.loads(row[plain + 1]))
                        if value is not None
                    },
                    **{field: json.loads(value) for field, value in zip(SUMMARY_DOCUMENTS, row[plain + 2 :])},
                }
            )
            for row in self._read(f"SELECT {SUMMARY} FROM trials WHERE exp_key = ? ORDER BY tid", (name,))
        ]

    def trial_outcomes(self, name: str, since: int | None = None) -> tuple[list[TrialOutcome], int | None]:
        rows = self._read(
            "SELECT t.tid, t.state, t.refresh_time, t.outcome, c.changed FROM trial_changes c "
            "JOIN trials t ON t.exp_key = c.exp_key AND t.tid = c.tid WHERE c.exp_key = ? AND c.changed > ?",
            (name, -1 if since is None else since),  # rows older than the marks (version 5) have mark 0
        )
        outcomes = [TrialOutcome(tid, state, at, *_outcome_values(text)) for tid, state, at, text, _ in rows]
        return outcomes, max((row[4] for row in rows), default=since)

    def trial_points(self, name: str, tids: Sequence[int]) -> dict[int, tuple[dict, dict]]:
        rows = self._read(
            "SELECT tid, point FROM trials WHERE exp_key = ? AND tid IN (SELECT value FROM json_each(?))",
            (name, json.dumps(list(tids))),
        )
        return {tid: tuple(json.loads(point)) for tid, point in rows}

    def state_counts(self, name: str) -> dict[int, int]:
        return dict(self._read("SELECT state, COUNT(*) FROM trials WHERE exp_key = ? GROUP BY state", (name,)))

    def reserve(self, owner: str, experiment: str | None = None) -> Trial | None:
        def work(db):
            where, args = ("state = ? AND exp_key = ?", (NEW, experiment)) if experiment else ("state = ?", (NEW,))
            row = db.execute(
                f"SELECT exp_key, tid FROM trials WHERE {where} ORDER BY tid, exp_key LIMIT 1", args
            ).fetchone()
            if row is None:
                return None
            now = time.time()
            db.execute(
                "UPDATE trials SET state = ?, owner = ?, book_time = ?, refresh_time = ?, "
                "attempts = attempts + 1 WHERE exp_key = ? AND tid = ?",
                (RUNNING, owner, now, now, *row),
            )
            self._log_attempt(db, *row, lambda log: log + [Attempt(owner, now).to_document()])
            return self._trial(
                db.execute(f"SELECT {COLUMNS} FROM trials WHERE exp_key = ? AND tid = ?", row).fetchone()
            )

        return self._transaction(work)

    def heartbeat(self, name: str, tid: int, owner: str) -> bool:
        return self._transaction(
            lambda db: (
                db.execute(
                    "UPDATE trials SET refresh_time = ? WHERE exp_key = ? AND tid = ? AND owner = ? AND state = ?",
                    (time.time(), name, tid, owner, RUNNING),
                ).rowcount
                == 1
            )
        )

    def report_epoch(self, name: str, tid: int, owner: str, report: EpochReport) -> bool:
        def work(db):
            rows = db.execute(
                "SELECT curve, attempt_log FROM trials WHERE exp_key = ? AND tid = ? AND owner = ? AND state = ?",
                (name, tid, owner, RUNNING),
            ).fetchall()
            if not rows:
                return False
            curve, log = (json.loads(column) for column in rows[0])
            db.execute(
                "UPDATE trials SET curve = ?, refresh_time = ? WHERE exp_key = ? AND tid = ?",
                (json.dumps(curve + [curve_entry(report, len(log))]), time.time(), name, tid),
            )
            return True

        return self._transaction(work)

    def append_record(self, name: str, record: str, key: int, value: float) -> list[tuple[int, float]]:
        def work(db):  # one write transaction: the insert and the read see the same record
            db.execute(
                "INSERT OR IGNORE INTO records (exp_key, record, key, value) VALUES (?, ?, ?, ?)",
                (name, record, key, value),
            )
            return [
                tuple(row)
                for row in db.execute(
                    "SELECT key, value FROM records WHERE exp_key = ? AND record = ? ORDER BY arrival", (name, record)
                )
            ]

        return self._transaction(work)

    def finish(self, name: str, tid: int, owner: str, state: int, result: TrainResult) -> bool:
        assert state in FINAL
        now = time.time()

        document = result.to_document()

        def work(db):
            if (
                db.execute(
                    "UPDATE trials SET state = ?, result = ?, outcome = ?, refresh_time = ? "
                    "WHERE exp_key = ? AND tid = ? AND owner = ? AND state = ?",
                    (state, json.dumps(document), _outcome(document), now, name, tid, owner, RUNNING),
                ).rowcount
                == 1
            ):
                self._log_attempt(db, name, tid, self._ended(owner, "finished", now))
                return True
            rows = db.execute("SELECT state, attempt_log FROM trials WHERE exp_key = ? AND tid = ?", (name, tid))
            row = rows.fetchone()
            log = None if row is None else late_delivery(row[0], json.loads(row[1]), owner, now)
            if log is None:
                return False
            db.execute(
                "UPDATE trials SET state = ?, owner = ?, result = ?, outcome = ?, refresh_time = ?, attempt_log = ? "
                "WHERE exp_key = ? AND tid = ?",
                (state, owner, json.dumps(document), _outcome(document), now, json.dumps(log), name, tid),
            )
            return True

        return self._transaction(work)

    def release(self, name: str, tid: int, owner: str) -> bool:
        def work(db):
            if (
                db.execute(
                    "UPDATE trials SET state = ?, owner = NULL, attempts = attempts - 1 "
                    "WHERE exp_key = ? AND tid = ? AND owner = ? AND state = ?",
                    (NEW, name, tid, owner, RUNNING),
                ).rowcount
                != 1
            ):
                return False
            self._log_attempt(db, name, tid, self._ended(owner, "given back", time.time()))
            return True

        return self._transaction(work)

    def requeue_stale(self, older_than: float, max_attempts: int) -> list[dict]:
        def work(db):
            cutoff = time.time() - older_than
            stale = db.execute(
                "SELECT exp_key, tid, attempts, owner FROM trials WHERE state = ? AND refresh_time < ?",
                (RUNNING, cutoff),
            ).fetchall()
            moved = []
            for exp_key, tid, attempts, owner in stale:
                if attempts >= max_attempts:
                    document = abandoned(older_than, attempts, owner).to_document()
                    db.execute(
                        "UPDATE trials SET state = ?, result = ?, outcome = ? WHERE exp_key = ? AND tid = ?",
                        (ERROR, json.dumps(document), _outcome(document), exp_key, tid),
                    )
                else:
                    db.execute(
                        "UPDATE trials SET state = ?, owner = NULL WHERE exp_key = ? AND tid = ?", (NEW, exp_key, tid)
                    )
                self._log_attempt(db, exp_key, tid, self._ended(owner, "heartbeat lost", time.time()))
                moved.append(
                    {
                        "exp_key": exp_key,
                        "tid": tid,
                        "owner": owner,
                        "outcome": "failed" if attempts >= max_attempts else "requeued",
                    }
                )
            return moved

        return self._transaction(work)

    def note_resumed(self, name: str, tid: int, owner: str, epoch: int | None) -> bool:
        def work(db):
            if not db.execute(
                "SELECT 1 FROM trials WHERE exp_key = ? AND tid = ? AND owner = ? AND state = ?",
                (name, tid, owner, RUNNING),
            ).fetchall():
                return False
            self._log_attempt(
                db,
                name,
                tid,
                lambda log: [
                    {**a, "resumed_from_epoch": epoch} if a["owner"] == owner and a["outcome"] == "running" else a
                    for a in log
                ],
            )
            return True

        return self._transaction(work)

    # -- files: in a folder beside the database (FILES_SUFFIX), one folder per trial
    @property
    def files_folder(self) -> Path:
        return self.path.with_name(self.path.name + FILES_SUFFIX)

    def _trial_folder(self, name: str, tid: int) -> Path:
        safe = (
            name
            if re.fullmatch(r"[\w-][\w.-]*", name, re.ASCII)
            else "x-" + hashlib.sha256(name.encode()).hexdigest()[:16]
        )
        return self.files_folder / safe / str(tid)

    def _put_file(self, name: str, tid: int, kind: str, data: bytes) -> str:
        """Written atomically (larnn_core.files); returns the path relative to files_folder."""
        path = self._trial_folder(name, tid) / f"{kind}-{uuid.uuid4().hex[:12]}.safetensors"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)
        except OSError as error:
            raise StoreUnavailable(f"cannot write {path}: {error.strerror or error}") from None
        return str(path.relative_to(self.files_folder))

    def _set_file(self, name, tid, kind, stored, owner):
        def work(db):
            fence, args = (" AND owner = ? AND state = ?", (owner, RUNNING)) if owner is not None else ("", ())
            rows = db.execute(f"SELECT files FROM trials WHERE exp_key = ? AND tid = ?{fence}", (name, tid, *args))
            row = rows.fetchone()
            if row is None:
                return False, None, {}
            files = json.loads(row[0])
            replaced = files.pop(kind, None)
            if stored is not None:
                files[kind] = stored.to_document()
            db.execute("UPDATE trials SET files = ? WHERE exp_key = ? AND tid = ?", (json.dumps(files), name, tid))
            return True, None if replaced is None else StoredFile.from_document(replaced), files

        done, replaced, files = self._transaction(work)
        if done and stored is not None:
            self._remove_strays(name, tid, {f["location"] for f in files.values()})
        return done, replaced

    def _remove_strays(self, name: str, tid: int, recorded: set[str]) -> None:
        """Files of the trial's folder that no record names (a writer killed between the bytes and
        the record), once older than a minute (younger ones may be a live writer's, not recorded yet)."""
        for path in self._trial_folder(name, tid).glob("*"):
            with contextlib.suppress(OSError):
                if str(path.relative_to(self.files_folder)) not in recorded and time.time() - path.stat().st_mtime > 60:
                    path.unlink()

    def _get_file(self, location: str) -> bytes | None:
        try:
            return (self.files_folder / location).read_bytes()
        except FileNotFoundError:
            return None

    def _remove_file(self, location: str) -> None:
        (self.files_folder / location).unlink(missing_ok=True)

    def close(self) -> None:
        with self._connections_lock:
            for db in self._connections.values():
                db.close()
            self._connections.clear()
        self._local = threading.local()
