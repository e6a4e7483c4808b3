"""Faults a shared store meets over days: a bad experiment, a store locked while a trial ends, a
worker killed with its result unsaved to the store, a spool that cannot be written. None of them
stops the other experiments' work or loses a result."""

import json
import signal
import subprocess
import sys

import pytest

from larnn_core import cli
from search_spaces import load_space
from tests.support.fake_workers import in_process_worker, logs_of, sleepy_objective, spawn, wait_for
from tests.support.results import result_with
from workers.experiment import make_experiment, submit
from workers.records import DONE, ERROR, RUNNING, Trial
from workers.store import open_store
from workers.worker import SpoolUnwritable


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


def poison(store, name: str) -> None:
    """An experiment whose space hyperopt refuses (uniform with low > high), as if an older
    validator had let it in."""
    experiment = make_experiment(name, load_space("smoke"), algorithm="rand", max_evals=3)
    experiment.space["document"]["space"]["dropout_drop_proba"] = {"uniform": [0.3, 0.1]}
    store.create_experiment(experiment)


def test_a_poisoned_experiment_fails_and_the_healthy_one_is_finished(tmp_path, url, capsys):
    store = open_store(url)
    poison(store, "poisoned")
    submit(store, "healthy", "smoke", max_evals=4, algorithm="rand")
    worker = spawn(url, tmp_path / "runs", 0.0, 1)
    assert worker.wait(timeout=120) == 0  # exited on --idle-exit, not on the bad experiment
    assert [t.state for t in store.trials("healthy")] == [DONE] * 4
    failure = store.get_experiment("poisoned").failure
    assert failure["reason"].startswith("suggesting trial 0 failed:")
    assert store.trials("poisoned") == []
    assert cli.main(["status", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "poisoned failed: suggesting trial 0 failed:" in out
    assert [line.split()[:2] for line in out.splitlines()[1:3]] == [["poisoned", "failed"], ["healthy", "done"]]


def test_a_worker_asked_for_a_failed_experiment_says_why_and_exits(tmp_path, url, capsys, monkeypatch):
    store = open_store(url)
    poison(store, "poisoned")
    store.fail_experiment("poisoned", "suggesting trial 0 failed: ValueError: low > high")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert (
        cli.main(["worker", "--store", url, "--experiment", "poisoned", "--device", "cpu"]) == 3
    )  # CANNOT_GO_ON: a supervisor does not restart it
    err = capsys.readouterr().err
    assert "experiment 'poisoned' has failed: suggesting trial 0 failed: ValueError: low > high" in err
    assert "Traceback" not in err


def test_a_trial_of_an_experiment_that_failed_meanwhile_is_failed_without_training(tmp_path, url):
    store = open_store(url)
    submit(store, "late", "smoke", max_evals=1, algorithm="rand")
    store.insert_trial(Trial.new("late", 0, {}, {}))
    store.fail_experiment("late", "building the hyperparameters of trial 0 failed")
    in_process_worker(store, lambda *a: pytest.fail("nothing should train"), tmp_path).run()
    (trial,) = store.trials("late")
    assert trial.state == ERROR and "experiment failed" in trial.result.error


LOCK_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.slow
def test_a_result_survives_an_outage_and_a_sigkill(tmp_path, url):
    """Another process holds SQLite's write lock while the trial ends; the worker spools the result,
    logs the outage and is killed with SIGKILL; the next worker on the machine delivers the
    spooled result, and the trial is not trained again."""
    store = open_store(url)
    submit(store, "outage", "smoke", max_evals=1, algorithm="rand")
    runs, spool = tmp_path / "runs", tmp_path / "spool"
    first = spawn(url, runs, 1.0, 2, 0.5, 120, spool)
    wait_for(lambda: runs.exists() and runs.read_text().count("\n") == 1)
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(tmp_path / "store.db"), "120"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    wait_for(
        lambda: "store unavailable" in logs_of(tmp_path) and "result of outage/0 kept in" in logs_of(tmp_path),
        timeout=90,
    )
    assert list(spool.glob("*/outage.0.*.json*")), "the result is on disk"
    first.send_signal(signal.SIGKILL)
    first.wait()
    holder.kill()
    holder.wait()
    (trial,) = store.trials("outage")
    assert trial.state == RUNNING  # the store never heard of the result
    second = spawn(url, runs, 1.0, 2, 0.5, 120, spool)
    assert second.wait(timeout=60) == 0
    (trial,) = store.trials("outage")
    assert trial.state == DONE and trial.result.status == "ok"
    assert runs.read_text().count("\n") == 1  # trained once
    assert not list(spool.rglob("outage.*")) and list(spool.iterdir())  # delivered from the store's folder


def test_workers_on_different_stores_sharing_a_spool_leave_each_other_s_results_alone(tmp_path):
    """Worker b's store has never heard of a's trial: delivered to it, a's result would be
    'dropped' and the trial trained again. Each store's results have a folder of their own."""
    a, b = (open_store(f"sqlite:///{tmp_path / name}") for name in ("a.db", "b.db"))
    submit(a, "x", "smoke", max_evals=1, algorithm="rand")
    submit(b, "x", "smoke", max_evals=1, algorithm="rand")
    worker_a, worker_b = (in_process_worker(store, None, tmp_path) for store in (a, b))
    a.insert_trial(Trial.new("x", 0, {}, {}))
    trial = a.reserve(worker_a.owner, "x")
    worker_a.spool.mkdir(parents=True)
    spooled = {
        "name": "x",
        "tid": 0,
        "owner": worker_a.owner,
        "state": DONE,
        "result": result_with([0.9]).to_document(),
    }
    (worker_a.spool / f"x.0.{trial.tid}.json").write_text(json.dumps(spooled))  # as a worker killed after spooling
    worker_b.flush_spool()
    assert worker_a.spool != worker_b.spool and list(worker_a.spool.glob("*.json"))
    worker_a.flush_spool()
    assert a.trials("x")[0].state == DONE and not list(worker_a.spool.glob("*.json"))


def test_results_spooled_before_spools_per_store_are_pointed_out(tmp_path, caplog):
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "x.0.old-worker.json").write_text("{}")
    worker = in_process_worker(open_store(f"sqlite:///{tmp_path / 'a.db'}"), None, tmp_path)
    assert f"1 result(s) spooled by an earlier release in {tmp_path / 'spool'}" in caplog.text
    assert f"this store's is {worker.spool}" in caplog.text


def test_an_unwritable_spool_stops_the_worker_before_it_takes_a_trial(tmp_path, url, monkeypatch, capsys):
    store = open_store(url)
    submit(store, "nospool", "smoke", max_evals=2, algorithm="rand")
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a spool below a file cannot be created, even by root
    worker = in_process_worker(store, lambda *a: pytest.fail("nothing should train"), tmp_path)
    worker.spool = blocker / "spool"
    with pytest.raises(SpoolUnwritable, match="cannot write to the result spool"):
        worker.run()
    assert store.trials("nospool") == []
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert cli.main(["worker", "--store", url, "--device", "cpu", "--idle-exit", "1"]) == 3
    err = capsys.readouterr().err
    assert "cannot write to the result spool" in err and "Traceback" not in err
    assert store.trials("nospool") == []


def test_a_result_that_cannot_be_spooled_is_delivered_directly(tmp_path, url):
    store = open_store(url)
    submit(store, "direct", "smoke", max_evals=2, algorithm="rand")
    worker = in_process_worker(store, sleepy_objective(str(tmp_path / "runs"), 0.0, 1), tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    def spool_goes_away(*args):
        worker.spool = blocker / "spool"  # the disk filled up while the trial trained
        return sleepy_objective(str(tmp_path / "runs"), 0.0, 1)(*args)

    worker.objective = spool_goes_away
    with pytest.raises(SpoolUnwritable):
        worker.run()
    (trial,) = store.trials("direct")
    assert trial.state == DONE
