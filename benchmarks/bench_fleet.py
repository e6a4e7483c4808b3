"""What one experiment's store costs a fleet of workers. Prints numbers; asserts nothing.

    python benchmarks/bench_fleet.py [--sizes 1000 10000] [--fleet 8 64 256] [--out fleet.json]

1. An experiment on paper-round2 grown to each size of finished trials with realistic 100-epoch
   curves (every metric per epoch in the result's history and in the live curve, as trainings
   store them), on SQLite (a file) and on mongomock (MongoDB's API in this process: its timings
   are not a MongoDB server's, which parses BSON in C and runs queries beside the data). At each
   size, medians of --repeats:
   - reading the trials whole (what suggestions read before trial summaries), as summaries (what
     `status` and `best` read): ms and JSON bytes handed to Python;
   - reading every trial's outcome (what a worker reads when it starts, and a MongoDB store's
     worker at every suggestion), and only the outcome that changed since the last read (a
     SQLite store's worker at every suggestion: workers/history.py);
   - one suggestion's algorithm on a worker's history, for tpe, anneal and rand;
   - one Worker.next_trial: under the experiment's lease, the read, the stop rules, TPE and the
     insert of the new trial (the time that bounds how fast one experiment starts trials): a new
     worker's first, which reads every trial's point, and the median of the next;
   - `larnn status` (report.read + status_rows) and `larnn best` (best_trials, top 10).
2. A simulated fleet on SQLite: N worker threads share one store and one experiment that already
   holds --fleet-base finished trials; each trial is a fake training of 3 epochs, 0-1 s in all,
   reporting each epoch; once with TPE and once with rand (the difference is what TPE costs the
   fleet). Printed per N: trials
   started per second over --fleet-seconds, and where the workers' time went (next_trial:
   suggesting under the lease, waiting for it, reserving; training). Threads share
   the interpreter: on 2 cores their Python work (suggestions, JSON) is serialised by the GIL, as
   it is not on a fleet of machines, so the rate is this machine's, a lower bound of the store's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from hyperopt import Domain, Trials, rand

from larnn_core.records import FAIL, OK, EpochReport, TrainResult
from search_spaces import load_space
from workers import report
from workers.experiment import make_experiment, stored_space
from workers.history import History
from workers.records import DONE, ERROR, Attempt, Experiment, Trial
from workers.store import BaseStore, open_store
from workers.suggest import suggest
from workers.worker import Worker

EPOCHS = 100
NAME = "fleet"


def experiment(max_evals: int) -> Experiment:
    return make_experiment(NAME, load_space("paper-round2"), max_evals=max_evals)


def finished_trials(exp: Experiment, tids: range, rng: np.random.Generator) -> list[Trial]:
    """Finished trials at points drawn from the space, with noisy rising 100-epoch curves."""
    domain = Domain(lambda point: 0.0, stored_space(exp).hyperopt())
    docs = rand.suggest(list(tids), domain, Trials(), int(rng.integers(2**31)))
    trials = []
    for doc in docs:
        ceiling = rng.uniform(0.6, 0.95)
        accuracy = np.clip(ceiling * (1 - np.exp(-np.arange(1, EPOCHS + 1) / 10)) + rng.normal(0, 0.02, EPOCHS), 0, 1)
        loss = rng.uniform(0.2, 2.0, EPOCHS)
        epochs = tuple(
            EpochReport(
                e + 1, loss[e], accuracy[e], loss[e], accuracy[e], accuracy[e], loss[e], accuracy[e], accuracy[e], 30.0
            )
            for e in range(EPOCHS)
        )
        best = int(np.argmax(accuracy)) + 1
        start = 1.7e9 + doc["tid"] * 60.0
        trials.append(
            Trial(
                NAME,
                doc["tid"],
                {k: [int(x) for x in v] for k, v in doc["misc"]["idxs"].items()},
                {k: [float(x) for x in v] for k, v in doc["misc"]["vals"].items()},
                DONE,
                "bench:1:a",
                start,
                start + 3000.0,
                1,
                (Attempt("bench:1:a", start, start + 3000.0, "finished"),),
                epochs,
                TrainResult(OK, epochs, best_epoch=best, seed=doc["tid"], device="cpu", wall_time_s=3000.0),
            )
        )
    return trials


def grow(store: BaseStore, exp: Experiment, size: int, rng: np.random.Generator) -> None:
    """Add finished trials until the experiment holds `size` (in chunks: memory stays bounded)."""
    have = sum(store.state_counts(NAME).values())
    for start in range(have, size, 1000):
        chunk = finished_trials(exp, range(start, min(size, start + 1000)), rng)
        if start == 0:
            store.create_experiment(exp, chunk)
        else:
            for trial in chunk:
                store.insert_trial(trial)


def median_ms(work, repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        value = work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), value


def json_bytes(trials: list[Trial]) -> int:
    return sum(len(json.dumps(t.to_document())) for t in trials)


def latencies(store: BaseStore, exp: Experiment, size: int, repeats: int, spool: str) -> dict:
    whole_ms, whole = median_ms(lambda: store.trials(NAME), repeats)
    whole_bytes = json_bytes(whole)
    del whole
    summary_ms, summaries = median_ms(lambda: store.trial_summaries(NAME), repeats)
    out = {
        "trials": size,
        "read_whole_ms": whole_ms,
        "read_whole_MB": whole_bytes / 1e6,
        "read_summaries_ms": summary_ms,
        "read_summaries_MB": json_bytes(summaries) / 1e6,
        "read_outcomes_ms": median_ms(lambda: store.trial_outcomes(NAME), repeats)[0],
    }
    first = store.trials(NAME, tids=[0])[0]  # a running trial at its point, beating its heartbeats
    idxs = {label: [size] if ids else [] for label, ids in first.idxs.items()}
    store.insert_trial(Trial.new(NAME, size, idxs, first.vals, owner="bench:1:a"))
    history = History(exp)
    history.refresh(store)
    out["read_changes_ms"] = median_ms(  # one trial changed since the last read: a worker's usual refresh
        lambda: (store.heartbeat(NAME, size, "bench:1:a"), history.refresh(store)), repeats
    )[0]
    for algorithm in ("tpe", "anneal", "rand"):
        chosen = dataclasses.replace(exp, algorithm=algorithm)
        out[f"{algorithm}_algorithm_ms"] = median_ms(lambda c=chosen: suggest(c, history, size + 1), repeats)[0]
    worker = Worker(store, owner="bench:2:b", spool=spool)
    out["next_trial_first_ms"] = median_ms(worker.next_trial, 1)[0]  # a new worker reads every point
    out["next_trial_ms"] = median_ms(worker.next_trial, repeats)[0]  # each inserts one running trial
    out["status_ms"] = median_ms(lambda: report.status_rows(report.read(store)), repeats)[0]
    out["best_ms"] = median_ms(lambda: report.best_trials(store, NAME, 10), repeats)[0]
    return out


class FakeTraining:
    """3 epochs, 0-1 s in all; counts seconds spent training."""

    def __init__(self, seed: int):
        self.rng, self.lock, self.seconds = np.random.default_rng(seed), threading.Lock(), 0.0

    def __call__(self, point, settings, seed, device, on_epoch) -> TrainResult:
        with self.lock:
            durations = self.rng.uniform(0, 1 / 3, 3)
            accuracies = self.rng.uniform(0.5, 0.95, 3)
        reports = []
        for epoch, (seconds, accuracy) in enumerate(zip(durations, accuracies), 1):
            time.sleep(seconds)
            reports.append(EpochReport(epoch, validation_accuracy=float(accuracy), test_accuracy=float(accuracy)))
            on_epoch(reports[-1])
        with self.lock:
            self.seconds += float(durations.sum())
        return TrainResult(OK, tuple(reports), best_epoch=int(np.argmax(accuracies)) + 1)


class TimedWorker(Worker):
    """A Worker that adds up the time of its next_trial calls (suggestion, lease, reservation)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.next_trial_s = 0.0

    def next_trial(self):
        started = time.perf_counter()
        try:
            return super().next_trial()
        finally:
            self.next_trial_s += time.perf_counter() - started


def fleet(url: str, workers: int, algorithm: str, base: int, seconds: float, spool: str) -> dict:
    store = open_store(url)
    exp = dataclasses.replace(experiment(base + 1_000_000), algorithm=algorithm)
    grow(store, exp, base, np.random.default_rng(1))
    training = FakeTraining(workers)
    pool = [
        TimedWorker(store, training, experiment=NAME, owner=f"bench:{i}:w", poll_s=0.05, heartbeat_s=5.0, spool=spool)
        for i in range(workers)
    ]
    threads = [threading.Thread(target=w.run, daemon=True) for w in pool]
    before = sum(store.state_counts(NAME).values())
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    started_trials = sum(store.state_counts(NAME).values()) - before
    elapsed = time.perf_counter() - started
    for w in pool:
        w.stop()
    for thread in threads:
        thread.join(timeout=60)
    counts = store.counts(NAME)
    return {
        "workers": workers,
        "algorithm": algorithm,
        "trials_started_per_s": started_trials / elapsed,
        "trials_finished": counts["done"] - base,
        "next_trial_share": sum(w.next_trial_s for w in pool) / (workers * elapsed),
        "training_share": training.seconds / (workers * elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="finished trials measured at")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "mongomock"], choices=["sqlite", "mongomock"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fleet", type=int, nargs="*", default=[8, 64, 256], help="worker threads (none: skip)")
    parser.add_argument("--fleet-base", type=int, default=1000, help="finished trials before the fleet starts")
    parser.add_argument("--fleet-seconds", type=float, default=30.0)
    parser.add_argument(
        "--fleet-algorithms",
        nargs="+",
        default=["tpe", "rand"],
        choices=["tpe", "anneal", "rand"],
        help="suggestion algorithms of the fleet runs (default: tpe and rand, to tell TPE's cost from the store's)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.system()}", "latency": {}, "fleet": []}
    with tempfile.TemporaryDirectory() as directory:
        spool = f"{directory}/spool"
        for kind in args.stores:
            if kind == "sqlite":
                store = open_store(f"sqlite:///{directory}/latency.db")
            else:
                import mongomock

                from workers.store.mongo import MongoStore

                store = MongoStore("mongodb://mock", client=mongomock.MongoClient(), database="bench")
            exp, rng = experiment(max(args.sizes) * 2), np.random.default_rng(0)
            out["latency"][kind] = []
            for size in sorted(args.sizes):
                started = time.perf_counter()
                grow(store, exp, size, rng)
                print(f"{kind}: grew to {size} trials in {time.perf_counter() - started:.0f} s", file=sys.stderr)
                out["latency"][kind].append(latencies(store, exp, size, args.repeats, spool))
                print(json.dumps(out["latency"][kind][-1]), file=sys.stderr)
                for stray in [t for t in store.trial_summaries(NAME) if t.state != DONE]:  # running ones left
                    store.finish(NAME, stray.tid, stray.owner, ERROR, TrainResult(FAIL, error="not trained"))
            if kind == "sqlite":
                out["latency"][kind][-1]["store_MB"] = Path(f"{directory}/latency.db").stat().st_size / 1e6
            store.close()
        for algorithm in args.fleet_algorithms:
            for workers in args.fleet:
                url = f"sqlite:///{directory}/fleet-{algorithm}-{workers}.db"
                out["fleet"].append(fleet(url, workers, algorithm, args.fleet_base, args.fleet_seconds, spool))
                print(json.dumps(out["fleet"][-1]), file=sys.stderr)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
