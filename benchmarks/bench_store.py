"""Trial store overhead and worker scaling. Prints numbers; asserts nothing.

    python benchmarks/bench_store.py [--cycles 200] [--mongo mongodb://...] [--out bench.json]

- ms per reserve + heartbeat + finish cycle, for SQLite (a file), MongoDB in-process
  (mongomock) and a real MongoDB server when --mongo or $LARNN_TEST_MONGO_URI is given;
- ms for one TPE suggestion on paper-round2 with 200 finished trials;
- trials per minute with 1, 2 and 4 worker processes on a sleep objective (SQLite store), and
  the speed-up over one worker measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time

import numpy as np

from larnn_core.records import OK, EpochReport, TrainResult
from search_spaces import load_space
from workers.experiment import make_experiment, submit
from workers.history import History
from workers.records import DONE, Trial
from workers.store import open_store
from workers.suggest import suggest
from workers.worker import Worker


def store_cycle_ms(store, cycles: int) -> float:
    store.create_experiment(make_experiment("bench", load_space("smoke"), max_evals=cycles))
    for tid in range(cycles):
        store.insert_trial(Trial.new("bench", tid, {"x": [tid]}, {"x": [0.1]}))
    result = TrainResult(OK, tuple(EpochReport(e, validation_accuracy=0.5) for e in range(1, 101)), best_epoch=1)
    started = time.perf_counter()
    for _ in range(cycles):
        trial = store.reserve("bench-worker")
        store.heartbeat("bench", trial.tid, "bench-worker")
        store.finish("bench", trial.tid, "bench-worker", DONE, result)
    return (time.perf_counter() - started) / cycles * 1000


def tpe_suggest_ms(n_trials: int = 200, repeats: int = 5) -> float:
    experiment = make_experiment("tpe", load_space("paper-round2"), max_evals=n_trials + repeats)
    rng = np.random.default_rng(0)
    trials = []
    for tid in range(n_trials):
        chosen = dataclasses.replace(experiment, algorithm="rand")
        idxs, vals = suggest(chosen, History.of(chosen, trials), tid)
        accuracy = float(rng.uniform(0.8, 0.95))
        trials.append(
            Trial(
                "tpe",
                tid,
                idxs,
                vals,
                DONE,
                result=TrainResult(OK, (EpochReport(1, validation_accuracy=accuracy),), best_epoch=1),
            )
        )
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        suggest(experiment, History.of(experiment, trials), n_trials + i)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _sleep_objective(seconds: float):
    def objective(hyperparameters, settings, seed, device, on_epoch):
        time.sleep(seconds)
        report = EpochReport(1, validation_accuracy=0.5)
        on_epoch(report)
        return TrainResult(OK, (report,), best_epoch=1)

    return objective


def _run_worker(url: str, seconds: float, spool: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    Worker(open_store(url), _sleep_objective(seconds), poll_s=0.02, idle_exit_s=1.0, spool=spool).run()


def trials_per_minute(workers: int, trials: int, seconds: float, directory: str) -> float:
    url = f"sqlite:///{directory}/scale-{workers}.db"
    submit(open_store(url), "scale", "smoke", max_evals=trials, algorithm="rand")
    started = time.perf_counter()
    processes = [
        multiprocessing.Process(target=_run_worker, args=(url, seconds, f"{directory}/spool")) for _ in range(workers)
    ]
    for p in processes:
        p.start()
    store = open_store(url)
    while sum(store.counts("scale")[s] for s in ("done", "failed")) < trials:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    for p in processes:
        p.join()
    return trials / elapsed * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--mongo", default=os.environ.get("LARNN_TEST_MONGO_URI"))
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds per fake trial in the scaling run")
    parser.add_argument("--trials", type=int, default=24, help="trials per scaling run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.system()}", "cycle_ms": {}}
    with tempfile.TemporaryDirectory() as directory:
        out["cycle_ms"]["sqlite"] = store_cycle_ms(open_store(f"sqlite:///{directory}/cycle.db"), args.cycles)
        import mongomock

        from workers.store.mongo import MongoStore

        out["cycle_ms"]["mongomock"] = store_cycle_ms(
            MongoStore("mongodb://mock", client=mongomock.MongoClient(), database="bench"), args.cycles
        )
        if args.mongo:
            store = MongoStore(args.mongo, database=f"larnn_bench_{os.getpid()}")
            out["cycle_ms"]["mongodb"] = store_cycle_ms(store, args.cycles)
            store.client.drop_database(f"larnn_bench_{os.getpid()}")
        out["tpe_suggest_ms_200_trials"] = tpe_suggest_ms()
        rates = {n: trials_per_minute(n, args.trials, args.sleep, directory) for n in (1, 2, 4)}
    out["trials_per_minute"] = {str(n): r for n, r in rates.items()}
    out["speedup_vs_1_worker"] = {str(n): r / rates[1] for n, r in rates.items()}
    out["scaling_run"] = {"trials": args.trials, "sleep_s_per_trial": args.sleep, "store": "sqlite"}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
