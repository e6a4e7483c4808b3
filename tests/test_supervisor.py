"""`larnn worker --devices`: one real worker process per device, restarted when it dies, all stopped
by one SIGTERM (workers/supervisor.py). Real trainings of a tiny LARNN on small synthetic data."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from larnn_core import cli
from larnn_core.data import dataset
from tests.support.data import synthetic_har
from tests.support.fake_workers import wait_for
from workers.records import DONE, NEW, RUNNING
from workers.store import open_store
from workers.supervisor import parse_devices

ROOT = Path(__file__).resolve().parent.parent
SPACE = """description: a tiny LARNN, a few seconds a trial
space:
  model: larnn
  hidden_size: 4
  attention_heads: 2
  larnn_window_size: 2
  num_layers: 1
  batch_size: 512
  learning_rate: {loguniform: [1.0e-3, 1.0e-2]}
"""


@pytest.fixture
def search(tmp_path, isolated_data_dir):
    """A store with a 4-trial experiment of 150-epoch trials, and the environment workers need."""
    dataset.save(synthetic_har(), dataset.cache_path("hapt"))
    (tmp_path / "tiny.yaml").write_text(SPACE)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert (
        cli.main(
            [
                "submit",
                str(tmp_path / "tiny.yaml"),
                "--name",
                "sup",
                "--max-evals",
                "4",
                "--epochs",
                "150",
                "--pruner",
                "none",
                "--store",
                url,
            ]
        )
        == 0
    )  # trials that run long: no ASHA rung at epoch 5
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LARNN_STORE": url,
        "LARNN_DATA": str(isolated_data_dir),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    return open_store(url), env


def supervise(tmp_path, env, *options) -> subprocess.Popen:
    log = open(tmp_path / "supervisor.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "larnn_core.cli", "worker", "--devices", "cpu,cpu", "--heartbeat", "0.5", *options],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_long(condition) -> None:
    """Supervised workers import torch before anything else: give them two minutes."""
    wait_for(condition, timeout=120.0)


def running(store) -> list[dict]:
    return [t for t in store.trials("sup") if t.state == RUNNING]


def owner_pid(trial: dict) -> int:
    return int(trial.owner.split(":")[1])  # owners are host:pid:nonce


@pytest.mark.slow
def test_two_children_a_killed_one_restarted_and_its_trial_rerun_exactly_max_evals(tmp_path, search):
    store, env = search
    supervisor = supervise(tmp_path, env, "--stale-after", "3", "--idle-exit", "4")
    try:
        wait_long(lambda: len({owner_pid(t) for t in running(store)}) == 2)  # one trial per child
        victim = running(store)[0]
        os.kill(owner_pid(victim), signal.SIGKILL)
        wait_long(lambda: "died (signal 9); restarting" in (tmp_path / "supervisor.log").read_text())
        assert supervisor.wait(timeout=300) == 0  # the children reach --idle-exit once the budget is spent
    finally:
        supervisor.kill()
    trials = store.trials("sup")
    assert len(trials) == 4 and all(t.state == DONE for t in trials), [t.result.error for t in trials]
    rerun = next(t for t in trials if t.tid == victim.tid)
    assert rerun.attempts == 2 and owner_pid(victim) not in {owner_pid(t) for t in trials}
    assert len({owner_pid(t) for t in trials}) >= 2  # both children (or the restarted one) delivered


def test_sigterm_reaches_every_child_and_each_gives_its_trial_back(tmp_path, search):
    store, env = search
    supervisor = supervise(tmp_path, env)
    try:
        wait_long(lambda: len(running(store)) == 2)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=120) == 0
    finally:
        supervisor.kill()
    trials = store.trials("sup")
    given_back = [t for t in trials if any(a.outcome == "given back" for a in t.attempt_log)]
    assert len(given_back) == 2 and all(t.state == NEW for t in given_back)  # back in the queue
    assert RUNNING not in [t.state for t in trials]
    assert "restarting" not in (tmp_path / "supervisor.log").read_text()


def test_devices_are_parsed_and_refused_by_name():
    assert parse_devices("cpu,cpu", lambda: 0) == ["cpu", "cpu"]
    assert parse_devices("all", lambda: 3) == ["cuda:0", "cuda:1", "cuda:2"]
    assert parse_devices("cuda:0, cuda:2", lambda: 4) == ["cuda:0", "cuda:2"]
    with pytest.raises(ValueError, match="no CUDA device is visible; use --devices cpu"):
        parse_devices("all", lambda: 0)
    with pytest.raises(ValueError, match="cuda:2 is not visible \\(2 CUDA device"):
        parse_devices("cuda:2", lambda: 2)
    with pytest.raises(ValueError, match="'gpu0' is not cpu or cuda:N"):
        parse_devices("cpu,gpu0", lambda: 1)


def test_the_store_reaches_children_through_the_environment_only(monkeypatch):
    """A MongoDB URL carries its password: it must not appear on any child's command line."""
    from workers import supervisor

    started, real_popen = [], subprocess.Popen

    def popen(command, env, **options):
        started.append((command, env))
        return real_popen(["true"])

    monkeypatch.setattr(supervisor.subprocess, "Popen", popen)
    secret = "mongodb://larnn:s3cret@db:27017/larnn"
    boss = supervisor.Supervisor(["cpu", "cpu"], ["--max-trials", "1"], secret)
    boss._start("cpu")
    ((command, env),) = started
    assert env["LARNN_STORE"] == secret and not any("s3cret" in part for part in command)
    assert command[-4:] == ["--device", "cpu", "--max-trials", "1"]


@pytest.mark.parametrize(
    "exits, started, status, logged",
    [
        ([3], 1, 3, "worker on cpu cannot go on (exit 3): not restarted"),  # spool unwritable, experiment failed
        ([2], 1, 2, "worker on cpu refused its input (exit 2): not restarted"),
        ([1, 0], 2, 0, "worker on cpu died (exit 1); restarting"),  # a crash is restarted, then finishes
    ],
)
def test_a_child_is_restarted_unless_it_stopped_for_a_reason_a_restart_would_meet(
    exits, started, status, logged, monkeypatch, caplog
):
    """A worker whose spool cannot be written exited 1 and was restarted forever."""
    from workers import supervisor

    codes, real_popen = list(exits), subprocess.Popen

    def popen(command, env, **options):
        return real_popen([sys.executable, "-c", f"raise SystemExit({codes.pop(0)})"])

    monkeypatch.setattr(supervisor.subprocess, "Popen", popen)
    boss = supervisor.Supervisor(["cpu"], [], "sqlite:///unused.db", restart_delay_s=0.01, poll_s=0.01)
    with caplog.at_level("INFO", logger="larnn.supervisor"):
        assert boss.run() == status
    assert len(exits) - len(codes) == started and logged in caplog.text


def test_a_worker_waits_for_a_store_that_is_down_when_it_starts(caplog):
    """It exited after 15 s (and under a supervisor, as if its input were bad: never restarted)."""
    from workers.store import StoreUnavailable
    from workers.worker import wait_for_store

    tries = []

    def open_store():
        tries.append(1)
        if len(tries) < 3:
            raise StoreUnavailable("database is locked")
        return "the store"

    with caplog.at_level("WARNING", logger="larnn.worker"):
        assert wait_for_store(open_store, retry_s=0.01) == "the store"
    assert caplog.text.count("waiting for the trial store (database is locked)") == 2


def test_sigterm_to_larnn_search_stops_its_workers_and_they_give_their_trials_back(tmp_path, search):
    """`larnn search` ran its workers in sessions of their own, and a SIGTERM (not Ctrl-C) ended
    the search alone: its workers kept training with no one watching."""
    store, env = search
    env = {**env, "LARNN_STORE": f"sqlite:///{tmp_path / 'search.db'}"}
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "larnn_core.cli",
            "search",
            str(tmp_path / "tiny.yaml"),
            "--name",
            "s",
            "--workers",
            "2",
            "--max-evals",
            "4",
            "--epochs",
            "150",
            "--logs",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    searched = open_store(env["LARNN_STORE"])
    try:
        wait_long(
            lambda: (
                "s" in {e.name for e in searched.experiments()}
                and sum(t.state == RUNNING for t in searched.trials("s")) == 2
            )
        )
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=120) == 130, run.stderr.read()[-2000:]
    finally:
        run.kill()
    wait_for(lambda: RUNNING not in [t.state for t in searched.trials("s")], timeout=60)  # the workers stopped
    given_back = [t for t in searched.trials("s") if any(a.outcome == "given back" for a in t.attempt_log)]
    assert len(given_back) == 2
