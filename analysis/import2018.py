"""Import 2018 LARNN result files (one JSON per trial) as a named experiment, so old searches are
analysed with the same tools. Every file is checked first; invalid ones are reported by name and
skipped, and nothing is written unless the experiment can be created whole."""

from __future__ import annotations

import json
import math
import os
import stat
import time
from pathlib import Path

import numpy as np

from larnn_core.hparams import HParams
from larnn_core.records import (
    HISTORY,
    PER_STEP_2018,
    SELECTED,
    TEST_PICKED,
    VALIDATION_ACCURACY,
    TrainResult,
)
from search_spaces import Space, load_space
from search_spaces.format import quote
from workers.experiment import check_name
from workers.records import DONE, ERROR, Experiment, Objective, Trial
from workers.store import BaseStore

# the 2018 files use the names our result documents keep (larnn_core/records.py: SELECTED, HISTORY)
BEST = SELECTED[VALIDATION_ACCURACY]
REQUIRED = {"space": dict, "loss": (int, float), "status": str, BEST: (int, float), "history": dict}
OPTIONAL = {SELECTED["validation_f1"]: float, "best_train_accuracy": float, "model_name": str, "dataset_name": str}
STATUSES = ("ok", "fail")  # hyperopt's, for a finished trial
# the 2018 curves, by when they were measured: training ones every step, validation ones every epoch
TRAIN_CURVES = PER_STEP_2018
VALIDATION_CURVES = (HISTORY[VALIDATION_ACCURACY], HISTORY["validation_loss"], HISTORY["validation_f1"])
OPTIONAL_CURVES = ("train_f1_scores", HISTORY["validation_f1"])  # the rest are required


MAX_BYTES = 16 << 20  # a 2018 result file is a few kilobytes


def _number(value, finite: bool = True) -> bool:
    """A JSON number a float can hold (NaN allowed where finite is False)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 2**63
    return math.isfinite(value) or (not finite and math.isnan(value))


def _read_bytes(path: Path) -> bytes:
    """A regular file's bytes, at most MAX_BYTES: a FIFO, a device or a directory is refused
    without waiting on it (opened non-blocking, checked on the open descriptor)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ValueError(f"more than {MAX_BYTES} bytes: too large for a result file")
    return data


def _check_history(history: dict) -> None:
    """Known curves only, each a list of numbers; the curves measured together have one length,
    and the steps trained (training curves) are a whole number of epochs (validation curves)."""
    unknown = [name for name in history if name not in TRAIN_CURVES + VALIDATION_CURVES]
    if unknown:
        raise ValueError(f"history has an unknown curve {quote(unknown[0], 60)}")
    lengths = {}
    for curve in TRAIN_CURVES + VALIDATION_CURVES:
        values = history.get(curve)
        if values is None and curve in OPTIONAL_CURVES:
            continue
        if not isinstance(values, list) or not all(_number(v, finite=False) for v in values):
            raise ValueError(f"history.{curve} must be a list of numbers")
        lengths[curve] = len(values)
    for group in (TRAIN_CURVES, VALIDATION_CURVES):
        present = [curve for curve in group if curve in lengths]
        if len({lengths[curve] for curve in present}) > 1:
            counts = ", ".join(f"{curve} has {lengths[curve]}" for curve in present)
            raise ValueError(f"history: {counts} values (not one length)")
    steps, epochs = lengths[TRAIN_CURVES[0]], lengths[VALIDATION_CURVES[0]]
    if (epochs == 0) != (steps == 0) or (epochs and steps % epochs):
        raise ValueError(f"history: {steps} training steps are not a whole number of {epochs} epochs")


def read_result(path: Path) -> dict:
    """A 2018 result as our trial result; ValueError saying what is wrong (never another error)."""
    try:
        raw = _read_bytes(path)
    except OSError as error:
        raise ValueError(f"not readable ({error.strerror})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as error:  # JSON's, UTF-8's, an integer of more digits than Python converts
        raise ValueError(f"not readable JSON ({str(error)[:200]})") from None
    except RecursionError:
        raise ValueError("not readable JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    for key, kind in REQUIRED.items():
        if key not in data:
            raise ValueError(f"missing key {key!r}")
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise ValueError(f"{key!r} has the wrong type ({type(data[key]).__name__})")
    for key in ("loss", BEST):
        if not _number(data[key]):
            raise ValueError(f"{key!r} must be a finite number")
    for key, kind in OPTIONAL.items():
        if key in data and not (_number(data[key]) if kind is float else isinstance(data[key], kind)):
            raise ValueError(f"{key!r} must be {'a finite number' if kind is float else 'text'}")
    if data["status"] not in STATUSES:
        raise ValueError(f"'status' must be one of {', '.join(STATUSES)}, got {quote(data['status'], 60)}")
    model = "lstm" if "lstm" in data.get("model_name", "").lower() else "larnn"
    space = {"model": model, **data["space"]}
    try:
        HParams.from_dict(space)
    except ValueError as error:
        raise ValueError(f"space: {error}") from None
    history = data["history"]
    _check_history(history)
    validation = history[HISTORY[VALIDATION_ACCURACY]]
    return {
        "status": data["status"],
        # the 2018 code evaluated its "validation" curves on the test set and kept their maximum
        "protocol": TEST_PICKED,
        "loss": float(data["loss"]),
        BEST: float(data[BEST]),
        SELECTED["validation_f1"]: data.get(SELECTED["validation_f1"]),
        "best_train_accuracy": data.get("best_train_accuracy"),
        "best_epoch": int(np.argmax(validation)) + 1 if validation else None,
        "history": history,
        "space": space,
        "model_name": data.get("model_name"),
        "data_source": data.get("dataset_name"),
        "imported_from": path.name,
        "finished_at": path.stat().st_mtime,  # the only time a result file keeps: when it was written
    }


PAPER_SPACES = ("paper-round1", "paper-round2")
MIN_TRIAL_S = 1.0  # a LARNN trial takes minutes: files written closer together were copied, not trained


def trial_order(results: list[dict]) -> str:
    """ "file times" when the files' modification times can be when their trials ended (each at
    least MIN_TRIAL_S after the one before), "unordered" when they cannot: a git clone or a copy
    writes every file within moments, in name order, which for 2018 files is accuracy order."""
    times = sorted(r["finished_at"] for r in results)
    return (
        "file times" if all(b - a >= MIN_TRIAL_S for a, b in zip(times, times[1:])) else "unordered"
    )  # the built-in spaces of the 2018 searches


def fitting_space(points: list[dict]) -> Space | None:
    """The first 2018 built-in space that can produce every point, so that the figures draw its
    distributions (log axes for learning_rate and hidden_size); None if neither can."""
    for name in PAPER_SPACES:
        space = load_space(name)
        try:
            for point in points:
                space.trial_misc(point, 0)
        except ValueError:
            continue
        return space if points else None
    return None


def import_results(store: BaseStore, name: str, paths: list[Path]) -> tuple[int, list[str]]:
    """(trials imported, problems as 'file: reason'). Refuses a bad or existing name before reading."""
    check_name(name)
    existing = {e.name for e in store.experiments()}
    if name in existing:
        raise ValueError(f"experiment {name!r} already exists; import under another --name")
    results, problems = [], []
    for path in paths:
        try:
            results.append(read_result(Path(path)))
        except ValueError as error:
            problems.append(f"{path}: {error}")
    if not results:
        return 0, problems
    # in the order they were written (the 2018 file names begin with the accuracy: by name, the
    # optimisation history would be a staircase that never happened)
    results.sort(key=lambda r: (r["finished_at"], r["imported_from"]))
    trials = [
        Trial(name, tid, state=DONE if result["status"] == "ok" else ERROR, result=TrainResult.from_document(result))
        for tid, result in enumerate(results)
    ]
    space = fitting_space([r["space"] for r in results if r["status"] == "ok"])
    store.create_experiment(
        Experiment(
            name,
            json.loads(space.to_json()) if space else None,
            "imported",
            len(results),
            Objective(source="2018 result files"),
            None,
            time.time(),
            space_name=space.name if space else None,
            imported_from=[r["imported_from"] for r in results],
            trial_order=trial_order(results),
        ),
        trials,
    )  # all or nothing
    return len(results), problems
