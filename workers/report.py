"""What `larnn status` and `larnn best` print: experiment progress and the best trials."""

from __future__ import annotations

import csv
import io
import json
import time

from larnn_core.records import HONEST, TEST_ACCURACY, TEST_PICKED, VALIDATION_ACCURACY
from larnn_core.selection import LEGACY_RULE, MEANINGS
from workers.records import DONE, PRUNED, RUNNING, STATE_NAMES, Experiment, Trial
from workers.slots import SLOT
from workers.store import BaseStore


def best_trials(store: BaseStore, name: str, top: int = 10, include_pruned: bool = False) -> list[dict]:
    """Finished trials by validation accuracy, best first (ties: earlier trial first); pruned
    trials (their accuracy is from fewer epochs) only when asked for. Ranked on the trials'
    summaries; only the `top` are read whole."""
    chosen = [t.tid for t in ranked(store.trial_summaries(name), include_pruned)[:top]]
    return rank(store.trials(name, tids=chosen), top, include_pruned)


def ranked(trials: list[Trial], include_pruned: bool = False) -> list[Trial]:
    """Finished trials (or their summaries), best first by the objective of their selection rule
    (under the default rule, the selected epoch's validation accuracy), as best_trials orders them."""
    done = [t for t in trials if t.state == DONE or include_pruned and t.state == PRUNED]
    return sorted(done, key=lambda t: (t.result.loss, t.tid))  # what the search minimised


# how a result's selected epoch was chosen (TrainResult.protocol), as `best` and `status` say it
PROTOCOLS = {
    HONEST: "the epoch chosen on validation subjects, the test split read once with its weights",
    TEST_PICKED: "2018 results: the epoch was chosen on the test set, so their accuracy is a test-picked "
    "test number, not a validation one",
}
SELECTION = {HONEST: VALIDATION_ACCURACY, TEST_PICKED: "test_picked_accuracy"}  # the selection number's name
CHOSEN_ON = {HONEST: "validation", TEST_PICKED: "test (2018)"}  # `status`: where the best trial's epoch was chosen


def protocol(trial: Trial, experiment: Experiment | None = None) -> str:
    """A trial's protocol: its result's, else (a summary, or a result of an earlier release)
    test-picked for an import and honest otherwise."""
    if trial.result.protocol in PROTOCOLS:
        return trial.result.protocol
    return TEST_PICKED if experiment is not None and experiment.imported else HONEST


def rank(trials: list[Trial], top: int, include_pruned: bool = False) -> list[dict]:
    """The best `top` of already-read whole trials, as best_trials rows; the selection number is
    named by the trial's protocol (SELECTION), which each row also says."""
    rows = []
    for t in ranked(trials, include_pruned)[:top]:
        r, chosen = t.result, t.result.chosen
        rows.append(
            {
                "tid": t.tid,
                **({"pruned_at": r.extra.get("pruned_at_epoch")} if include_pruned else {}),
                SELECTION[protocol(t)]: chosen.validation_accuracy,
                TEST_ACCURACY: chosen.test_accuracy,
                "best_epoch": r.best_epoch,
                "epochs": len(r.epochs) or None,
                "wall_time_s": r.wall_time_s if r.wall_time_s is not None else r.extra.get("trial_wall_time_s"),
                "protocol": protocol(t),
                # the rule of an honest result (2018's epochs were picked on the test set: no rule)
                "selection": (r.selection or LEGACY_RULE) if protocol(t) == HONEST else None,
                "hyperparameters": t.point,
            }
        )
    return rows


WIDTH = 100  # columns a terminal shows: `larnn best`'s table fits in them unless --wide


def format_best(rows: list[dict], fmt: str, wide: bool = False) -> str:
    """json and csv: every field. table: the numbers, then only the hyperparameters that differ
    among the trials shown (those they share, once, above), as columns where they fit in WIDTH,
    else as one wrapped `name=value` line under each trial; wide: every hyperparameter as a column."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    names = sorted({k for row in rows for k in row["hyperparameters"]})
    flat = [
        {
            **{k: v for k, v in row.items() if k not in ("hyperparameters", "confirmation")},
            **{k: row["hyperparameters"].get(k, "") for k in names},
        }
        for row in rows
    ]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(flat[0]) if flat else ["tid"])
        writer.writeheader()
        writer.writerows(flat)
        return out.getvalue()
    if not rows:
        return table(flat)
    confirmed = _confirmed_lines(rows)
    rows = [{k: v for k, v in row.items() if k not in (*CONFIRMED, "confirmation")} for row in rows]
    flat = [{k: v for k, v in row.items() if k not in CONFIRMED} for row in flat]
    return "\n".join([*_best_table(rows, flat, names, wide), *confirmed])


SAID_ABOVE = ("protocol", "selection")  # a row's fields that lines above `best`'s table say once


def _best_table(rows: list[dict], flat: list[dict], names: list[str], wide: bool) -> list[str]:
    said = sorted({row["protocol"] for row in rows})
    header = [line for name in said for line in wrapped(f"protocol: {name}:", PROTOCOLS[name].split())]
    rules = sorted({row["selection"] for row in rows if row.get("selection")})
    header += [line for rule in rules for line in wrapped(f"selection: {rule}:", MEANINGS[rule].split())]
    flat = [{k: v for k, v in row.items() if k not in SAID_ABOVE} for row in flat]
    if wide:
        return [*header, table(flat)]
    shared = [k for k in names if len({_cell(r["hyperparameters"].get(k)) for r in rows}) == 1]
    varying = [k for k in names if k not in shared]
    lines = header + wrapped(
        f"same in all {len(rows)}:", [f"{k}={_cell(rows[0]['hyperparameters'][k])}" for k in shared]
    )
    columns = table([{k: v for k, v in r.items() if k not in shared} for r in flat])
    if max(map(len, columns.splitlines())) <= WIDTH:
        return [*lines, columns]
    numbers = table(
        [{k: v for k, v in row.items() if k not in ("hyperparameters", *SAID_ABOVE)} for row in rows]
    ).splitlines()
    lines.append(numbers[0])
    for row, line in zip(rows, numbers[1:]):
        point = row["hyperparameters"]  # an LSTM's has none of the LARNN's own: left out, not blank
        lines += [line, *wrapped("     ", [f"{k}={_cell(point[k])}" for k in varying if k in point])]
    return lines


CONFIRMED = ("confirmed_validation", "confirmed_test")  # a row's confirmation (workers/confirm.with_confirmed)


def _confirmed_lines(rows: list[dict]) -> list[str]:
    """The confirmed trials' figures, as a table of their own under the best trials' (beside them
    they would not fit in WIDTH)."""
    confirmed = [row for row in rows if row.get("confirmation")]
    if not confirmed:
        return []
    return [
        f"confirmed by {confirmed[0]['confirmation']['experiment']} (larnn confirm): mean [95% interval] "
        "over its seeds",
        table([{"tid": row["tid"], **{k: row[k] for k in CONFIRMED}} for row in confirmed]),
    ]


def wrapped(lead: str, words: list[str]) -> list[str]:
    """lead and words joined by spaces in lines of at most WIDTH (continuations indented)."""
    lines, line = [], lead
    for word in words:
        if len(line) + 1 + len(word) > WIDTH and line.strip():
            lines.append(line)
            line = " " * 6 + word
        else:
            line += " " + word
    return [*lines, line] if words else []


def _cell(value) -> str:
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3g}"  # a learning rate or an L2 weight: its digits, not 0.0000
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return "" if value is None else str(value)


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no finished trials yet)"
    columns = list(rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


Snapshot = list[tuple[Experiment, list[Trial]]]


def read(store: BaseStore, names: list[str] | None = None) -> Snapshot:
    """Each experiment (all, or those named) with its trials: `larnn status` reads the store once
    and prints every part from this. Finished and queued trials are read as summaries (their
    curves are never shown), running ones whole (their latest epoch is)."""
    snapshot = []
    for experiment in store.experiments():
        if names and experiment.name not in names:
            continue
        summaries = store.trial_summaries(experiment.name)
        running = {
            t.tid: t for t in store.trials(experiment.name, tids=[t.tid for t in summaries if t.state == RUNNING])
        }
        snapshot.append((experiment, [running.get(t.tid, t) for t in summaries]))
    return snapshot


def status_rows(snapshot: Snapshot, live_within_s: float = 120.0) -> list[dict]:
    """Per experiment: trials by state, best so far, live workers and an ETA."""
    rows = []
    for experiment, trials in snapshot:
        counts = {label: sum(t.state == state for t in trials) for state, label in STATE_NAMES.items()}
        in_flight = live(trials, live_within_s)
        processes = {process(t.owner) for t in in_flight}  # worker processes (one per slot's owner's worker)
        durations = [t.refresh_time - t.book_time for t in trials if t.state == DONE and t.book_time]
        remaining = experiment.max_evals - counts["done"] - counts["failed"] - counts["pruned"]
        eta = (
            (sum(durations) / len(durations) * remaining / max(1, len(in_flight))) if durations and remaining else None
        )
        best = ranked(trials)[:1]
        ended = (
            "failed" if experiment.failure else "done" if remaining <= 0 else "stopped" if experiment.stopped else None
        )
        rows.append(
            {
                "experiment": experiment.name,
                "state": ended or "active",
                "algorithm": experiment.algorithm,
                "budget": experiment.max_evals,
                **counts,
                "best": best[0].result.chosen.validation_accuracy if best else None,
                "chosen_on": CHOSEN_ON[protocol(best[0], experiment)] if best else None,
                "its_test": best[0].result.chosen.test_accuracy if best else None,
                "workers": len(processes),
                "eta": ended if ended else _duration(eta) if eta is not None else "?",
            }
        )
    return rows


def live(trials: list[Trial], live_within_s: float) -> list[Trial]:
    """Running trials that their worker refreshed lately (a dead worker's trials go stale)."""
    now = time.time()
    return [t for t in trials if t.state == RUNNING and now - (t.refresh_time or 0) < live_within_s]


def process(owner: str) -> str:
    """The worker process a trial's owner belongs to (a slot's owner names its worker)."""
    match = SLOT.match(owner or "")
    return match["worker"] if match else owner


def running_lines(snapshot: Snapshot) -> list[str]:
    """One line per running trial: its latest reported epoch and accuracy."""
    lines = []
    for experiment, trials in snapshot:
        lines += [_running_line(experiment.name, t) for t in trials if t.state == RUNNING]
    return lines


def _running_line(name: str, trial: Trial) -> str:
    last = trial.curve[-1] if trial.curve else None
    progress = (
        f"epoch {last.epoch}, validation accuracy {_cell(last.validation_accuracy)}"
        if last
        else "no epoch reported yet"
    )
    return f"{name} trial {trial.tid} running on {trial.owner}: {progress}"


def worker_lines(snapshot: Snapshot, live_within_s: float = 120.0) -> list[str]:
    """One line per live worker process: its busy slots (`larnn worker --slots N`) and their trials.
    A slot that is between trials has nothing in the store, so only busy slots can be shown."""
    busy = {}
    for _, trials in snapshot:
        for t in live(trials, live_within_s):
            match = SLOT.match(t.owner)
            worker, slot, slots = (
                (match["worker"], int(match["slot"]), int(match["slots"])) if match else (t.owner, 1, 1)
            )
            busy.setdefault((worker, slots), []).append((slot, f"{t.exp_key}/{t.tid}"))
    return [
        f"worker {worker}: {len(running)} of {slots} slot(s) busy: "
        + ", ".join(f"slot {slot} {trial}" for slot, trial in sorted(running))
        for (worker, slots), running in sorted(busy.items())
    ]


def failures(snapshot: Snapshot) -> list[str]:
    """One line per failed or stopped experiment: its name and why."""
    lines = []
    for e, _ in snapshot:
        if e.failure:
            lines.append(f"{e.name} failed: {e.failure['reason']}")
        elif e.stopped:
            lines.append(f"{e.name} stopped: {e.stopped['reason']}")
    return lines


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else f"{m}m{s:02d}s"
