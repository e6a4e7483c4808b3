"""Search-level stops: `--stop-after-no-improvement N` and `--stop-after DURATION` end an
experiment early. A worker checks them under the experiment's suggestion lease, before it suggests
a trial; a stopped experiment gets no more suggestions (queued and running trials still finish).
`submit --extend-to` gives it a new budget and starts its rules afresh from then (`resumed`)."""

from __future__ import annotations

import math
import re

from workers.records import DONE, Experiment, TrialOutcome

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_S = 100 * 365 * 86400.0  # stored as a JSON number: finite (Infinity breaks SQLite's JSON functions)


def duration(text: str) -> float:
    """`--stop-after`: a number of seconds, or with a unit: 90m, 12h, 2d. ValueError otherwise."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    seconds = float(match.group(1)) * UNITS[match.group(2) or "s"] if match else math.nan
    if not 0 < seconds <= MAX_DURATION_S:  # NaN too; a number past a float's range reads as inf
        raise ValueError(
            f"--stop-after: expected a positive duration up to 100 years, such as 3600, 90m, 12h or 2d, "
            f"got {text[:40]!r}"
        )
    return seconds


def stop_reason(experiment: Experiment, trials: list[TrialOutcome], now: float) -> str | None:
    """Why the experiment should stop now, or None."""
    rules = experiment.stop
    since = experiment.resumed or experiment.created
    if rules.get("after_s") is not None and now - since >= rules["after_s"]:
        return f"ran for {rules['after_s']:.0f} s (--stop-after)"
    patience = rules.get("no_improvement")
    if patience is None:
        return None
    done = sorted((t for t in trials if t.state == DONE), key=lambda t: t.refresh_time or 0)
    best, best_tid, without = -float("inf"), None, 0
    for trial in done:
        objective = -trial.loss  # the selection rule's (the selected validation accuracy by default)
        if objective > best:
            best, best_tid, without = objective, trial.tid, 0
        elif (trial.refresh_time or 0) > since:
            without += 1
    if without >= patience:
        return f"no new best in the last {without} completed trials (best {best:.4f}, trial {best_tid})"
    return None
