import dataclasses
import json

import numpy as np
import pytest
import torch

from larnn_core import cli
from larnn_core import train as training
from larnn_core.data import dataset, make_splits
from larnn_core.execution import torch_compile
from larnn_core.hparams import HParams
from larnn_core.records import HISTORY, TrainResult
from tests.support.data import TINY


@pytest.mark.parametrize("model", ["larnn", "lstm"])
def test_training_learns_and_records_everything(small_har, model):
    hp = HParams.from_dict({**TINY, "model": model, "training_epochs": 6})
    trained = training.train(hp, small_har, device="cpu", seed=1, progress=False)
    assert trained.status == "ok" and [e.epoch for e in trained.epochs] == [1, 2, 3, 4, 5, 6]
    every_epoch = ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy", "validation_f1", "seconds")
    assert all(getattr(e, metric) is not None for e in trained.epochs for metric in every_epoch)
    # the test split is read once, at the selected epoch
    tested = [e.epoch for e in trained.epochs if (e.test_loss, e.test_accuracy, e.test_f1) != (None, None, None)]
    assert tested == [trained.best_epoch] and None not in (trained.selected.test_loss, trained.selected.test_f1)
    result = trained.to_document()
    history = result["history"]
    assert sorted(history) == sorted(HISTORY[m] for m in every_epoch)
    assert all(len(v) == 6 for v in history.values())
    # chance is 1/6; in 6 epochs the LARNN reached 0.6-0.97 over seeds 1-16 (in 3, 0.3-0.85)
    assert result["best_validation_accuracy"] > 0.5
    assert result["loss"] == -result["best_validation_accuracy"]
    assert result["test_accuracy"] == trained.selected.test_accuracy
    for key in ("device", "data_source", "data_checksum", "code_version", "seed", "wall_time_s", "hyperparameters"):
        assert key in result
    assert result["execution"] == {
        "cpu_loops": model == "larnn",
        "torch_compile": False,
        "cuda_graphs": False,
        "fused_kernel": False,
    }
    assert result["protocol"] == "honest"  # the epoch picked on validation subjects, test read there once
    assert result["data_source"] == "synthetic" and result["data_checksum"] == small_har.checksum
    assert "test_curves" not in result and "resumed_from_epoch" not in result
    assert json.loads(json.dumps(result)) == result  # a plain JSON document, storable as is
    assert TrainResult.from_document(result) == trained


def test_test_curves_on_request_read_the_same_test_numbers_at_the_selected_epoch(small_har):
    hp = HParams.from_dict({**TINY, "training_epochs": 4})
    once = training.train(hp, small_har, device="cpu", seed=3, progress=False)
    curves = training.train(hp, small_har, device="cpu", seed=3, progress=False, test_curves=True)
    history = curves.to_document()["history"]
    assert len(history) == 9 and all(len(v) == 4 for v in history.values())
    assert curves.to_document()["test_curves"] is True
    assert curves.best_epoch == once.best_epoch
    assert (
        curves.selected.test_accuracy == once.selected.test_accuracy == history["test_accuracies"][once.best_epoch - 1]
    )


def test_same_seed_same_result(small_har):
    hp = HParams.from_dict({**TINY, "training_epochs": 1})
    a = training.train(hp, small_har, device="cpu", seed=5, progress=False)
    b = training.train(hp, small_har, device="cpu", seed=5, progress=False)
    assert [dataclasses.replace(e, seconds=None) for e in a.epochs] == [
        dataclasses.replace(e, seconds=None) for e in b.epochs
    ]  # all but the time


def test_epoch_is_chosen_on_validation_and_test_read_once_with_its_weights(small_har, monkeypatch):
    """Defect 5: the 2018 code reported the best test epoch. The test split is read once, after
    training, with the weights (and batch-norm statistics) of the epoch chosen on validation."""
    scripted = iter([0.5, 0.9, 0.7])
    test_size = len(small_har.y[small_har.split == "test"])
    weights, tested = [], []

    def fake_evaluate(model, X, y, n_classes, forward=None):
        state = {name: t.clone() for name, t in model.state_dict().items()}
        if len(y) == test_size:
            tested.append(state)
            return {"loss": 0.4, "accuracy": 0.6, "f1": 0.6}
        weights.append(state)
        accuracy = next(scripted)
        return {"loss": 1.0 - accuracy, "accuracy": accuracy, "f1": accuracy}

    monkeypatch.setattr(training, "evaluate", fake_evaluate)
    result = training.train(HParams.from_dict(TINY), small_har, device="cpu", progress=False)
    assert result.best_epoch == 2
    assert result.selected.validation_accuracy == 0.9
    assert result.selected.test_accuracy == 0.60
    assert len(tested) == 1 and not torch.equal(weights[1]["head.weight"], weights[2]["head.weight"])
    assert all(torch.equal(tested[0][name], weights[1][name]) for name in weights[1])


def test_lr_decays_by_three_quarters_every_n_epochs(small_har, monkeypatch):
    rates = []
    monkeypatch.setattr(training, "evaluate", lambda *a: {"loss": 0.0, "accuracy": 0.5, "f1": 0.5})
    original_step = torch.optim.Adam.step

    def record(self, *a, **k):
        rates.append(self.param_groups[0]["lr"])
        return original_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", record)
    training.train(HParams.from_dict({**TINY, "training_epochs": 5}), small_har, device="cpu", progress=False)
    per_epoch = sorted(set(rates), reverse=True)
    assert np.allclose(per_epoch, [0.01, 0.0075, 0.005625])


def test_nan_loss_ends_in_a_failed_result(small_har):
    small_har.X[:] = np.nan
    result = training.train(HParams.from_dict(TINY), small_har, device="cpu", progress=False)
    assert result.status == "fail" and "loss became nan" in result.error


def test_cuda_out_of_memory_ends_in_a_failed_result(small_har, monkeypatch):
    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("Tried to allocate 20.00 GiB")

    monkeypatch.setattr(torch.nn.Module, "__call__", oom)
    result = training.train(HParams.from_dict(TINY), small_har, device="cpu", progress=False)
    assert result.status == "fail" and "CUDA out of memory" in result.error


def test_missing_gpu_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        training.resolve_device("cuda:0")


def test_larnn_train_command(small_har, tmp_path, capsys, isolated_data_dir):
    dataset.save(small_har, dataset.cache_path("hapt"))
    out = tmp_path / "result.json"
    config = tmp_path / "best.json"
    config.write_text(json.dumps({**TINY, "training_epochs": 9}))
    code = cli.main(
        [
            "train",
            "--model",
            "lstm",
            "--config",
            str(config),
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
            "--selection",
            "last",
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed == json.loads(out.read_text())
    assert printed["model"] == "lstm" and len(printed["history"]["train_losses"]) == 2
    assert printed["hyperparameters"]["hidden_size"] == 8
    assert printed["selection"] == "last" and printed["best_epoch"] == 2
    assert printed["loss"] == -printed["history"]["validation_accuracies"][1]


def test_larnn_train_refuses_unknown_config_keys(tmp_path, capsys):
    code = cli.main(["train", "--config", '{"hidden_sise": 8}'])
    assert code == 2 and "hidden_sise" in capsys.readouterr().err


def test_larnn_data_info(small_har, capsys):
    dataset.save(small_har, dataset.cache_path("hapt"))
    assert cli.main(["data", "info", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["checksum"] == small_har.checksum
    assert summary["splits"]["test"]["subjects"] == list(dataset.TEST_SUBJECTS)
    assert cli.main(["data", "info"]) == 0
    assert "walking" in capsys.readouterr().out


def test_sha256_option_is_refused_for_the_offline_source(capsys):
    assert cli.main(["data", "prepare", "--source", "hapt", "--sha256", "00"]) == 2
    assert "--source uci only" in capsys.readouterr().err


def test_larnn_data_prepare_uci(tmp_path, capsys, isolated_data_dir):
    from tests.support.data import write_uci_zip

    archive = tmp_path / "uci.zip"
    write_uci_zip(archive)
    digest = dataset.sha256_file(archive)
    assert cli.main(["data", "prepare", "--source", "uci", "--url", archive.as_uri(), "--sha256", "f" * 64]) == 2
    assert f"its SHA-256 is {digest}" in capsys.readouterr().err
    assert not dataset.cache_path("uci").exists()
    assert cli.main(["data", "prepare", "--source", "uci", "--url", (tmp_path / "gone.zip").as_uri()]) == 2
    assert "cannot download the UCI HAR zip" in capsys.readouterr().err
    assert cli.main(["data", "prepare", "--source", "uci", "--url", archive.as_uri(), "--sha256", digest]) == 0
    assert "source:   uci" in capsys.readouterr().out
    assert dataset.cache_path("uci").exists()


def test_larnn_train_passes_no_cuda_graphs(small_har, monkeypatch, capsys):
    dataset.save(small_har, dataset.cache_path("hapt"))
    calls = []

    def fake_train(hp, data, **kwargs):
        calls.append(kwargs["cuda_graphs"])
        return TrainResult("ok")

    monkeypatch.setattr(training, "train", fake_train)
    assert cli.main(["train", "--no-progress"]) == 0
    assert cli.main(["train", "--no-progress", "--no-cuda-graphs"]) == 0
    assert calls == [None, False]  # None: graphs on CUDA unless LARNN_CUDA_GRAPHS=0


@pytest.mark.slow
def test_each_compiled_training_starts_from_no_compiled_graphs(small_har, monkeypatch):
    """A worker trains configuration after configuration in one process; past dynamo's limit of
    8 variants per function, later ones would run uncompiled without a word."""
    forgotten = []
    monkeypatch.setattr(torch_compile, "forget", lambda: forgotten.append(True))
    hp = HParams.from_dict({**TINY, "training_epochs": 1})
    for _ in range(2):
        result = training.train(hp, small_har, device="cpu", progress=False, cpu_loops=False, torch_compile=True)
        assert result.execution == {
            "cpu_loops": False,
            "torch_compile": True,
            "cuda_graphs": False,
            "fused_kernel": False,
        }
    assert forgotten == [True, True]
    training.train(hp, small_har, device="cpu", progress=False, torch_compile=False)
    lstm = training.train(
        HParams.from_dict({**TINY, "model": "lstm", "training_epochs": 1}),
        small_har,
        device="cpu",
        progress=False,
        torch_compile=True,
    )
    assert lstm.execution["torch_compile"] is False  # an LSTM: nothing to compile
    assert forgotten == [True, True]


def test_on_epoch_returning_true_stops_the_training_there(small_har):
    """A pruner's stop: the result holds the epochs trained and says where it stopped."""
    hp = HParams.from_dict({**TINY, "training_epochs": 5})
    reports = []
    result = training.train(
        hp, small_har, device="cpu", progress=False, on_epoch=lambda report: reports.append(report) or report.epoch == 2
    )
    assert result.status == "ok" and result.stopped_at_epoch == 2
    assert len(result.epochs) == 2 and result.best_epoch <= 2
    # what on_epoch saw, and the selected epoch's test numbers added after training
    assert reports == [dataclasses.replace(e, test_loss=None, test_accuracy=None, test_f1=None) for e in result.epochs]
    assert (
        training.train(
            hp, small_har, device="cpu", progress=False, on_epoch=lambda report: report.epoch == 5
        ).stopped_at_epoch
        is None
    )


def test_a_last_batch_of_one_sequence_joins_the_batch_before(small_har):
    """Batch norm cannot normalise a batch of one: a training split of N = k * batch_size + 1
    sequences (seed 9557's trial 967094084: 5633 windows) failed every batch-norm trial."""
    n_train = len(make_splits(small_har, 5, 0).train[1])
    hp = HParams.from_dict({**TINY, "batch_size": n_train - 1, "training_epochs": 1})
    result = training.train(hp, small_har, device="cpu", progress=False)
    assert result.status == "ok", result.error
