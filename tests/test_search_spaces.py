import json

import numpy as np
import pytest
import torch
from hyperopt import Trials, fmin, rand, tpe

from larnn_core import cli
from larnn_core.classifier import build_model
from larnn_core.hparams import HParams
from search_spaces import Space, SpaceError, builtin_names, from_document, load_space
from search_spaces.format import Choice, Distribution, Fixed, Scaled
from search_spaces.sampling import finalize

PAPER_ROUND1 = {
    "learning_rate": Scaled(0.005, -0.5, 0.5),
    "decay_each_N_epoch": Distribution("quniform", (2.501, 10.499, 1)),
    "l2_weight_reg": Scaled(0.005, -1.3, 1.3),
    "training_epochs": Fixed(25),
    "batch_size": Fixed(256),
    "dropout_drop_proba": Distribution("uniform", (0.05, 0.5)),
    "hidden_size": Scaled(64, -0.6, 0.6),
    "attention_heads": Distribution("quniform", (5.501, 36.499, 1)),
    "larnn_window_size": Distribution("uniform", (10, 50)),
    "larnn_mode": Choice(("residual", "layer")),
    "use_positional_encoding": Choice((False, True)),
    "activation_on_keys_and_values": Choice((False, True)),
    "num_layers": Choice((2, 3)),
    "is_stacked_residual": Choice((False, True)),
}
PAPER_ROUND2 = {
    **PAPER_ROUND1,
    "learning_rate": Scaled(0.006, -0.4, 0.4),
    "decay_each_N_epoch": Distribution("quniform", (5.501, 50.499, 1)),
    "l2_weight_reg": Scaled(0.002, -1.3, 1.3),
    "training_epochs": Fixed(100),
    "hidden_size": Scaled(68, -0.3, 0.3),
    "attention_heads": Distribution("quniform", (19.501, 40.499, 1)),
    "larnn_window_size": Distribution("uniform", (25, 100)),
    "activation_on_keys_and_values": Fixed(True),
    "num_layers": Fixed(3),
    "is_stacked_residual": Fixed(True),
}


def test_builtin_spaces():
    assert set(builtin_names()) >= {"paper-round1", "paper-round2", "larnn-vs-lstm", "smoke"}


@pytest.mark.parametrize("name, expected", [("paper-round1", PAPER_ROUND1), ("paper-round2", PAPER_ROUND2)])
def test_2018_spaces_are_written_exactly(name, expected):
    assert load_space(name).nodes == expected


def test_scaled_form_samples_base_times_log_uniform_multiplier():
    space = from_document({"space": {"learning_rate": {"base": 0.006, "log_multiplier": [-0.4, 0.4]}}}, "t", "t")
    rates = np.array([space.sample(np.random.default_rng(i))["learning_rate"] for i in range(300)])
    assert rates.min() >= 0.006 * np.exp(-0.4) and rates.max() <= 0.006 * np.exp(0.4)
    logs = np.log(rates / 0.006)
    assert abs(logs.mean()) < 0.05 and logs.min() < -0.35 and logs.max() > 0.35  # uniform in log space


@pytest.mark.parametrize("name", builtin_names())
def test_stored_json_samples_the_same_points(name):
    from_file = load_space(name)
    stored = json.loads(from_file.to_json())
    stored["document"]["space"] = dict(sorted(stored["document"]["space"].items(), reverse=True))
    rebuilt = Space.from_json(json.dumps(stored, sort_keys=True))
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(200):
        assert from_file.sample(a) == rebuilt.sample(b)


@pytest.mark.parametrize("name", builtin_names())
def test_a_point_located_in_its_space_trains_that_point(name):
    """What --points and warm starts insert (trial_misc) is read back by workers (point_of) as the
    same point: hyperopt's value of a log-scaled multiplier is the multiplier, not its log."""
    space = load_space(name)
    rng = np.random.default_rng(3)
    for _ in range(100):
        point = space.sample(rng)
        again = space.point_of(space.trial_misc(point, 0)[1])
        assert again.keys() == point.keys()
        for key, value in point.items():
            assert again[key] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), key


@pytest.mark.parametrize("name", builtin_names())
def test_a_thousand_samples_all_build_a_model(name):
    space = load_space(name)
    rng = np.random.default_rng(0)
    x = torch.randn(2, 2, 9)
    with torch.no_grad():
        for i in range(1000):
            model = build_model(HParams.from_dict(space.sample(rng)))
            if i % 50 == 0:  # a forward pass on a sample of them
                assert model.eval()(x).shape == (2, 6)


def test_conditional_space_yields_both_models_and_only_their_hyperparameters():
    space = load_space("larnn-vs-lstm")
    rng = np.random.default_rng(1)
    points = [space.sample(rng) for _ in range(200)]
    models = {p["model"] for p in points}
    assert models == {"larnn", "lstm"}
    for p in points:
        assert ("attention_heads" in p) == (p["model"] == "larnn")


@pytest.mark.parametrize("algo", [tpe.suggest, rand.suggest])
def test_hyperopt_algorithms_run_on_the_expression(algo):
    space = load_space("smoke")
    trials = Trials()
    fmin(
        lambda sample: -space.point(sample)["learning_rate"],
        space.hyperopt(),
        algo=algo,
        max_evals=25,
        trials=trials,
        rstate=np.random.default_rng(0),
        show_progressbar=False,
    )
    assert len(trials.trials) == 25


def test_rounding_rule():
    assert finalize({"num_layers": 2.5, "larnn_window_size": 37.4, "model": "larnn"})["num_layers"] == 3
    assert finalize({"larnn_window_size": 37.5})["larnn_window_size"] == 38
    point = finalize({"hidden_size": 50.4, "attention_heads": 40.0})
    assert point == {"hidden_size": 40, "attention_heads": 40}
    assert finalize({"hidden_size": 70.0, "attention_heads": 20.5}) == {"hidden_size": 63, "attention_heads": 21}
    assert finalize({"hidden_size": 70.0}) == {"hidden_size": 81}  # the default 27 heads: 70/27 = 2.6 -> 3 x 27
    assert finalize({"model": "lstm", "hidden_size": 70.4}) == {"model": "lstm", "hidden_size": 70}
    assert isinstance(finalize({"dropout_drop_proba": np.float64(0.1)})["dropout_drop_proba"], float)


@pytest.mark.parametrize(
    "text",
    [
        "space:\n  larnn_window_size: {uniform: [0.5, 3]}\n",  # 0.5 rounds up to 1
        "space:\n  decay_each_N_epoch: 0.6\n",  # rounds to 1
        "space:\n  hidden_size: 4096\n  attention_heads: 2048\n",  # 2 x 2048: at the range's end
        "space:\n  lr_schedule: {choice: [step, cosine]}\n  weight_averaging: {uniform: [0, 0.999]}\n",
    ],
)
def test_a_space_whose_every_rounded_sample_is_valid_is_accepted(text, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    space = load_space(path)
    rng = np.random.default_rng(0)
    for _ in range(50):
        HParams.from_dict(space.sample(rng))  # sample: the rounding rule, then HParams' own check


def problems_of(tmp_path, text: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as error:
        load_space(path)
    assert str(path) in str(error.value)
    return str(error.value)


@pytest.mark.parametrize(
    "text, field, message",
    [
        (
            "space:\n  hiden_size: 32\n",
            "space.hiden_size",
            "unknown hyperparameter 'hiden_size' (did you mean 'hidden_size'?)",
        ),
        ("space:\n  num_layers: three\n", "space.num_layers", 'num_layers must be a number, got "three"'),
        ("space:\n  larnn_mode: dense\n", "space.larnn_mode", "larnn_mode must be one of residual, layer"),
        (
            "space:\n  use_positional_encoding: {uniform: [0, 1]}\n",
            "space.use_positional_encoding",
            "takes true or false",
        ),
        (
            "space:\n  dropout_drop_proba: {uniform: [0.4, 0.1]}\n",
            "space.dropout_drop_proba.uniform",
            "low (0.4) is greater than high (0.1)",
        ),
        ("space:\n  attention_heads: {choice: []}\n", "space.attention_heads.choice", "is empty"),
        (
            "space:\n  learning_rate: {loguniform: [0, 0.1]}\n",
            "space.learning_rate.loguniform",
            "bounds must be positive",
        ),
        (
            "space:\n  learning_rate: {uniform: [-0.01, 0.1]}\n",
            "space.learning_rate",
            "learning_rate ranges over [-0.01, 0.1]; it must lie in (0, 10]",
        ),
        ("space:\n  learning_rate: {normal: [0.01, 0.001]}\n", "space.learning_rate", "unbounded"),
        (
            "space:\n  hidden_size: {base: -64, log_multiplier: [-0.6, 0.6]}\n",
            "space.hidden_size.base",
            "expected a positive number",
        ),
        (
            "space:\n  decay_each_N_epoch: {quniform: [1, 10, 0]}\n",
            "space.decay_each_N_epoch.quniform",
            "q must be positive",
        ),
        (
            "space:\n  hidden_size: 16\n  attention_heads: {quniform: [2, 40, 1]}\n",
            "space.hidden_size",
            "attention_heads can reach 40 while hidden_size can be as low as 16",
        ),
        (
            "space:\n  hidden_size: 4096\n  attention_heads: 2730\n",
            "space.hidden_size",
            "hidden_size 4096 rounded to a multiple of attention_heads 2730 is 5460, past hidden_size's range",
        ),
        (
            "space:\n  hidden_size: {quniform: [3000, 4096, 1]}\n  attention_heads: {quniform: [1, 3000, 1]}\n",
            "space.hidden_size",
            "past hidden_size's range [1, 4096]",
        ),
        (
            "space:\n  larnn_window_size: {uniform: [0, 10]}\n",
            "space.larnn_window_size",
            "can be 0 after rounding; it must lie in [1, 128]; the window must hold at least 1 cell",
        ),
        ("space:\n  dropout_drop_proba: {uniform: [0.1, 1.0]}\n", "space.dropout_drop_proba", "it must lie in [0, 1)"),
        ("space:\n  l2_weight_reg: {loguniform: [1e-5, 1e-3]}\n", "space.l2_weight_reg.loguniform[0]", "write 1.0e-5"),
        ("space:\n  batch_size: {gaussian: [1, 2]}\n", "space.batch_size", "expected one of uniform"),
        ("space:\n  batch_size: [64, 128]\n", "space.batch_size", "write {choice: [...]}"),
        ("space:\n  model: {choice: [{model: larnn}, {model: lstm}]}\n", "space.model", "needs a label"),
        (
            "space:\n  hidden_size: 32\n  arch: {choice: [{model: lstm, hidden_size: 16}]}\n",
            "space.arch.choice[0].hidden_size",
            "also set at space.hidden_size",
        ),
        ("space:\n  batch_size: 64\nepochs: 3\n", "epochs", "unknown top-level key"),
        ("description: no space here\n", "space", "missing"),
        ("space:\n  weight_averaging: {uniform: [0.5, 1.5]}\n", "space.weight_averaging", "it must lie in [0, 1)"),
        ("space:\n  lr_schedule: {choice: [step, linear]}\n", "space.lr_schedule", "must be one of step, cosine"),
    ],
)
def test_bad_space_is_refused_with_its_field_named(tmp_path, text, field, message):
    problems = problems_of(tmp_path, text)
    assert f": {field}: " in problems and message in problems, problems


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    assert "line 3, column 1: YAML syntax error" in problems_of(tmp_path, "space:\n  batch_size: [64\n")


def test_file_that_is_not_a_mapping_is_refused(tmp_path):
    assert "must be a mapping with a 'space:' key, got list" in problems_of(tmp_path, "- 1\n- 2\n")


def test_a_key_given_twice_is_refused(tmp_path):
    assert "key 'batch_size' is given twice" in problems_of(tmp_path, "space:\n  batch_size: 1\n  batch_size: 2\n")


def test_every_problem_is_reported_at_once(tmp_path):
    problems = problems_of(tmp_path, "space:\n  hiden_size: 5\n  dropout_drop_proba: {uniform: [0.5, 0.2]}\n")
    assert "hiden_size" in problems and "dropout_drop_proba" in problems


def test_spaces_commands(tmp_path, capsys):
    assert cli.main(["spaces", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in builtin_names())
    assert cli.main(["spaces", "show", "paper-round2"]) == 0
    assert "log_multiplier: [-0.4, 0.4]" in capsys.readouterr().out
    assert cli.main(["spaces", "show", "nope"]) == 2
    assert "built in: larnn-vs-lstm" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("space:\n  dropout_drop_proba: 1.5\n")
    assert cli.main(["spaces", "check", "smoke", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "smoke: ok" in captured.out
    assert f"{bad}: space.dropout_drop_proba: dropout_drop_proba can be 1.5" in captured.err
