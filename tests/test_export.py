"""`larnn export` and `larnn evaluate`: a trial's kept model leaves the store as a plain state dict
and a description, and evaluating it reproduces the numbers its training recorded, exactly."""

import json

import pytest
import torch

from larnn_core import cli
from larnn_core.data import dataset
from tests.support.fake_workers import in_process_worker
from workers.experiment import submit
from workers.objective import train_objective
from workers.records import MODEL
from workers.report import ranked
from workers.store import open_store

SYNTHETIC = ["--source", "hapt"]  # the tests' data stands in the hapt cache; its own name is "synthetic"


@pytest.fixture
def searched(tmp_path, small_har):
    """An experiment of 3 trained trials, the models of the best 2 kept."""
    dataset.save(small_har, dataset.cache_path("hapt"))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    submit(store, "exp", "smoke", max_evals=3, algorithm="rand", seed=2, epochs=3, keep_artifacts="top-2")
    in_process_worker(store, train_objective, tmp_path, experiment="exp").run()
    return store, url


def test_the_best_trials_model_exports_and_evaluates_to_its_recorded_numbers(searched, tmp_path, capsys):
    store, url = searched
    best = ranked(store.trials("exp"))[0]
    out = tmp_path / "models" / "best.pt"
    assert cli.main(["export", "exp", "--out", str(out), "--store", url]) == 0
    assert f"exported trial exp/{best.tid}" in capsys.readouterr().out
    weights = torch.load(out, weights_only=True)  # plain torch, no code of ours
    assert all(isinstance(t, torch.Tensor) for t in weights.values()) and "head.weight" in weights
    description = json.loads(out.with_suffix(".json").read_text())
    assert description["trial"] == best.tid and description["epoch"] == best.result.best_epoch
    assert description["hyperparameters"] == best.result.hyperparameters and description["seed"] == best.result.seed
    assert description["protocol"] == "honest" and len(description["normalisation"]["mean"]) == 9
    for split, recorded in (("test", best.result.chosen), ("validation", best.result.chosen)):
        assert cli.main(["evaluate", str(out), "--split", split, "--json", *SYNTHETIC]) == 0
        evaluation = json.loads(capsys.readouterr().out)
        assert evaluation["accuracy"] == getattr(recorded, f"{split}_accuracy")  # exactly
        assert evaluation["f1"] == getattr(recorded, f"{split}_f1")
        assert sum(map(sum, evaluation["confusion"])) == evaluation["windows"]
    assert cli.main(["evaluate", str(out), *SYNTHETIC]) == 0
    shown = capsys.readouterr().out
    assert f"(recorded at training: {best.result.chosen.test_accuracy:.4f}, identical)" in shown
    assert "confusion matrix" in shown and "walking" in shown


def test_a_given_trial_exports_and_one_without_a_model_is_refused_naming_those_with_one(searched, tmp_path, capsys):
    store, url = searched
    trials = store.trials("exp")
    kept = sorted(t.tid for t in trials if MODEL in t.files)
    (dropped,) = [t.tid for t in trials if MODEL not in t.files]
    assert cli.main(["export", "exp", "--trial", str(kept[-1]), "--out", str(tmp_path / "a.pt"), "--store", url]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["trial"] == kept[-1]
    capsys.readouterr()
    assert cli.main(["export", "exp", "--trial", str(dropped), "--out", str(tmp_path / "b.pt"), "--store", url]) == 2
    error = capsys.readouterr().err
    assert f"trial {dropped} of 'exp' has no model kept" in error and f"{kept[0]}, {kept[1]}" in error
    assert len(error.strip().splitlines()) == 1 and not (tmp_path / "b.pt").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["export", "nope", "--out", "x.pt"], "no experiment named 'nope'"),
        (["export", "exp", "--trial", "9", "--out", "x.pt"], "has no trial 9"),
        (["export", "exp", "--out", "x.json"], "an exported model is a .pt file"),
        (["export", "exp", "--trial", "-1", "--out", "x.pt"], "expected a trial id"),
    ],
)
def test_bad_exports_are_refused_in_one_line_writing_nothing(
    searched, tmp_path, capsys, monkeypatch, arguments, message
):
    _, url = searched
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main([*arguments, "--store", url])
    except SystemExit as refused:  # a command line argparse refuses
        code = refused.code
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not list(tmp_path.glob("x.*"))


def test_a_damaged_model_in_the_store_is_refused(searched, tmp_path, capsys):
    store, url = searched
    best = ranked(store.trials("exp"))[0]
    path = store.files_folder / best.files[MODEL].location
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    assert cli.main(["export", "exp", "--out", str(tmp_path / "best.pt"), "--store", url]) == 2
    assert "fails its SHA-256 check: it cannot be exported" in capsys.readouterr().err
    assert not (tmp_path / "best.pt").exists()


def test_evaluate_refuses_a_model_without_its_description_or_not_matching_it(searched, tmp_path, capsys):
    _, url = searched
    out = tmp_path / "best.pt"
    assert cli.main(["export", "exp", "--out", str(out), "--store", url]) == 0
    description = out.with_suffix(".json")
    saved = description.read_text()
    description.unlink()
    assert cli.main(["evaluate", str(out)]) == 2
    assert "its description best.json is missing beside it" in capsys.readouterr().err
    description.write_text(saved.replace('"weights_sha256": "', '"weights_sha256": "0'))
    assert cli.main(["evaluate", str(out)]) == 2
    assert "does not match its description best.json" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "missing.pt")]) == 2
    assert "is not an exported model" in capsys.readouterr().err
