"""Writes the stores of the previous release that tests/test_store_migration.py opens.

    python tests/data/make_previous_release_stores.py CHECKOUT

CHECKOUT: a checkout of commit 82e6fa2 (the last release before stores held generic records;
`git worktree add DIR 82e6fa2`). With that checkout's code first on the path, it writes, beside
this file: previous-release.db (a SQLite store), previous-release-mongo.json (the documents of a
MongoDB store, from mongomock), and previous-release-reads.json (what that release read back from
them: experiments and trials, per backend), against which the tests hold today's reads.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def fill(store, new_trial, states) -> dict:
    """One ASHA experiment with a trial in every state, curves, attempt logs and two rungs."""
    DONE, ERROR, PRUNED, RUNNING = states
    store.create_experiment(
        {
            "name": "round3",
            "space": {"space": {"learning_rate": {"loguniform": [0.001, 0.1]}}},
            "algorithm": "tpe",
            "max_evals": 10,
            "objective": {"source": "hapt", "epochs": 20, "validation_subjects": 5, "metric": "validation_accuracy"},
            "seed": 7,
            "pruner": {"kind": "asha", "min_epochs": 5, "eta": 3},
            "liar": "none",
            "stop": {"no_improvement": None, "after_s": None},
            "created": 1_700_000_000.0,
        }
    )
    curve = [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "train_accuracy": 0.5 + e / 100,
            "validation_loss": 0.9 / e,
            "validation_accuracy": 0.6 + e / 100,
            "test_accuracy": 0.55 + e / 100,
        }
        for e in range(1, 6)
    ]
    history = {
        key: [entry[metric] for entry in curve]
        for key, metric in (
            ("train_losses", "train_loss"),
            ("train_accuracies", "train_accuracy"),
            ("validation_losses", "validation_loss"),
            ("validation_accuracies", "validation_accuracy"),
            ("test_accuracies", "test_accuracy"),
        )
    }
    for tid, (state, owner) in enumerate([(DONE, "w1"), (PRUNED, "w2"), (ERROR, "w1"), (RUNNING, "w3")]):
        store.insert_trial(
            new_trial("round3", tid, {"learning_rate": [tid]}, {"learning_rate": [0.01 * (tid + 1)]}, owner=owner)
        )
        for entry in curve:
            store.report_epoch("round3", tid, owner, entry)
        if state == PRUNED:
            store.record_rung("round3", 5, tid, 0.62)
        if state == DONE:
            store.record_rung("round3", 5, tid, 0.65)
        if state != RUNNING:
            result = (
                {"status": "fail", "error": "CUDA out of memory"}
                if state == ERROR
                else {
                    "status": "ok",
                    "loss": -0.65,
                    "best_validation_accuracy": 0.65,
                    "best_epoch": 5,
                    "test_accuracy": 0.6,
                    "history": history,
                    "protocol": "honest",
                    "space": {"learning_rate": 0.01 * (tid + 1)},
                    "worker": owner,
                    **({"pruned_at_epoch": 5} if state == PRUNED else {}),
                }
            )
            store.finish("round3", tid, owner, state, result)
    store.record_rung("round3", 1_000_015, 3, 0.7)  # a Hyperband bracket's rung key of that release
    return {"experiments": store.experiments(), "trials": store.trials("round3")}


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    import mongomock

    from workers.store import DONE, ERROR, PRUNED, RUNNING, new_trial
    from workers.store.mongo import MongoStore
    from workers.store.sqlite import SQLiteStore

    states = (DONE, ERROR, PRUNED, RUNNING)
    db = HERE / "previous-release.db"
    db.unlink(missing_ok=True)
    sqlite = SQLiteStore(db)
    reads = {"sqlite": fill(sqlite, new_trial, states)}
    sqlite.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the one file
    sqlite.close()
    client = mongomock.MongoClient()
    mongo = MongoStore("mongodb://localhost/larnn", client=client)
    reads["mongo"] = fill(mongo, new_trial, states)
    dump = {
        name: [{k: v for k, v in doc.items() if k != "_id"} for doc in client["larnn"][name].find()]
        for name in ("experiments", "trials", "rungs")
    }
    (HERE / "previous-release-mongo.json").write_text(json.dumps(dump, indent=1) + "\n")
    (HERE / "previous-release-reads.json").write_text(json.dumps(reads, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
