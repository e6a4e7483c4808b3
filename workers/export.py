"""`larnn export`: a trial's kept model out of the store, as a file anyone can load.

Workers keep each ended trial's selected-epoch weights in the store (as many as the experiment's
keep_artifacts says); this writes one of them as an exported model (larnn_core/exported.py: MODEL.pt
and MODEL.json), after checking the stored file against its checksum and the trial it belongs to.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from workers.commands import STORE_HELP
from workers.records import MODEL, Trial
from workers.report import ranked
from workers.store import BaseStore, open_store
from workers.store.base import DamagedFile


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write the best (or a given) trial's trained model to a file",
        description="Write a trial's kept model (its selected epoch's weights) as OUT (a .pt state dict "
        "that loads with torch.load(OUT, weights_only=True)) and OUT's .json beside it (hyperparameters, "
        "data, normalisation, protocol, seed, code version, metrics at that epoch). `larnn evaluate OUT` "
        "rebuilds and evaluates it.",
    )
    parser.add_argument("experiment", help="experiment name")
    parser.add_argument(
        "--trial", type=_tid, default=None, metavar="N", help="this trial (default: the best finished one)"
    )
    parser.add_argument("--out", required=True, help="the .pt file to write (its description goes beside it as .json)")
    parser.add_argument("--store", default=None, help=STORE_HELP)
    parser.set_defaults(run=_export)


def _tid(text: str) -> int:
    """argparse type: a trial id (0, 1, ...)."""
    if not text.isdigit() or len(text) > 12:
        raise argparse.ArgumentTypeError(f"expected a trial id (0, 1, ...), got {text[:40]!r}")
    return int(text)


def _export(args) -> None:
    from larnn_core.exported import description_path

    out = Path(args.out)
    description = export(open_store(args.store, read_only=True), args.experiment, args.trial, out)
    metrics = description["metrics"]
    print(
        f"exported trial {args.experiment}/{description['trial']} (epoch {description['epoch']}: validation "
        f"accuracy {metrics['validation_accuracy']:.4f}, test {metrics['test_accuracy']:.4f}) to {out} "
        f"and {description_path(out)}"
    )
    print(f"  evaluate:  larnn evaluate {out}")


def chosen_trial(store: BaseStore, name: str, tid: int | None) -> Trial:
    """The trial asked for, or the best finished one (as `larnn best` ranks them); ValueError,
    naming the trials that have a model, when it has none."""
    summaries = store.trial_summaries(name)
    with_model = [t.tid for t in summaries if MODEL in t.files]
    choices = f"trials with a model: {', '.join(map(str, with_model[:20]))}" if with_model else "no trial has one"
    if tid is None:
        best = ranked(summaries)
        if not best:
            raise ValueError(f"experiment {name!r} has no finished trial yet")
        trial, which = best[0], f"its best trial ({best[0].tid})"
    else:
        trial = next((t for t in summaries if t.tid == tid), None)
        if trial is None:
            raise ValueError(f"experiment {name!r} has no trial {tid} (it has {len(summaries)})")
        which = f"trial {tid}"
    if MODEL not in trial.files:
        raise ValueError(
            f"{which} of {name!r} has no model kept (the experiment's keep_artifacts, or it ended before "
            f"models were kept); {choices}"
        )
    return trial


def export(store: BaseStore, name: str, tid: int | None, out: Path) -> dict[str, Any]:
    """Writes the trial's model to out (and its description beside it); returns the description.
    Nothing is written when the stored model is damaged or is not this trial's."""
    from larnn_core.checkpoint import DESCRIBED, IDENTITY, read_model  # torch: only when a model is read
    from larnn_core.exported import write_export

    store.get_experiment(name)  # UnknownExperiment: one line
    trial = chosen_trial(store, name, tid)
    try:
        _, data = store.read_file(name, trial.tid, MODEL)
    except DamagedFile as error:
        raise ValueError(f"{error}: it cannot be exported") from None
    weights, stored = read_model(data)
    (whole,) = store.trials(name, [trial.tid])
    result = whole.result.to_document()
    for field in IDENTITY:
        if stored.get(field) != result.get(field):
            raise ValueError(f"the model kept for trial {name}/{trial.tid} is not its training's (its {field} differs)")
    chosen = whole.result.chosen
    description = {
        "experiment": name,
        "trial": trial.tid,
        "epoch": whole.result.best_epoch,
        **{field: result.get(field) for field in (*IDENTITY, *DESCRIBED)},
        "metrics": {
            metric: getattr(chosen, metric)
            for metric in ("validation_accuracy", "validation_f1", "test_accuracy", "test_f1", "test_loss")
        },
    }
    write_export(out, weights, description)
    return description
