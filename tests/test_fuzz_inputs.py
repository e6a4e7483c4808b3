"""Nothing a user passes in prints a traceback or hangs: space files (any bytes), --config, 2018
result files, CLI numbers and store URLs. Property
tests with Hypothesis, then a regression test for each class of input that once did."""

import json
import string
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.import2018 import read_result
from larnn_core import cli
from larnn_core.commands import read_config
from larnn_core.hparams import HParams
from search_spaces import SpaceError, load_space
from search_spaces.format import parse_text
from search_spaces.space import builtin_path, from_document
from tests.support.trees import scalars, trees

FUZZ = settings(max_examples=150, deadline=timedelta(seconds=3), suppress_health_check=[HealthCheck.too_slow])
SMOKE = builtin_path("smoke").read_text()


def outcome(raw: bytes) -> str:
    """'accepted' or 'refused'; anything but the project's own SpaceError fails the test. An
    accepted space samples only points that build a valid hyperparameter set."""
    try:
        document = parse_text(raw, "fuzz.yaml")
        space = from_document(document, "fuzz", source="fuzz.yaml")
    except SpaceError as error:
        assert len(str(error)) < 20_000, "messages quote at most a few hundred characters of a value"
        return "refused"
    rng = np.random.default_rng(0)
    for _ in range(3):
        HParams.from_dict(space.sample(rng))
    return "accepted"


@FUZZ
@given(st.binary(max_size=3000))
def test_any_bytes(raw):
    outcome(raw)


@FUZZ
@given(trees, st.booleans())
def test_any_tree_as_yaml_or_json(tree, as_json):
    document = {"space": tree} if not isinstance(tree, dict) or "space" not in tree else tree
    text = json.dumps(document) if as_json else yaml.safe_dump(document)
    outcome(text.encode())


@FUZZ
@given(st.integers(0, len(SMOKE)), st.integers(0, 40), st.text(alphabet=st.characters(), max_size=40))
def test_a_built_in_space_mutated(position, cut, insert):
    """A valid file with a stretch cut out and any text spliced in: deleted keys, swapped types,
    control characters, broken syntax."""
    outcome((SMOKE[:position] + insert + SMOKE[position + cut :]).encode("utf-8", "surrogatepass"))


@FUZZ
@given(
    st.sampled_from(sorted(HParams().to_dict())),
    st.sampled_from(["uniform", "quniform", "loguniform", "qloguniform", "normal", "qnormal", "randint"]),
    st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**66), 2**66), min_size=1, max_size=4),
)
def test_any_distribution_of_any_hyperparameter(name, kind, args):
    """Huge, tiny, inverted, equal, non-finite bounds and steps for every hyperparameter."""
    outcome(yaml.safe_dump({"space": {name: {kind: args}}}).encode())


@FUZZ
@given(trees)
def test_any_config(tree):
    text = json.dumps(tree)
    try:
        HParams.from_dict(read_config(text if text.lstrip()[:1] in "{[" else json.dumps({"hidden_size": tree})))
    except ValueError:
        pass


DEEP = "space:\n  hidden_size: " + "[" * 5000 + "]" * 5000 + "\n"
ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "space: {hidden_size: [*f, *f]}\n"
)
BRANCHES = "space:\n" + "".join(f"  b{i}: {{choice: [{{num_layers: 1}}, {{num_layers: 2}}]}}\n" for i in range(24))


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"space:\n  hidden_size: 8\x07\n", "is not allowed (control characters are not text)"),
        ("space:\n  hidden_size: 8\n".encode("utf-16"), "is not UTF-8 text"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "is not UTF-8 text"),
        (DEEP.encode(), "nested deeper than 32 levels"),
        (ALIAS_BOMB.encode(), "YAML aliases (*name) are not allowed"),
        (b"space:\n  ? [a, b]\n  : 1\n", "a key must be plain text"),
        (b"space:\n  hidden_size: !!set {8, 16}\n", "space.hidden_size: a set is not a value a space holds"),
        (b"space:\n  hidden_size: 2024-01-01\n", "space.hidden_size: a date is not a value a space holds"),
        (b"space:\n  learning_rate: .nan\n", "space.learning_rate: nan is not a number"),
        (b"space:\n  batch_size: 9223372036854775808\n", "space.batch_size: 9223372036854775808 is too large"),
        (b"space:\n  decay_each_N_epoch: {quniform: [1, 10, 1.0e-320]}\n", "is too small: more than 1e+09 steps"),
        (b"space:\n  learning_rate: {base: 0.01, log_multiplier: [-300, 300]}\n", "is out of reach"),
        (b"space:\n  learning_rate: {base: 0.01, log_multiplier: [-1.0e+300, 1.0e+300]}\n", "-1e+300 is too large"),
        (b"space:\n  hidden_size: 1.0e+307\n", "space.hidden_size: 1e+307 is too large"),
        (b"space:\n  hidden_size: 1.0e+18\n", "hidden_size can be 1000000000000000000 after rounding; it must lie in"),
        (b"space:\n  num_layers: {quniform: [1, 1.0e+17, 1.0e+9]}\n", "it must lie in [1, 16]"),
        (b"space:\n  training_epochs: 18446744073709551615\n", "is too large"),
        (b"space:\n  learning_rate: {uniform: [0.001, .inf]}\n", "inf is not a number"),
        (b"space:\n  larnn_window_size: {randint: [1, 1.0e+18]}\n", "it must lie in [1, 128]"),
        (b"space:\n  dropout_drop_proba: {uniform: [0.1, 0.1]}\n", "low equals high (0.1): write the fixed value"),
        (BRANCHES.encode(), "more than 4096 sub-spaces"),
        (b"space:\n  num_layers: " + b"x" * 5000 + b"\n", "xxx... (5002 characters)"),
        (b"space:\n  attention_heads: 0.25\n", "attention_heads can be 0 after rounding"),  # divided hidden_size by 0
    ],
)
def test_each_class_that_once_broke_is_refused_with_its_field(raw, message, tmp_path, capsys):
    with pytest.raises(SpaceError) as refused:
        from_document(parse_text(raw, "bad.yaml"), "bad", source="bad.yaml")
    assert message in str(refused.value) and len(str(refused.value)) < 2000
    path = tmp_path / "bad.yaml"
    path.write_bytes(raw)
    assert cli.main(["spaces", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_file_past_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"#" * ((1 << 20) + 1))
    with pytest.raises(SpaceError, match="bytes; a space file has at most"):
        load_space(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"hidden_size": NaN}', "must be a finite number, got nan"),
        ('{"batch_size": 1e400}', "must be a finite number, got inf"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
        ('{"learning_rate": 100}', r"learning_rate must be in (0, 10]"),
    ],
)
def test_config_is_bounded(text, message):
    with pytest.raises(ValueError) as refused:
        HParams.from_dict(read_config(text))
    assert message in str(refused.value)


def test_every_built_in_space_still_passes():
    for name in ("smoke", "paper-round1", "paper-round2", "larnn-vs-lstm"):
        assert outcome(builtin_path(name).read_bytes()) == "accepted"


def test_printable_text_is_never_a_traceback():
    """A sanity check of the harness itself: plain text that is not a space is refused."""
    assert outcome(string.ascii_letters.encode()) == "refused"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["submit", "smoke", "--name", "x", "--max-evals", "1e999"], "--max-evals: expected a whole number"),
        (["submit", "smoke", "--name", "x", "--max-evals", "0"], "--max-evals: must be at least 1"),
        (["submit", "smoke", "--name", "x", "--seed", str(2**64)], "--seed: must be between 0 and 4294967295"),
        (["worker", "--heartbeat", "nan"], "--heartbeat: must be a positive number of seconds"),
        (["worker", "--stale-after", "-5"], "--stale-after: must be a positive number of seconds"),
        (["best", "x", "--top", "-1"], "--top: must be at least 1"),
    ],
)
def test_cli_numbers_are_refused_in_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--store", f"sqlite:///{tmp_path / 's.db'}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "s.db").exists()


def test_a_huge_epoch_count_is_refused_by_its_range(capsys):
    assert cli.main(["train", "--epochs", "10" * 30]) == 2
    err = capsys.readouterr().err
    assert "training_epochs must be in [1, 10000]" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "url, message",
    [
        ("mongodb://", "invalid MongoDB store URL: Must provide at least one hostname"),
        ("mongodb://a:b:c@host", "invalid MongoDB store URL: Username and password must be escaped"),
        ("ftp://host/x", "unknown store URL"),
    ],
)
def test_store_urls_are_refused_in_one_line(url, message, capsys):
    assert cli.main(["status", "--store", url]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@FUZZ
@given(
    trees
    | st.fixed_dictionaries(
        {"space": trees, "loss": scalars, "status": scalars, "best_validation_accuracy": scalars, "history": trees}
    ),
    st.binary(max_size=200),
    st.booleans(),
)
def test_any_imported_result_file(tree, raw, as_bytes):
    """2018 result files: any JSON tree (or one shaped like a result), or any bytes."""
    path = Path(tempfile.mkdtemp()) / "result.json"
    path.write_bytes(raw if as_bytes else json.dumps(tree).encode())
    try:
        read_result(path)
    except ValueError:
        pass


def test_a_deeply_nested_result_file_is_refused(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match="nested too deeply"):
        read_result(path)
