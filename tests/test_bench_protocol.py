"""benchmarks/bench_protocol.py's reading of finished trainings: each rule applied afterwards to
validation only, the test accuracy taken at the epoch it selected, pairs matched by configuration
and seed."""

import pytest

from tests.support.benchmarks import load


@pytest.fixture(scope="module")
def bench():
    return load("bench_protocol")


def run(config, variant, seed, validation, test, losses=None):
    losses = losses or [1 - v for v in validation]
    curves = [
        {"epoch": e, "validation_accuracy": v, "validation_loss": loss, "test_accuracy": t}
        for e, (v, t, loss) in enumerate(zip(validation, test, losses), 1)
    ]
    return dict(config=config, variant=variant, seed=seed, epochs=len(curves), status="ok", curves=curves)


def test_each_rule_is_scored_on_the_test_accuracy_at_the_epoch_it_selects(bench):
    runs = [
        # a lucky validation peak at epoch 2 whose test accuracy is low; the last epochs are better
        run("a", "base", 0, [0.80, 0.95, 0.85, 0.86], [0.80, 0.70, 0.88, 0.90], [0.5, 0.45, 0.3, 0.35]),
        run("b", "base", 0, [0.60, 0.70, 0.75, 0.80], [0.60, 0.70, 0.75, 0.78]),
        run("a", "cosine", 0, [0.80, 0.85, 0.87, 0.88], [0.80, 0.85, 0.90, 0.91]),
        run("b", "cosine", 0, [0.60, 0.65, 0.70, 0.72], [0.60, 0.62, 0.70, 0.73]),
        dict(config="c", variant="base", seed=0, epochs=4, status="fail", curves=[]),  # left out
    ]
    table = bench.outcomes(runs)
    assert table[("base", "max-accuracy")] == {("a", 0): (0.95, 0.70), ("b", 0): (0.80, 0.78)}
    assert table[("base", "min-loss")][("a", 0)] == (-0.3, 0.88)
    assert table[("base", "last")][("a", 0)] == (0.86, 0.90)
    assert table[("base", "last-mean")][("a", 0)][1] == 0.90
    rows = {(r["variant"], r["rule"]): r for r in bench.report(runs)["rows"]}
    # paired with the base's max-accuracy over the same configuration and seed
    assert rows[("base", "last")]["paired_with_base"][0] == pytest.approx(((0.90 - 0.70) + (0.78 - 0.78)) / 2)
    assert rows[("cosine", "last")]["paired_with_base"][0] == pytest.approx(((0.91 - 0.70) + (0.73 - 0.78)) / 2)
    assert rows[("base", "max-accuracy")]["trainings"] == 2
    assert rows[("cosine", "max-accuracy")]["spearman"] == pytest.approx(1.0)
