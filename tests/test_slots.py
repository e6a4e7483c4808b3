"""`larnn worker --slots N`: several trials at once in one worker process."""

import dataclasses
import math
import signal
import threading
import time

import pytest

from larnn_core import cli
from larnn_core.hparams import HParams
from larnn_core.train import train
from tests.support import data
from tests.support.fake_workers import spawn, wait_for
from tests.support.marks import cuda
from workers import report
from workers.experiment import submit
from workers.records import DONE, ERROR, FINAL, NEW, RUNNING, Trial
from workers.slots import SLOT, run_slots, slot_owner
from workers.store import open_store
from workers.suggest import trial_seed
from workers.worker import Worker

TINY = {**data.TINY, "num_layers": 2, "dropout_drop_proba": 0.3}  # dropout: random draws every step


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


def training_objective(data, spans: list, execution: dict, fail_below: float | None = None):
    """Trains on the small synthetic data on the worker's device, as `execution` says (cpu_loops,
    torch_compile); records when and in which thread each trial ran; raises for learning rates
    below fail_below."""

    def objective(hyperparameters, settings, seed, device, on_epoch):
        started = time.monotonic()
        if fail_below is not None and hyperparameters["learning_rate"] < fail_below:
            raise RuntimeError("this slot's trial breaks")
        hp = HParams.from_dict(
            {**TINY, "model": hyperparameters.get("model", "larnn"), "learning_rate": hyperparameters["learning_rate"]}
        )
        result = train(hp, data, device=device, seed=seed, progress=False, on_epoch=on_epoch, **execution)
        spans.append((started, time.monotonic(), threading.current_thread().name))
        return result

    return objective


def slot_workers(store, objective, tmp_path, device="cpu", **options):
    return lambda owner: Worker(
        store, objective, owner=owner, device=device, poll_s=0.05, idle_exit_s=0.5, spool=tmp_path / "spool", **options
    )


def run_two_slots(store, data, tmp_path, device: str, execution: dict) -> None:
    """Two slots train the two trials of experiment `pair`, at once (their spans overlap, in two threads)."""
    submit(store, "pair", "smoke", max_evals=2, algorithm="rand", seed=3)
    spans = []
    objective = training_objective(data, spans, execution)
    assert run_slots(slot_workers(store, objective, tmp_path, device), 2, device) == 2
    (a_start, a_end, a_slot), (b_start, b_end, b_slot) = sorted(spans)
    assert a_slot != b_slot and b_start < a_end  # two threads, overlapping in time


def timeless_values(report) -> dict:
    """An epoch report's numbers but its duration."""
    return {name: value for name, value in dataclasses.asdict(report).items() if name != "seconds"}


@pytest.mark.parametrize(
    "execution",
    [
        pytest.param({"cpu_loops": True}, id="cpu-loops"),
        pytest.param({"cpu_loops": False}, id="torch-ops"),
        # torch.compile called from two threads at once (as slots on a GPU do): dynamo compiles
        # under a process-wide lock of its own (torch._dynamo.convert_frame.compile_lock)
        pytest.param({"cpu_loops": False, "torch_compile": True}, id="compiled", marks=pytest.mark.slow),
    ],
)
def test_two_slots_train_two_trials_at_once_each_as_it_would_alone(small_har, url, tmp_path, execution):
    store = open_store(url)
    run_two_slots(store, small_har, tmp_path, "cpu", execution)
    experiment = store.get_experiment("pair")
    for trial in store.trials("pair"):
        assert trial.state == DONE and SLOT.match(trial.owner)
        point = trial.point
        alone = train(
            HParams.from_dict({**TINY, "model": point["model"], "learning_rate": point["learning_rate"]}),
            small_har,
            device="cpu",
            seed=trial_seed(experiment, trial.tid),
            progress=False,
            **execution,
        )
        timeless = [timeless_values(e) for e in trial.result.epochs]
        expected = [timeless_values(e) for e in alone.epochs]
        if execution.get("torch_compile"):
            # the slots share one process's compiled graphs: the second trial runs the graphs dynamo
            # compiled for both (dynamic shapes after a recompile), alone it runs its own, so their
            # float sums round differently (about 1e-6 apart in the losses)
            expected = [
                {name: None if value is None else pytest.approx(value, rel=1e-5) for name, value in values.items()}
                for values in expected
            ]  # (the metrics not measured at an epoch, its test numbers but at the selected one, are None)
        assert timeless == expected, trial.tid
        assert trial.result.execution == alone.execution


@cuda
def test_two_slots_on_one_gpu_train_two_trials_at_once(small_har, url, tmp_path):
    """Slots on a GPU as workers run them: a CUDA stream each, each training's CUDA graphs captured
    while the other slot launches (thread_local capture), torch.compile from both threads. Dropout
    draws from the device's default generator under graphs, so each trial is reproducible in
    distribution only: both must finish, with finite numbers, graphed and compiled."""
    store = open_store(url)
    run_two_slots(store, small_har, tmp_path, "cuda", {})
    for trial in store.trials("pair"):
        assert trial.state == DONE, trial.result.error
        assert trial.result.execution == {
            "cpu_loops": False,
            "torch_compile": True,
            "cuda_graphs": True,
            "fused_kernel": False,
        }
        assert all(math.isfinite(e.validation_loss) and math.isfinite(e.train_loss) for e in trial.result.epochs)


def test_an_exception_in_one_slot_fails_that_trial_only(small_har, url, tmp_path):
    store = open_store(url)
    submit(store, "faulty", "smoke", max_evals=4, algorithm="rand", seed=1)
    objective = training_objective(small_har, [], {"cpu_loops": True}, fail_below=0.01)  # smoke's rates: 0.003-0.03
    run_slots(slot_workers(store, objective, tmp_path), 2, "cpu")
    trials = store.trials("faulty")
    assert len(trials) == 4 and all(t.state in FINAL for t in trials)
    for trial in trials:
        broken = trial.point["learning_rate"] < 0.01
        assert trial.state == (ERROR if broken else DONE), trial.result
        if broken:
            assert "this slot's trial breaks" in trial.result.error
    assert {t.state for t in trials} == {DONE, ERROR}  # both kinds happened, side by side


def test_sigterm_gives_every_slots_trial_back(url, tmp_path):
    store = open_store(url)
    submit(store, "long", "smoke", max_evals=2, algorithm="rand")
    runs = tmp_path / "runs"
    worker = spawn(url, runs, 0.2, 200, 10.0, 120.0, tmp_path / "spool", 2)  # 40 s trials, two slots
    wait_for(lambda: sum(t.state == RUNNING and len(t.curve) >= 1 for t in store.trials("long")) == 2)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    trials = store.trials("long")
    assert [t.state for t in trials] == [NEW, NEW] and all(t.owner is None for t in trials)


def test_slots_on_two_worker_processes_finish_exactly_max_evals(url, tmp_path):
    store = open_store(url)
    submit(store, "many", "smoke", max_evals=16, algorithm="rand")
    runs = tmp_path / "runs"
    workers = [spawn(url, runs, 0.1, 2, 10.0, 120.0, tmp_path / f"spool{i}", 3) for i in range(2)]
    for w in workers:
        assert w.wait(timeout=120) == 0
    trials = store.trials("many")
    assert len(trials) == 16 and all(t.state == DONE for t in trials)
    assert len(runs.read_text().splitlines()) == 16  # each trial ran once
    owners = {t.owner for t in trials}
    assert len({SLOT.match(o)["worker"] for o in owners}) == 2 and len(owners) > 2


def test_status_shows_each_live_workers_busy_slots(url):
    store = open_store(url)
    submit(store, "busy", "smoke", max_evals=4, algorithm="rand")
    for tid, slot in ((0, 3), (1, 1)):
        store.insert_trial(Trial.new("busy", tid, {}, {}, owner=slot_owner("gpu-host:42:abc123", slot, 4)))
    store.insert_trial(Trial.new("busy", 2, {}, {}, owner="cpu-host:7:def456"))
    assert report.worker_lines(report.read(store)) == [
        "worker cpu-host:7:def456: 1 of 1 slot(s) busy: slot 1 busy/2",
        "worker gpu-host:42:abc123: 2 of 4 slot(s) busy: slot 1 busy/1, slot 3 busy/0",
    ]
    assert report.status_rows(report.read(store))[0]["workers"] == 2  # processes, not slots


def test_status_reads_each_experiments_trials_once_for_all_it_prints(url, monkeypatch, capsys):
    store = open_store(url)
    submit(store, "busy", "smoke", max_evals=4, algorithm="rand")
    store.insert_trial(Trial.new("busy", 0, {}, {}, owner=slot_owner("gpu-host:42:abc123", 2, 4)))
    reads = []
    trials, summaries = type(store).trials, type(store).trial_summaries
    monkeypatch.setattr(
        type(store), "trials", lambda self, name, tids=None: reads.append(("whole", tids)) or trials(self, name, tids)
    )
    monkeypatch.setattr(
        type(store), "trial_summaries", lambda self, name: reads.append(("summaries", None)) or summaries(self, name)
    )
    assert cli.main(["status", "busy", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "busy trial 0 running on gpu-host:42:abc123/slot2-of-4" in out  # the running trial's line
    assert "worker gpu-host:42:abc123: 1 of 4 slot(s) busy: slot 2 busy/0" in out  # the worker's line
    assert reads == [("summaries", None), ("whole", [0])]  # every trial's summary, the running one whole
