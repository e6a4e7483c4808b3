"""Inputs that training would refuse are refused where they are given, in one line naming the
option or field: devices, slot counts, an experiment's epochs, validation subjects and stop rule,
points and configs, names, store files, and the fields of imported 2018 result files."""

import json
import os

import pytest

from larnn_core import cli
from larnn_core.provenance import resolve_device
from tests.support.searches import result_2018
from tests.support.store_contract import experiment
from workers.store import open_store


@pytest.mark.parametrize("name", ["garbage", "cuda:-1", "", "meta", "mps", "cpu:3", "cuda:x"])
def test_a_device_that_is_not_cpu_or_cuda_is_refused_naming_the_choices(name):
    with pytest.raises(ValueError, match="is not one of auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_a_missing_gpu_is_refused_not_replaced(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:0")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--device", "meta"], "larnn train: error: device 'meta' is not one of"),
        (["worker", "--device", "garbage"], "larnn worker: error: device 'garbage' is not one of"),
        (["search", "smoke", "--name", "s", "--device", "mps"], "larnn search: error: device 'mps' is not one of"),
        (["submit", "smoke", "--name", "e", "--epochs", "20000"], "epochs must lie in [1, 10000]"),
        (
            ["submit", "smoke", "--name", "v", "--validation-subjects", "21"],
            "validation_subjects must be between 1 and 20",
        ),
        (["submit", "smoke", "--name", "t", "--stop-after", "9" * 400], "expected a positive duration up to 100 years"),
        (["worker", "--slots", "100000"], "--slots: must be at most 64, got 100000"),
        (["dashboard", "--host", "/tmp/x"], "--host must be an IP address (127.0.0.1, 0.0.0.0, ::1) or localhost"),
    ],
)
def test_the_command_line_refuses_in_one_line(argv, message, tmp_path, capsys):
    store = ["--store", f"sqlite:///{tmp_path / 'store.db'}"] if argv[0] in ("submit", "search", "worker") else []
    try:
        code = cli.main([*argv, *store])
    except SystemExit as exit:  # argparse's own refusals
        code = exit.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and "Traceback" not in "\n".join(err), err


@pytest.mark.parametrize(
    "config, message",
    [
        ('{"batch_size": 1' + "0" * 400 + "}", "'batch_size' must be a finite number, got an integer of about 400"),
        ('{"batch_size": 1' + "0" * 5000 + "}", "--config: Exceeds the limit (4300 digits)"),
    ],
)
def test_a_config_number_too_large_is_refused_with_its_field(config, message, capsys):
    assert cli.main(["train", "--config", config]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and len(err[0]) < 400, err


@pytest.mark.parametrize("key", ["1", "null", "true", "1.5", "2024-01-01"])
def test_a_points_file_with_a_key_that_is_not_text_is_refused(key, tmp_path, capsys):
    points = tmp_path / "points.yaml"
    points.write_text(f"- {{{key}: 2}}\n")
    argv = ["submit", "smoke", "--name", "p", "--points", str(points), "--store", f"sqlite:///{tmp_path / 's.db'}"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "point 0: a hyperparameter's name must be text" in err[0] and str(points) in err[0], err


@pytest.mark.parametrize("name", ["", "a/../b", "line\nbreak", "a;b", "..", "é", "x" * 101])
@pytest.mark.parametrize("command", ["submit", "import-results"])
def test_an_experiment_name_is_held_to_one_rule_by_submit_and_import(name, command, tmp_path, capsys):
    store = ["--store", f"sqlite:///{tmp_path / 's.db'}"]
    argv = ["submit", "smoke"] if command == "submit" else ["import-results", str(tmp_path / "none.json")]
    assert cli.main([*argv, "--name", name, *store]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be 1 to 100 letters, digits, '-', '_' or '.'" in err[0], err


def test_too_many_points_are_refused_before_any_is_checked(tmp_path, capsys):
    points = tmp_path / "points.yaml"
    points.write_text("".join(f"- {{learning_rate: {0.001 + i * 1e-6}}}\n" for i in range(2000)))
    argv = ["submit", "smoke", "--name", "p", "--points", str(points), "--max-evals", "5"]
    assert cli.main([*argv, "--store", f"sqlite:///{tmp_path / 's.db'}"]) == 2
    assert f"{points}: 2000 points, more than --max-evals 5" in capsys.readouterr().err


def bad_store_files(directory):
    """A text file, another program's SQLite database, a store cut in half and one whose header
    is overwritten: none is a larnn store."""
    import sqlite3

    from workers.store.sqlite import SQLiteStore

    (directory / "text.db").write_text("hello, not a database")
    with sqlite3.connect(directory / "foreign.db") as db:
        db.execute("CREATE TABLE photos (id INTEGER)")
    good_store = SQLiteStore(directory / "good.db")
    good_store.create_experiment(experiment("a"))  # the file is written by the first write
    good_store.close()
    good = (directory / "good.db").read_bytes()
    (directory / "half.db").write_bytes(good[: len(good) // 2])
    (directory / "header.db").write_bytes(b"x" * 100 + good[100:])
    page = 4096  # SQLite's default page size: garbage over the third page, a table's
    (directory / "middle.db").write_bytes(good[: 2 * page] + b"\xff" * page + good[3 * page :])
    return {
        "middle.db": "is a damaged SQLite database",
        "text.db": "is not a SQLite database",
        "foreign.db": "is another program's SQLite database (tables: photos)",
        "half.db": "is a damaged SQLite database",
        "header.db": "is not a SQLite database",
    }


@pytest.mark.parametrize("command", [["status"], ["best", "x"], ["submit", "smoke", "--name", "x"], ["trials", "x"]])
def test_a_file_that_is_not_a_larnn_store_is_refused_in_one_line_and_left_as_it_was(command, tmp_path, capsys):
    import hashlib

    for name, message in bad_store_files(tmp_path).items():
        path = tmp_path / name
        before = hashlib.sha256(path.read_bytes()).hexdigest()
        assert cli.main([*command, "--store", f"sqlite:///{path}"]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and str(path) in err[0], err
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before, name
        assert sorted(p.name for p in tmp_path.glob(f"{name}*")) == [name]  # no journal beside it


@pytest.mark.parametrize("command", [["status"], ["submit", "smoke", "--name", "x"], ["worker", "--device", "cpu"]])
@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_store_path_that_is_not_a_regular_file_is_refused(command, kind, tmp_path, capsys):
    """A folder or a FIFO read as an empty store (status: 'no experiments'); submit failed with
    SQLite's 'disk I/O error'; a worker waited for it forever."""
    path = tmp_path / "store"
    path.mkdir() if kind == "folder" else os.mkfifo(path)
    assert cli.main([*command, "--store", f"sqlite:///{path}"]) == 2
    assert (
        capsys.readouterr().err.strip() == f"larnn {command[0]}: error: {path} is not a regular file: not a larnn store"
    )


def _changed_2018_result(change) -> dict:
    result = result_2018(0.005, 0.9)
    change(result)
    return result


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["space"].update({"NaN": 1}), "space: unknown hyperparameter(s): 'NaN'"),
        (lambda r: r["space"].update({"hidden_size": "big"}), "'hidden_size' must be a finite number, got 'big'"),
        (lambda r: r["space"].update({"num_layers": {"a": 1}}), "'num_layers' must be a finite number"),
        (lambda r: r["space"].update({"learning_rate": 10**400}), "an integer of about 400 digits"),
        (lambda r: r["space"].update({"larnn_mode": "sideways"}), "larnn_mode must be one of"),
        (lambda r: r.update(status="maybe"), "'status' must be one of ok, fail, got \"maybe\""),
        (lambda r: r.update(best_train_accuracy={}), "'best_train_accuracy' must be a finite number"),
        (lambda r: r.update(model_name=["lstm"]), "'model_name' must be text"),
        (
            lambda r: r["history"]["validation_losses"].append(0.3),
            "validation_accuracies has 2, validation_losses has 3 values (not one length)",
        ),
        (lambda r: r["history"].update(train_losses=[1.0]), "train_accuracies has 2, train_losses has 1 values"),
        (lambda r: r["history"].update(weights=[1.0]), 'history has an unknown curve "weights"'),
        (
            lambda r: r["history"].update(train_accuracies=[0.1] * 3, train_losses=[1.0] * 3),
            "3 training steps are not a whole number of 2 epochs",
        ),
    ],
)
def test_an_imported_result_is_checked_field_by_field(change, message, tmp_path, capsys):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(_changed_2018_result(change)))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert cli.main(["import-results", str(path), "--name", "old", "--store", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"skipped {path}: ") and message in err[0], err


def test_a_2018_result_with_per_step_training_curves_is_imported(tmp_path, capsys):
    """The 2018 files measured training every step and validation every epoch (700 and 25 values)."""
    path = tmp_path / "result.json"
    steps = {
        "train_accuracies": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        "train_losses": [1.0] * 6,
        "train_f1_scores": [0.4] * 6,
    }
    path.write_text(json.dumps(_changed_2018_result(lambda r: r["history"].update(steps))))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert cli.main(["import-results", str(path), "--name", "old", "--store", url]) == 0
    assert "imported 1 trial(s)" in capsys.readouterr().out
    # two epochs of three steps: each epoch's training numbers are its steps' mean, and the
    # validation curves, one value an epoch, are kept (not dropped for the epochs 3 to 6 they lack)
    (trial,) = open_store(url).trials("old")
    assert [round(e.train_accuracy, 6) for e in trial.result.epochs] == [0.2, 0.5]
    assert [e.validation_accuracy for e in trial.result.epochs] == [0.6, 0.9]
    assert cli.main(["best", "old", "--format", "json", "--store", url]) == 0
    assert json.loads(capsys.readouterr().out)[0]["epochs"] == 2


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_import_refuses_what_is_not_a_regular_file_without_waiting_on_it(kind, tmp_path, capsys):
    path = {"fifo": tmp_path / "fifo", "device": "/dev/zero", "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # nobody writes to it: reading it would wait forever
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert cli.main(["import-results", str(path), "--name", "old", "--store", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = "not readable (Is a directory)" if kind == "directory" else "not a regular file"
    assert err == [f"skipped {path}: {expected}"]


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "nosuch"],
        ["best", "nosuch"],
        ["trials", "nosuch"],
        ["plot", "nosuch", "--out", "{tmp}/plots"],
        ["submit", "smoke", "--name", "bad name"],
        ["submit", "{tmp}/space.yaml", "--name", "refused"],
        ["import-results", "{tmp}/space.yaml", "--name", "nothing"],
    ],
)
def test_a_command_that_reads_or_is_refused_creates_no_store_or_folder(argv, tmp_path, capsys):
    (tmp_path / "space.yaml").write_text("space:\n  hidden_size: 4096\n  attention_heads: 2730\n")
    url = f"sqlite:///{tmp_path / 'new' / 'store.db'}"
    cli.main([arg.format(tmp=tmp_path) for arg in argv] + ["--store", url])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"], capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["submit", "smoke", "--name", "x" * 100_000], "must be 1 to 100 letters"),
        (["spaces", "show", "y" * 100_000], "no built-in space of that name"),
        (["worker", "--slots", "z" * 100_000], "--slots: expected a whole number"),
        (["train", "--config", '{"hidden_size": "' + "w" * 100_000 + '"}'], "'hidden_size' must be a finite number"),
        (["nosuch-command"], "invalid choice: 'nosuch-command'"),
        (["submit", "{tmp}/space.yaml", "--name", "two"], "a space file has description, space (and 2 more)"),
    ],
)
def test_every_refusal_is_one_bounded_line(argv, message, tmp_path, capsys):
    """However large the input it quotes or however many problems it finds: argparse's usage is
    left to --help, a list of problems gives the first and how many more."""
    (tmp_path / "space.yaml").write_text("hidden_size: 8\nattention_heads: 2\n")  # no `space:` mapping
    store = ["--store", f"sqlite:///{tmp_path / 's.db'}"] if argv[0] == "submit" else []
    try:
        code = cli.main([arg.replace("{tmp}", str(tmp_path)) for arg in argv] + store)
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and len(err[0]) <= cli.MAX_MESSAGE and message in err[0], err
