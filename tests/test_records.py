"""The records a training emits convert to and from their stored documents without loss, and read
the documents of earlier releases and of the 2018 result files."""

import json

from larnn_core import train as training
from larnn_core.hparams import HParams
from larnn_core.records import EpochReport, TrainResult
from tests.support.data import TINY


def test_an_epoch_report_stores_what_was_measured_and_reads_older_curves():
    report = EpochReport(3, train_loss=0.5, validation_accuracy=0.8, seconds=12.0)
    assert report.to_document() == {"epoch": 3, "train_loss": 0.5, "validation_accuracy": 0.8, "seconds": 12.0}
    assert EpochReport.from_document(report.to_document()) == report
    before = {
        "epoch": 2,
        "train_loss": 0.4,
        "train_accuracy": 0.9,
        "validation_loss": 0.3,
        "validation_accuracy": 0.85,
        "test_accuracy": 0.8,
    }  # a curve entry of the previous release
    assert EpochReport.from_document(before).to_document() == before


def test_a_training_result_round_trips_through_its_document(small_har):
    trained = training.train(
        HParams.from_dict({**TINY, "training_epochs": 2}), small_har, device="cpu", seed=2, progress=False
    )
    document = json.loads(json.dumps(trained.to_document()))  # as a store keeps it
    assert TrainResult.from_document(document) == trained
    assert document["loss"] == -document["best_validation_accuracy"] == trained.loss
    assert "test_accuracies" not in document["history"]  # the test split was read at the selected epoch only
    assert document["test_accuracy"] == trained.selected.test_accuracy is not None


def test_documents_of_other_producers_read_and_write_back_unchanged():
    imported_2018 = {  # analysis/import2018.py's result: four curves, the selected numbers its own
        "status": "ok",
        "protocol": "test-picked",
        "loss": -0.9192,
        "best_validation_accuracy": 0.9192,
        "best_validation_f1_score": 0.91,
        "best_train_accuracy": 0.97,
        "best_epoch": 2,
        "history": {
            "train_accuracies": [0.8, 0.9],
            "train_losses": [0.6, 0.3],
            "validation_accuracies": [0.85, 0.9192],
            "validation_losses": [0.5, 0.3],
        },
        "space": {"model": "larnn", "hidden_size": 81},
        "model_name": "LARNN",
        "imported_from": "x.json",
    }
    failed_in_a_worker = {
        "status": "fail",
        "error": "RuntimeError: boom",
        "traceback": "Traceback ...",
        "space": {"learning_rate": 0.01},
        "worker": "host:1:ab",
        "trial_wall_time_s": 3.5,
    }
    for document in (imported_2018, failed_in_a_worker):
        result = TrainResult.from_document(document)
        assert result.to_document() == document
    assert TrainResult.from_document(imported_2018).selected == EpochReport(
        2, train_loss=0.3, train_accuracy=0.9, validation_loss=0.3, validation_accuracy=0.9192, validation_f1=0.91
    )
    assert TrainResult.from_document(failed_in_a_worker).error == "RuntimeError: boom"
