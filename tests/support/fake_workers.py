"""Workers for the tests: a fast fake objective, worker processes (worker_process.py), waits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from larnn_core.records import EpochReport
from tests.support.results import result_with
from workers.worker import Worker

ROOT = Path(__file__).resolve().parents[2]


def sleepy_objective(log_path: str, epoch_s: float, epochs: int):
    def objective(hyperparameters, settings, seed, device, on_epoch):
        with open(log_path, "a") as f:
            f.write(f"{os.getpid()} {hyperparameters['learning_rate']!r}\n")
        for epoch in range(1, epochs + 1):
            time.sleep(epoch_s)
            on_epoch(EpochReport(epoch))
        return result_with([1 - abs(hyperparameters["learning_rate"] - 0.01)])

    return objective


def spawn(url, runs, epoch_s, epochs, *timing):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    log = open(f"{runs}.{time.monotonic_ns()}.log", "w")
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("worker_process.py")),
            url,
            str(runs),
            str(epoch_s),
            str(epochs),
            *map(str, timing),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_for(condition, timeout=60.0, poll_s=0.05):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll_s)


def logs_of(tmp_path) -> str:
    return "".join(p.read_text() for p in tmp_path.glob("*.log"))


def in_process_worker(store, objective, tmp_path, **options):
    return Worker(store, objective, poll_s=0.01, idle_exit_s=0.0, spool=tmp_path / "spool", retry_s=0.01, **options)
