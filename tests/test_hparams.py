import pytest

from larnn_core.commands import read_config
from larnn_core.hparams import HParams

PAPER_2018_SPACE = {  # the `space` dict of the best 2018 result file
    "hidden_size": 81,
    "attention_heads": 27,
    "larnn_window_size": 38,
    "larnn_mode": "residual",
    "use_positional_encoding": False,
    "activation_on_keys_and_values": True,
    "num_layers": 3,
    "is_stacked_residual": True,
    "dropout_drop_proba": 0.0889,
    "learning_rate": 0.006027,
    "l2_weight_reg": 0.00065,
    "decay_each_N_epoch": 26,
    "batch_size": 256,
    "training_epochs": 100,
}


def test_a_2018_space_dict_is_accepted_as_is():
    hp = HParams.from_dict(PAPER_2018_SPACE)
    assert {k: hp.to_dict()[k] for k in PAPER_2018_SPACE} == PAPER_2018_SPACE


def test_missing_keys_take_the_defaults():
    assert HParams.from_dict({"hidden_size": 32, "attention_heads": 4}).larnn_window_size == HParams().larnn_window_size


def test_unknown_key_is_refused_with_its_name_and_a_suggestion():
    with pytest.raises(ValueError, match=r"'hiden_size' \(did you mean 'hidden_size'\?\)"):
        HParams.from_dict({"hiden_size": 32})


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"hidden_size": 3.5}, "hidden_size.*integer"),
        ({"use_positional_encoding": "yes"}, "use_positional_encoding.*true or false"),
        ({"larnn_mode": "dense"}, "larnn_mode must be one of"),
        ({"dropout_drop_proba": 1.0}, r"dropout_drop_proba must be in \[0, 1\)"),
        ({"batch_size": 0}, r"batch_size must be in \[1, 8192\], got 0"),
        ({"hidden_size": 10**307}, r"hidden_size must be in \[1, 4096\]"),
        ({"learning_rate": float("inf")}, "learning_rate' must be a finite number, got inf"),
        ({"training_epochs": 2**64}, r"training_epochs must be in \[1, 10000\]"),
        ({"num_layers": [1] * 10000}, r"must be a finite number, got \[1, 1, .*\.\.\. \(30000 characters\)"),
        ({"x" * 5000: 1}, r"unknown hyperparameter\(s\): 'xxxx.*\.\.\. \(5002 characters\)"),
        ({"norm": "group"}, "norm must be one of"),
    ],
)
def test_bad_values_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        HParams.from_dict(bad)


def test_integral_floats_become_ints():
    """hyperopt's quniform yields floats such as 27.0."""
    assert HParams.from_dict({"attention_heads": 27.0}).attention_heads == 27


def test_config_from_file_or_inline(tmp_path):
    path = tmp_path / "best.json"
    path.write_text('{"hidden_size": 81}')
    assert read_config(str(path)) == {"hidden_size": 81}
    assert read_config('{"num_layers": 2}') == {"num_layers": 2}
    with pytest.raises(ValueError, match="JSON object"):
        read_config("[1, 2]")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_config("{oops")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_config(str(tmp_path / "missing.json"))


def test_readme_table_shows_every_range_and_choice_as_defined():
    """README's hyperparameter table is the documented copy of the vocabulary: no drift."""
    from pathlib import Path

    from larnn_core.hparams import CHOICES, MEANINGS, RANGES

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = {
        cells[0]: cells
        for cells in (
            [c.strip() for c in line.strip("|").split("|")] for line in readme.splitlines() if line.startswith("| ")
        )
    }
    for name, valid in RANGES.items():
        assert rows[name][2] == str(valid), name
    for name, allowed in CHOICES.items():
        assert rows[name][2] == ", ".join(allowed), name
    for name, default in HParams().to_dict().items():
        assert rows[name][1] == (str(default).lower() if isinstance(default, bool) else str(default)), name
        assert rows[name][3] == MEANINGS[name], name
