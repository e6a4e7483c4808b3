"""Selection rules: which epoch of a training is its result, and the objective a search ranks it by.

A training reports validation numbers at every epoch; a rule reads them (never the test split) and
names one epoch, whose weights are tested, and one number, higher better, that the search compares
between trials (MEANINGS says what each rule picks). Every rule sees only the epochs trained so
far, and picks either the epoch it picked before or the newest one, so a training keeps a single
copy of the selected weights. The maximum over many noisy epochs rewards luck as well as merit;
a mean over the last epochs averages the epoch-to-epoch noise (fewer epochs while fewer are
trained).

An epoch whose validation loss is not finite is never selected, nor counted in a mean.
benchmarks/bench_protocol.py compares the rules on real trainings; README's Training protocol
section gives its numbers and why DEFAULT_RULE is the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # records reads the rules: no import at run time
    from larnn_core.records import EpochReport

RULES = ("max-accuracy", "min-loss", "last", "last-mean")
DEFAULT_RULE = "max-accuracy"
LEGACY_RULE = "max-accuracy"  # the rule of results and experiments that name none (every earlier release's)
LAST_MEAN_EPOCHS = 5
VALIDATION_SUBJECTS = 5  # training subjects held out for validation, by default
HELP = (  # --selection's, on every command that trains
    f"the selection rule: which epoch is tested and what the search compares ({', '.join(RULES)}; "
    f"larnn_core/selection.py; default {DEFAULT_RULE})"
)
MEANINGS = {  # what `larnn best` says of each rule
    "max-accuracy": "the epoch of highest validation accuracy (the first of equals), ranked by it",
    "min-loss": "the epoch of lowest validation loss, ranked by it",
    "last": "the last epoch, ranked by its validation accuracy",
    "last-mean": f"the last epoch, ranked by the mean validation accuracy of the last {LAST_MEAN_EPOCHS} epochs",
}


class Selection(NamedTuple):
    epoch: int  # from 1
    objective: float  # higher is better


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"selection rule must be one of {', '.join(RULES)}, got {rule[:40]!r}")
    return rule


def select(rule: str, epochs: Sequence[EpochReport]) -> Selection | None:
    """The rule's epoch and objective over epochs (None: no epoch can be selected)."""
    check_rule(rule)
    eligible = [e for e in epochs if e.evaluation_finite and e.validation_accuracy is not None]
    if not eligible:
        return None
    if rule == "max-accuracy":
        best = max(eligible, key=lambda e: (e.validation_accuracy, -e.epoch))
        return Selection(best.epoch, best.validation_accuracy)
    if rule == "min-loss":
        best = min(eligible, key=lambda e: (e.validation_loss, e.epoch))
        return Selection(best.epoch, -best.validation_loss)
    last = eligible[-1]
    if rule == "last":
        return Selection(last.epoch, last.validation_accuracy)
    window = eligible[-LAST_MEAN_EPOCHS:]  # last-mean
    return Selection(last.epoch, sum(e.validation_accuracy for e in window) / len(window))
