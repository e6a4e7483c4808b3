import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from larnn_core import cli
from larnn_core.records import EpochReport, TrainResult
from search_spaces import SpaceError
from tests.support.fake_workers import in_process_worker, logs_of, sleepy_objective, spawn, wait_for
from tests.support.results import result_with
from tests.support.stores import AtomicClient
from workers import report
from workers.experiment import submit
from workers.pruners import PrunerSettings
from workers.records import DONE, ERROR, FINAL, NEW, PRUNED, RUNNING, Trial
from workers.store import ExperimentExists, StoreUnavailable, open_store
from workers.store.mongo import MongoStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.mark.slow
def test_four_processes_run_forty_trials_exactly_once(tmp_path, url):
    store = open_store(url)
    submit(store, "race", "smoke", max_evals=40, algorithm="rand")
    runs = tmp_path / "runs"
    # 0.2 s a trial: eight seconds of work for one worker, so the others, which take seconds to
    # import torch on a busy machine, get a share before it is done
    workers = [spawn(url, runs, 0.2, 1) for _ in range(4)]
    for w in workers:
        assert w.wait(timeout=120) == 0
    trials = store.trials("race")
    assert len(trials) == 40 and all(t.state == DONE for t in trials)
    assert [t.tid for t in trials] == list(range(40))
    started = runs.read_text().splitlines()
    assert len(started) == 40  # every trial ran exactly once
    assert len({t.result.extra["worker"] for t in trials}) > 1, "the work should be shared"
    assert "locked" not in logs_of(tmp_path) and "Traceback" not in logs_of(tmp_path)


def test_sigkilled_workers_trial_is_rerun_and_the_budget_is_exact(tmp_path, url):
    store = open_store(url)
    submit(store, "kill", "smoke", max_evals=5, algorithm="rand")
    runs = tmp_path / "runs"
    victim = spawn(url, runs, 0.1, 20, 0.2, 1.0)  # 2 s trials, heartbeat 0.2 s, stale after 1 s
    wait_for(lambda: any(t.state == RUNNING for t in store.trials("kill")))
    time.sleep(0.5)
    (running,) = [t for t in store.trials("kill") if t.state == RUNNING]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = spawn(url, runs, 0.02, 5, 0.2, 1.0)
    assert survivor.wait(timeout=120) == 0
    trials = store.trials("kill")
    assert len(trials) == 5 and all(t.state == DONE for t in trials)
    rerun = trials[running.tid]
    assert rerun.attempts == 2 and rerun.result.extra["worker"] != running.owner


def test_sigterm_gives_the_trial_back_and_exits_cleanly(tmp_path, url):
    store = open_store(url)
    submit(store, "term", "smoke", max_evals=3)
    worker = spawn(url, tmp_path / "runs", 0.1, 100)
    wait_for(lambda: any(t.state == RUNNING for t in store.trials("term")))
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    (trial,) = store.trials("term")
    assert trial.state == NEW and trial.attempts == 0 and trial.owner is None
    assert "given back to the queue" in logs_of(tmp_path)


def stopped_at(epoch_to_stop: int, worker_box: list, epochs: int = 3):
    """An objective of `epochs` epochs whose worker is told to stop during epoch epoch_to_stop."""

    def objective(hyperparameters, settings, seed, device, on_epoch):
        for epoch in range(1, epochs + 1):
            if epoch == epoch_to_stop:
                worker_box[0].stop()  # SIGTERM arrives while this epoch trains
            on_epoch(EpochReport(epoch, validation_accuracy=0.5))
        return result_with([0.5] * epochs)

    return objective


@pytest.mark.parametrize("stop_in, state", [(2, NEW), (3, DONE)])
def test_a_stop_gives_the_trial_back_unless_its_last_epoch_is_trained(stop_in, state, tmp_path, url):
    """SIGTERM during the last epoch threw the finished training away (given back, trained again)."""
    store = open_store(url)
    submit(store, "term", "smoke", max_evals=1, epochs=3, pruner=PrunerSettings.of("none"))
    box = []
    box.append(in_process_worker(store, stopped_at(stop_in, box), tmp_path))
    box[0].run()
    (trial,) = store.trials("term")
    assert trial.state == state and (trial.result.status == "ok") == (state == DONE)
    assert [a.outcome for a in trial.attempt_log] == ["given back" if state == NEW else "finished"]


def test_a_trial_whose_last_epoch_is_trained_is_done_not_pruned(tmp_path, url, monkeypatch):
    from workers.pruners import MedianPruner

    store = open_store(url)
    submit(store, "full", "smoke", max_evals=1, epochs=3, pruner=PrunerSettings.of("median"))
    monkeypatch.setattr(MedianPruner, "prune", lambda self, store, name, tid, curve: len(curve) == 3)
    in_process_worker(store, stopped_at(0, [], epochs=3), tmp_path).run()
    (trial,) = store.trials("full")
    assert trial.state == DONE and "pruned_at_epoch" not in trial.result.extra


def test_a_raising_objective_fails_its_trial_and_the_worker_goes_on(tmp_path, url):
    store = open_store(url)
    submit(store, "raise", "smoke", max_evals=3)
    calls = []

    def objective(hp, settings, seed, device, on_epoch):
        calls.append(seed)
        if len(calls) == 2:
            raise RuntimeError("CUDA error: device-side assert triggered")
        return result_with([0.5])

    assert in_process_worker(store, objective, tmp_path).run() == 3
    states = [t.state for t in store.trials("raise")]
    assert states == [DONE, ERROR, DONE]
    failed = store.trials("raise")[1].result
    assert failed.status == "fail" and "device-side assert" in failed.error
    assert "Traceback" in failed.extra["traceback"] and "RuntimeError" in failed.extra["traceback"]


@pytest.mark.parametrize(
    "result, reason",
    [
        (result_with([math.nan]), "loss nan"),
        (TrainResult("fail", error="CUDA out of memory"), "CUDA out of memory"),
    ],
)
def test_nan_or_failed_results_are_marked_failed(tmp_path, url, result, reason):
    store = open_store(url)
    submit(store, "nan", "smoke", max_evals=1)
    in_process_worker(store, lambda *a: result, tmp_path).run()
    (trial,) = store.trials("nan")
    assert trial.state == ERROR and reason in trial.result.error


class Flaky:
    """A store whose named methods raise StoreUnavailable for their first `failures` calls;
    before(name) runs ahead of every call."""

    def __init__(self, store, failures, methods, before=lambda name: None):
        self.store, self.failures, self.before = store, dict.fromkeys(methods, failures), before

    def __getattr__(self, name):
        method = getattr(self.store, name)
        if not callable(method):  # a property: the store's identity
            return method

        def call(*args, **kwargs):
            self.before(name)
            if self.failures.get(name, 0) > 0:
                self.failures[name] -= 1
                raise StoreUnavailable(f"store unreachable ({name})")
            return method(*args, **kwargs)

        return call


def test_unreachable_store_at_start_is_waited_for(tmp_path, url, caplog):
    store = open_store(url)
    submit(store, "flaky", "smoke", max_evals=2)
    flaky = Flaky(store, 3, ["requeue_stale"])
    objective = sleepy_objective(str(tmp_path / "runs"), 0.0, 1)
    assert in_process_worker(flaky, objective, tmp_path).run() == 2
    assert caplog.text.count("waiting for the trial store") == 3


def test_an_epoch_report_lost_to_an_outage_is_sent_with_the_next(tmp_path, url):
    """The live curve that pruners and status read had a hole where the store was away."""
    store = open_store(url)
    submit(store, "gap", "smoke", max_evals=1, epochs=3, pruner=PrunerSettings.of("none"))
    seen = []

    def watch(name):
        if name == "finish":
            seen.extend(e.epoch for e in store.trials("gap")[0].curve)

    flaky = Flaky(store, 1, ["report_epoch"], before=watch)  # the first report meets an outage
    in_process_worker(flaky, stopped_at(0, [], epochs=3), tmp_path).run()
    assert seen == [1, 2, 3]


def test_a_finished_result_survives_an_unreachable_store(tmp_path, url, caplog):
    store = open_store(url)
    submit(store, "spool", "smoke", max_evals=1)
    spooled = []

    def look_at_the_spool(name):
        if name == "finish":
            spooled.extend(p.read_text() for p in (tmp_path / "spool").glob("*/*.json*"))

    flaky = Flaky(store, 2, ["finish"], before=look_at_the_spool)
    in_process_worker(flaky, sleepy_objective(str(tmp_path / "runs"), 0.0, 1), tmp_path).run()
    assert len(spooled) == 3 and json.loads(spooled[0])["state"] == DONE  # on disk while the store was away
    assert store.trials("spool")[0].state == DONE
    assert not list((tmp_path / "spool").rglob("*.json*"))
    assert caplog.text.count("store unavailable (store unreachable (finish)); result of spool/0 kept in") == 2


def test_a_killed_workers_spooled_result_is_delivered_by_the_next(tmp_path, url):
    store = open_store(url)
    submit(store, "respool", "smoke", max_evals=1)
    store.insert_trial(Trial.new("respool", 0, {}, {}, owner="dead-worker"))  # suggested and reserved, then killed
    worker = in_process_worker(store, lambda *a: pytest.fail("nothing should run"), tmp_path)
    spool = worker.spool  # this store's folder of the machine's spool
    spool.mkdir(parents=True)
    (spool / "respool.0.dead-worker.json").write_text(
        json.dumps(
            {
                "name": "respool",
                "tid": 0,
                "owner": "dead-worker",
                "state": DONE,
                "result": {"status": "ok", "loss": -0.7, "best_validation_accuracy": 0.7},
            }
        )
    )
    worker.run()
    (trial,) = store.trials("respool")
    assert trial.state == DONE and trial.result.loss == -0.7
    assert not list(spool.iterdir())


def test_a_result_claimed_by_a_worker_killed_mid_delivery_is_delivered(tmp_path, url):
    store = open_store(url)
    submit(store, "claimed", "smoke", max_evals=1)
    store.insert_trial(Trial.new("claimed", 0, {}, {}, owner="dead-worker"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    worker = in_process_worker(store, lambda *a: pytest.fail("nothing should run"), tmp_path)
    spool = worker.spool
    spool.mkdir(parents=True)
    (spool / f"claimed.0.dead-worker.json.claimed-{dead.pid}").write_text(
        json.dumps(
            {
                "name": "claimed",
                "tid": 0,
                "owner": "dead-worker",
                "state": DONE,
                "result": {"status": "ok", "loss": -0.6, "best_validation_accuracy": 0.6},
            }
        )
    )
    (spool / f"other.0.live.json.claimed-{os.getpid()}").write_text("{}")  # a live worker's claim: left alone
    worker.run()
    assert store.trials("claimed")[0].state == DONE
    assert [p.name for p in spool.iterdir()] == [f"other.0.live.json.claimed-{os.getpid()}"]


def test_threads_on_mongodb_run_each_trial_once(tmp_path):
    store = MongoStore("mongodb://mock", client=AtomicClient(), database="larnn")
    submit(store, "mongo", "smoke", max_evals=12, algorithm="rand")
    runs = tmp_path / "runs"
    workers = [in_process_worker(store, sleepy_objective(str(runs), 0.0, 1), tmp_path, owner=f"t{i}") for i in range(3)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trials = store.trials("mongo")
    assert len(trials) == 12 and all(t.state == DONE for t in trials)
    assert len(runs.read_text().splitlines()) == 12


def test_submit_validates_first_and_writes_nothing_on_error(tmp_path, url, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("space:\n  hiden_size: 8\n")
    assert cli.main(["submit", str(bad), "--name", "x", "--store", url]) == 2
    assert "space.hiden_size: unknown hyperparameter" in capsys.readouterr().err
    assert open_store(url).experiments() == []
    with pytest.raises(SystemExit) as refused:  # argparse refuses it, exit status 2
        cli.main(["submit", "smoke", "--name", "x", "--max-evals", "0", "--store", url])
    assert refused.value.code == 2 and "--max-evals: must be at least 1, got 0" in capsys.readouterr().err
    assert open_store(url).experiments() == []


def test_the_selection_rule_is_stored_with_the_experiment_and_reaches_each_training(url, capsys, monkeypatch):
    from larnn_core.selection import DEFAULT_RULE, LEGACY_RULE
    from workers import objective as objectives
    from workers.records import Objective

    assert cli.main(["submit", "smoke", "--name", "mean", "--selection", "last-mean", "--store", url]) == 0
    assert cli.main(["submit", "smoke", "--name", "plain", "--store", url]) == 0
    store = open_store(url)
    assert store.get_experiment("mean").objective.selection == "last-mean"
    assert store.get_experiment("plain").objective.selection == DEFAULT_RULE
    # an experiment of an earlier release names no rule: it keeps the one its trials were selected by
    assert Objective.from_document({"source": "hapt", "validation_subjects": 5}).selection == LEGACY_RULE
    with pytest.raises(SystemExit):
        cli.main(["submit", "smoke", "--name", "x", "--selection", "best", "--store", url])
    assert "invalid choice: 'best'" in capsys.readouterr().err and len(store.experiments()) == 2

    asked = {}
    monkeypatch.setattr(objectives, "_dataset", lambda source: None)
    monkeypatch.setattr(objectives, "train", lambda hp, data, **kwargs: asked.update(kwargs) or "trained")

    class Trial:
        save = resume_from = refused = None

    assert objectives.train_objective({}, store.get_experiment("mean").objective, 0, "cpu", Trial()) == "trained"
    assert asked["selection"] == "last-mean"


def test_best_and_the_stop_rule_rank_by_the_selection_rules_objective(url):
    """Under min-loss, the trial of lower validation loss comes first even with a lower accuracy."""
    from workers.records import TrialOutcome
    from workers.stops import stop_reason

    experiment = submit(open_store(url), "e", "smoke", stop_after_no_improvement=1, selection="min-loss")

    def trial(tid, accuracy, loss):
        epochs = (EpochReport(1, validation_accuracy=accuracy, validation_loss=loss),)
        result = TrainResult("ok", epochs, best_epoch=1, selection="min-loss")
        return Trial("e", tid, state=DONE, refresh_time=experiment.created + 1 + tid, result=result)

    trials = [trial(0, 0.9, 0.5), trial(1, 0.8, 0.3), trial(2, 0.95, 0.4)]
    assert [t.tid for t in report.ranked(trials)] == [1, 2, 0]
    outcomes = [TrialOutcome.of(t.tid, t.state, t.refresh_time, t.result.to_document()) for t in trials]
    assert "(best -0.3000, trial 1)" in stop_reason(experiment, outcomes, experiment.created + 10)


def test_submit_refuses_an_existing_name_unless_extended(url, capsys):
    assert cli.main(["submit", "smoke", "--name", "r3", "--max-evals", "5", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "submitted 'r3'" in out and "larnn worker" in out and "larnn status r3" in out
    assert cli.main(["submit", "smoke", "--name", "r3", "--store", url]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["submit", "smoke", "--name", "r3", "--extend-to", "9", "--store", url]) == 0
    assert open_store(url).get_experiment("r3").max_evals == 9
    with pytest.raises(ExperimentExists):
        submit(open_store(url), "r3", "smoke")
    with pytest.raises(SpaceError):
        submit(open_store(url), "r4", "no-such-space")


def test_status_and_best(tmp_path, url, capsys):
    store = open_store(url)
    submit(store, "shown", "smoke", max_evals=4)
    in_process_worker(store, sleepy_objective(str(tmp_path / "runs"), 0.0, 1), tmp_path).run()
    assert cli.main(["status", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "shown" in out and "done" in out
    assert cli.main(["best", "shown", "--top", "2", "--format", "json", "--store", url]) == 0
    best = json.loads(capsys.readouterr().out)
    assert len(best) == 2 and best[0]["validation_accuracy"] >= best[1]["validation_accuracy"]
    assert "learning_rate" in best[0]["hyperparameters"]
    assert cli.main(["best", "shown", "--format", "csv", "--store", url]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("tid,validation_accuracy,test_accuracy") and len(lines) == 5
    assert cli.main(["best", "nope", "--store", url]) == 2
    assert "no experiment named 'nope'" in capsys.readouterr().err


def test_the_best_table_fits_a_terminal_and_says_once_what_the_trials_share():
    """`larnn best` (the main job ends with it): the hyperparameters the trials share once above, the
    others beside the numbers where they fit in 100 columns, else under each trial; small values
    keep their digits; --wide: every hyperparameter as a column."""
    varying = {f"knob_{i}": 0.5 for i in range(12)}
    rows = [
        {
            "tid": tid,
            "validation_accuracy": 0.9 - tid / 100,
            "test_accuracy": 0.8,
            "best_epoch": 3,
            "epochs": 10,
            "wall_time_s": 12.5,
            "protocol": "honest",
            "selection": "last-mean",
            "hyperparameters": {
                "batch_size": 256,
                "l2_weight_reg": 1.9e-05 * (tid + 1),
                "model": "lstm" if tid == 2 else "larnn",
                **({} if tid == 2 else {"attention_heads": 4 + tid}),
                **{name: value + tid for name, value in varying.items()},
            },
        }
        for tid in range(3)
    ]
    lines = report.format_best(rows, "table").splitlines()
    assert lines[0].startswith("protocol: honest: the epoch chosen on validation subjects")
    assert any(line.startswith("selection: last-mean: the last epoch, ranked by the mean") for line in lines)
    assert "same in all 3: batch_size=256" in lines and all(len(line) <= report.WIDTH for line in lines)
    under_lstm = " ".join(lines[lines.index(next(line for line in lines if line.lstrip().startswith("2 "))) + 1 :])
    assert "model=lstm" in under_lstm and "attention_heads" not in under_lstm  # an LSTM has no heads
    first = "\n".join(lines[: lines.index(next(line for line in lines if line.lstrip().startswith("1 ")))])
    assert "l2_weight_reg=1.9e-05" in first and "=0.0000" not in "\n".join(lines)
    few = [{**row, "hyperparameters": {"batch_size": 256, "learning_rate": 0.01 * (1 + row["tid"])}} for row in rows]
    table = report.format_best(few, "table").splitlines()
    header = next(line for line in table if line.startswith("tid"))
    assert header.split()[-1] == "learning_rate" and table[-3:] == [
        line for line in table if line[:3].strip().isdigit()
    ]
    wide = report.format_best(rows, "table", wide=True).splitlines()
    header = next(line for line in wide if line.startswith("tid"))
    assert "batch_size" in header and "knob_11" in header and wide[-4] == header
    assert "protocol" not in header and "selection" not in header


def test_store_url_from_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LARNN_STORE", f"sqlite:///{tmp_path / 'env.db'}")
    assert cli.main(["submit", "smoke", "--name", "via-env"]) == 0
    assert (tmp_path / "env.db").exists()
    assert cli.main(["status", "--store", "redis://x"]) == 2
    assert "unknown store URL" in capsys.readouterr().err


def test_max_trials_and_experiment_filter(tmp_path, url):
    store = open_store(url)
    submit(store, "first", "smoke", max_evals=3)
    submit(store, "second", "smoke", max_evals=3)
    objective = sleepy_objective(str(tmp_path / "runs"), 0.0, 1)
    assert in_process_worker(store, objective, tmp_path, max_trials=2, experiment="second").run() == 2
    assert store.counts("first")["done"] == 0 and store.counts("second")["done"] == 2
    assert in_process_worker(store, objective, tmp_path).run() == 4
    assert store.counts("first")["done"] == 3 and store.counts("second")["done"] == 3


@pytest.mark.slow
def test_larnn_search_end_to_end_on_the_offline_data(tmp_path, isolated_data_dir):
    """The README's main job in miniature: real data, real training, two local worker processes."""
    env = {**os.environ, "LARNN_DATA": str(isolated_data_dir), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "larnn_core.cli",
            "search",
            "smoke",
            "--name",
            "e2e",
            "--workers",
            "2",
            "--max-evals",
            "3",
            "--epochs",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "validation_accuracy" in run.stdout
    trials = open_store(f"sqlite:///{tmp_path / 'larnn.db'}").trials("e2e")
    assert len(trials) == 3 and all(t.state == DONE for t in trials), [t.result.error for t in trials]
    for trial in trials:
        result = trial.result
        assert result.data_source == "hapt" and result.device.startswith("cpu") and result.code_version
        assert 0.0 < result.chosen.test_accuracy <= 1.0 and len(result.epochs) == 1
    # the main job ends naming the command that exports its best model, which evaluates to its number
    assert "the best trial's model: larnn export e2e --out e2e.pt" in run.stdout
    for command in (["export", "e2e", "--out", "e2e.pt"], ["evaluate", "e2e.pt", "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "larnn_core.cli", *command], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    best = max(trials, key=lambda t: (t.result.chosen.validation_accuracy, -t.tid))
    assert json.loads(done.stdout)["accuracy"] == best.result.chosen.test_accuracy


@pytest.mark.slow
def test_larnn_search_with_asha_on_the_offline_data_prunes_some_and_ends_at_max_evals(tmp_path, isolated_data_dir):
    env = {**os.environ, "LARNN_DATA": str(isolated_data_dir), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "larnn_core.cli",
            "search",
            "smoke",
            "--name",
            "asha",
            "--workers",
            "2",
            "--max-evals",
            "8",
            "--epochs",
            "4",
            "--pruner",
            "asha",
            "--asha-min-epochs",
            "1",
            "--asha-eta",
            "2",
            "--algorithm",
            "rand",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    trials = open_store(f"sqlite:///{tmp_path / 'larnn.db'}").trials("asha")
    assert len(trials) == 8 and all(t.state in FINAL for t in trials)
    pruned = [t for t in trials if t.state == PRUNED]
    assert pruned, [t.result.error for t in trials]
    assert all(
        t.result.extra["pruned_at_epoch"] in (1, 2) and len(t.curve) == t.result.extra["pruned_at_epoch"]
        for t in pruned
    )
