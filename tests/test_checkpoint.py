"""Checkpoints: a training stopped at any epoch boundary goes on to the uninterrupted result, bit
for bit on CPU; a checkpoint of another training, or a damaged one, is refused in one line."""

import dataclasses
import json
import os
import signal
import subprocess
import sys

import pytest

from larnn_core import cli
from larnn_core import train as training
from larnn_core.checkpoint import IDENTITY, Checkpoint, CheckpointRefused, model_bytes, read_model
from larnn_core.data import dataset
from larnn_core.hparams import HParams
from larnn_core.records import TrainResult
from tests.support.data import TINY
from tests.support.fake_workers import ROOT, wait_for


def timeless(result):
    """A result without what differs between two runs of the same training: times, where it resumed."""
    epochs = tuple(dataclasses.replace(e, seconds=None) for e in result.epochs)
    return dataclasses.replace(result, epochs=epochs, wall_time_s=None, resumed_from_epoch=None)


def identity_of(result):
    """The identity a checkpoint of this training carries (larnn_core.checkpoint.IDENTITY)."""
    return {name: getattr(result, name) for name in IDENTITY}


def saved_training(hp, data, seed=4):
    saved = []
    result = training.train(
        hp, data, device="cpu", seed=seed, progress=False, on_checkpoint=lambda c: saved.append(c.to_bytes())
    )
    return result, saved


@pytest.mark.parametrize(
    "config",
    [
        {**TINY, "training_epochs": 5, "dropout_drop_proba": 0.3},
        {**TINY, "training_epochs": 5, "model": "lstm", "dropout_drop_proba": 0.3, "num_layers": 2},
        {**TINY, "training_epochs": 5, "weight_averaging": 0.9, "lr_schedule": "cosine"},
    ],
    ids=["larnn-dropout", "lstm-dropout", "larnn-averaged-cosine"],
)
def test_a_resumed_training_ends_bit_for_bit_as_the_uninterrupted_one(small_har, config):
    hp = HParams.from_dict(config)
    uninterrupted, saved = saved_training(hp, small_har)
    assert len(saved) == 5
    for stopped_after in (1, 3, 5):
        reports = []
        resumed = training.train(
            hp,
            small_har,
            device="cpu",
            seed=4,
            progress=False,
            resume_from=lambda identity, k=stopped_after: Checkpoint.from_bytes(saved[k - 1], identity),
            on_epoch=reports.append,
        )
        assert resumed.resumed_from_epoch == stopped_after
        assert [r.epoch for r in reports] == list(range(stopped_after + 1, 6))  # only the epochs left are trained
        assert timeless(resumed) == timeless(uninterrupted)


def test_the_checkpoint_carries_the_best_epochs_weights_and_the_epochs_so_far(small_har):
    hp = HParams.from_dict({**TINY, "training_epochs": 3})
    result, saved = saved_training(hp, small_har)
    identity = identity_of(result)
    last = Checkpoint.from_bytes(saved[-1], identity)
    assert last.epoch == 3 and last.best_epoch == result.best_epoch
    assert [e.validation_accuracy for e in last.epochs] == [e.validation_accuracy for e in result.epochs]
    assert set(last.best) == set(last.model) and {"shuffle", "dropout"} == set(last.generators)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda identity: {**identity, "seed": 5}, "seed"),
        (
            lambda identity: {**identity, "hyperparameters": {**identity["hyperparameters"], "hidden_size": 9}},
            "hyperparameters",
        ),
        (lambda identity: {**identity, "data_checksum": "0" * 64}, "data_checksum"),
        (lambda identity: {**identity, "validation_subjects": [1, 2, 3, 4, 5]}, "validation_subjects"),
        (lambda identity: {**identity, "selection": "last"}, "selection"),
    ],
)
def test_a_checkpoint_of_another_training_is_refused_naming_what_differs(small_har, change, named):
    hp = HParams.from_dict({**TINY, "training_epochs": 1})
    result, saved = saved_training(hp, small_har)
    identity = identity_of(result)
    Checkpoint.from_bytes(saved[0], identity)
    with pytest.raises(CheckpointRefused, match=f"its {named} differs"):
        Checkpoint.from_bytes(saved[0], change(identity))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:100], "header does not parse|tensors do not read"),
        (lambda data: b"\x00" * len(data), "header does not parse"),
        (lambda data: data[: len(data) // 2], "tensors do not read"),
    ],
)
def test_a_damaged_checkpoint_is_refused(small_har, damage, message):
    hp = HParams.from_dict({**TINY, "training_epochs": 1})
    result, saved = saved_training(hp, small_har)
    identity = identity_of(result)
    with pytest.raises(CheckpointRefused, match=message):
        Checkpoint.from_bytes(damage(saved[0]), identity)


def test_a_model_file_is_not_a_checkpoint_and_the_reverse(small_har):
    hp = HParams.from_dict({**TINY, "training_epochs": 1})
    _, saved = saved_training(hp, small_har)
    with pytest.raises(CheckpointRefused, match="not a larnn-model/1 file"):
        read_model(saved[0])
    model = model_bytes({}, {"hyperparameters": hp.to_dict()})
    with pytest.raises(CheckpointRefused, match="not a larnn-checkpoint/1 file"):
        Checkpoint.from_bytes(model, {})


def test_larnn_train_killed_goes_on_with_resume_to_the_uninterrupted_result(small_har, tmp_path, capsys):
    """`larnn train --checkpoint-dir DIR` is killed with SIGKILL after a few epochs; `larnn train
    --resume DIR` ends with the result of a training that was never stopped."""
    dataset.save(small_har, dataset.cache_path("hapt"))
    config = json.dumps({**TINY, "training_epochs": 40, "dropout_drop_proba": 0.2})
    folder = tmp_path / "ck"
    command = ["train", "--config", config, "--device", "cpu", "--seed", "3", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    killed = subprocess.Popen(
        [sys.executable, "-m", "larnn_core.cli", *command, "--checkpoint-dir", str(folder)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    record = folder / "checkpoint.json"
    wait_for(lambda: record.exists() and json.loads(record.read_text())["epoch"] >= 2, timeout=120)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    epoch = json.loads(record.read_text())["epoch"]
    assert 2 <= epoch < 40 and len(list(folder.glob("checkpoint-*.safetensors"))) == 1
    assert cli.main(["train", "--resume", str(folder), "--device", "cpu", "--no-progress"]) == 0
    resumed = TrainResult.from_document(json.loads(capsys.readouterr().out))
    assert cli.main(command) == 0
    whole = TrainResult.from_document(json.loads(capsys.readouterr().out))
    assert resumed.resumed_from_epoch == epoch and timeless(resumed) == timeless(whole)


def test_larnn_train_refuses_bad_checkpoint_folders_in_one_line(small_har, tmp_path, capsys):
    dataset.save(small_har, dataset.cache_path("hapt"))
    folder = tmp_path / "ck"
    base = ["train", "--config", json.dumps({**TINY, "training_epochs": 2}), "--device", "cpu", "--no-progress"]
    assert cli.main([*base, "--checkpoint-dir", str(folder)]) == 0
    capsys.readouterr()
    refusals = [
        ([*base, "--checkpoint-dir", str(folder)], f"{folder} already holds a training: go on with"),
        (["train", "--resume", str(folder), "--seed", "2"], "leave out --seed"),
        (["train", "--resume", str(tmp_path / "none")], "no training.json there"),
    ]
    (folder / "checkpoint-2.safetensors").write_bytes(b"damaged")
    refusals.append((["train", "--resume", str(folder)], "checkpoint-2.safetensors fails its SHA-256 check"))
    for arguments, message in refusals:
        assert cli.main(arguments) == 2
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()) == 1, error
