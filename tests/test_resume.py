"""Trials survive their workers: a worker killed after epoch k leaves a checkpoint from which
another worker goes on at epoch k + 1 to the result an uninterrupted worker gets (bit for bit on
CPU); a damaged checkpoint restarts the trial; an ended trial keeps its model, as many as the
experiment's keep_artifacts says."""

import os
import signal
import subprocess
import sys
import time

import pytest

from larnn_core.data import dataset
from tests.support.fake_workers import ROOT, in_process_worker, wait_for
from tests.support.stores import AtomicClient
from workers.experiment import submit
from workers.objective import train_objective
from workers.records import CHECKPOINT, DONE, MODEL, PRUNED
from workers.store import open_store
from workers.store.mongo import MongoStore

EPOCHS = 6
# what differs between two runs of one training: the times, where it resumed, which worker ran it
VARYING = {"wall_time_s", "trial_wall_time_s", "worker", "resumed_from_epoch"}


class Killed(BaseException):
    """What SIGKILL does to a worker, in process: it stops where it is, telling the store nothing."""


class DiesAfter:
    """A trial session whose worker dies once epoch `k` is kept: the next epoch's training is lost."""

    def __init__(self, session, k):
        self.session, self.k = session, k

    def __call__(self, report):
        return self.session(report)

    def save(self, checkpoint):
        if checkpoint.epoch > self.k:
            raise Killed()
        self.session.save(checkpoint)

    def __getattr__(self, name):
        return getattr(self.session, name)


def dying_after(k):
    return lambda point, settings, seed, device, session: train_objective(
        point, settings, seed, device, DiesAfter(session, k)
    )


def comparable(trial):
    document = trial.result.to_document()
    history = {key: value for key, value in document.pop("history").items() if key != "epoch_seconds"}
    return {key: value for key, value in document.items() if key not in VARYING}, history


@pytest.fixture(params=["sqlite", "mongomock"])
def store(request, tmp_path, small_har):
    dataset.save(small_har, dataset.cache_path("hapt"))
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        store = MongoStore("mongodb://localhost/larnn", client=AtomicClient(), database="larnn")
    yield store
    store.close()


def test_a_killed_workers_trial_goes_on_from_its_last_epoch_to_the_uninterrupted_result(store, tmp_path):
    for name in ("whole", "killed"):  # one seed: the same point and the same training
        submit(store, name, "smoke", max_evals=1, algorithm="rand", seed=7, epochs=EPOCHS, keep_artifacts="all")
    in_process_worker(store, train_objective, tmp_path, experiment="whole").run()
    with pytest.raises(Killed):
        in_process_worker(store, dying_after(3), tmp_path, experiment="killed").run()
    (trial,) = store.trials("killed")
    assert trial.state == 1 and trial.files[CHECKPOINT].epoch == 3 and [e.epoch for e in trial.curve] == [1, 2, 3]
    time.sleep(0.3)
    in_process_worker(store, train_objective, tmp_path, experiment="killed", stale_after_s=0.2).run()
    (whole,), (resumed,) = store.trials("whole"), store.trials("killed")
    assert resumed.state == DONE and resumed.result.resumed_from_epoch == 3
    assert [a.outcome for a in resumed.attempt_log] == ["heartbeat lost", "finished"]
    assert [a.resumed_from_epoch for a in resumed.attempt_log] == [None, 3]
    assert [e.epoch for e in resumed.curve] == list(range(1, EPOCHS + 1))  # the new attempt's whole curve
    assert comparable(resumed) == comparable(whole)
    # the ended trial keeps its selected epoch's model, not its checkpoint
    assert set(resumed.files) == {MODEL} and resumed.files[MODEL].epoch == resumed.result.best_epoch


def test_a_damaged_checkpoint_is_refused_and_the_trial_trains_from_scratch(store, tmp_path, caplog):
    for name in ("whole", "damaged"):
        submit(store, name, "smoke", max_evals=1, algorithm="rand", seed=7, epochs=4)
    in_process_worker(store, train_objective, tmp_path, experiment="whole").run()
    with pytest.raises(Killed):
        in_process_worker(store, dying_after(2), tmp_path, experiment="damaged").run()
    stored = store.trials("damaged")[0].files[CHECKPOINT]
    data = store._get_file(stored.location)
    store._remove_file(stored.location)
    store._set_file(
        "damaged",
        0,
        CHECKPOINT,
        stored.__class__(
            **{**stored.to_document(), "location": store._put_file("damaged", 0, CHECKPOINT, data[:-1] + b"!")}
        ),
        None,
    )
    time.sleep(0.3)
    in_process_worker(store, train_objective, tmp_path, experiment="damaged", stale_after_s=0.2).run()
    (whole,), (trial,) = store.trials("whole"), store.trials("damaged")
    assert "checkpoint refused (the checkpoint of trial damaged/0 (epoch 2) fails its SHA-256 check)" in caplog.text
    assert trial.state == DONE and trial.result.resumed_from_epoch is None
    assert [a.resumed_from_epoch for a in trial.attempt_log] == [None, None]
    assert comparable(trial) == comparable(whole)  # trained again from epoch 1


@pytest.mark.parametrize(("keep", "kept"), [("top-2", 2), ("all", 5), ("none", 0)])
def test_models_beyond_keep_artifacts_are_removed(store, tmp_path, keep, kept):
    submit(store, "kept", "smoke", max_evals=5, algorithm="rand", seed=1, epochs=2, keep_artifacts=keep)
    in_process_worker(store, train_objective, tmp_path, experiment="kept").run()
    trials = store.trials("kept")
    assert all(t.state in (DONE, PRUNED) for t in trials) and len(trials) == 5
    assert not any(CHECKPOINT in t.files for t in trials)
    best = sorted(trials, key=lambda t: (t.result.loss, t.tid))[:kept]
    assert {t.tid for t in trials if MODEL in t.files} == {t.tid for t in best}
    if isinstance(store, MongoStore):
        assert len(list(store._files.find({}))) == kept  # GridFS holds those models only
    else:
        assert len(list(store.files_folder.rglob("*.safetensors"))) == kept


@pytest.mark.slow
def test_a_sigkilled_worker_process_trial_resumes_in_another_process(tmp_path, small_har):
    """Real processes on a SQLite store: `larnn worker` is killed with SIGKILL once its trial has a
    checkpoint; the next `larnn worker` requeues the trial and goes on from that epoch."""
    dataset.save(small_har, dataset.cache_path("hapt"))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    for name in ("whole", "killed"):
        submit(store, name, "smoke", max_evals=1, algorithm="rand", seed=7, epochs=40)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path)}

    def worker(name, *options):
        command = [sys.executable, "-m", "larnn_core.cli", "worker", "--store", url, "--experiment", name]
        command += ["--device", "cpu", "--heartbeat", "0.2", "--stale-after", "1", "--idle-exit", "1", *options]
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    first = worker("killed")

    def checkpoint_epoch():
        trials = store.trials("killed")
        return trials[0].files[CHECKPOINT].epoch if trials and CHECKPOINT in trials[0].files else 0

    wait_for(lambda: checkpoint_epoch() >= 3, timeout=120)
    first.send_signal(signal.SIGKILL)
    first.wait()
    k = checkpoint_epoch()
    assert 3 <= k < 40
    second = worker("killed")
    _, log = second.communicate(timeout=300)
    assert second.returncode == 0, log
    assert f"trial killed/0 resumes from its checkpoint of epoch {k}" in log
    assert worker("whole").wait(timeout=300) == 0
    (whole,), (resumed,) = store.trials("whole"), store.trials("killed")
    assert resumed.result.resumed_from_epoch == k and resumed.attempt_log[-1].resumed_from_epoch == k
    assert comparable(resumed) == comparable(whole)


def test_with_checkpoint_every_a_kill_keeps_none_yet_a_stop_keeps_its_epoch(store, tmp_path):
    submit(store, "sparse", "smoke", max_evals=1, algorithm="rand", seed=7, epochs=EPOCHS)
    with pytest.raises(Killed):
        in_process_worker(store, dying_after(3), tmp_path, experiment="sparse", checkpoint_every_s=1000).run()
    assert CHECKPOINT not in store.trials("sparse")[0].files  # not due in 3 epochs: nothing kept
    time.sleep(0.3)
    worker = in_process_worker(store, train_objective, tmp_path, experiment="sparse", checkpoint_every_s=1000)
    worker.stale_after_s = 0.2

    def stopped_after_epoch_1(point, settings, seed, device, session):
        def on_epoch(report):
            if report.epoch == 1:
                worker.stop()  # SIGTERM at this epoch boundary, its checkpoint not due: kept all the same
            return session(report)

        return train_objective(point, settings, seed, device, StopsWith(session, on_epoch))

    worker.objective = stopped_after_epoch_1
    worker.run()
    (trial,) = store.trials("sparse")
    assert trial.state == 0 and trial.files[CHECKPOINT].epoch == 1
    assert [a.outcome for a in trial.attempt_log] == ["heartbeat lost", "given back"]


class StopsWith(DiesAfter):
    """A trial session whose epochs go through on_epoch."""

    def __init__(self, session, on_epoch):
        super().__init__(session, k=None)
        self.on_epoch = on_epoch

    def __call__(self, report):
        return self.on_epoch(report)

    def save(self, checkpoint):
        self.session.save(checkpoint)
