"""analysis' sub-commands: `larnn plot | trials | import-results`."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from larnn_core.cli import one_line
from workers.commands import STORE_HELP
from workers.store import open_store


def register_plot(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="hyperparameter-influence figures and an offline HTML report",
        description="PNG and SVG figures of one or several experiments (on the same axes, coloured by "
        "experiment) and OUT/index.html, which opens offline in a browser.",
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help="experiments")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--store", default=None, help=STORE_HELP)
    parser.set_defaults(run=_plot)


def _plot(args) -> None:
    from tqdm import tqdm

    from analysis.report import make_report

    store = open_store(args.store, read_only=True)
    with tqdm(total=1, desc="plotting", disable=not sys.stderr.isatty()):
        figures = make_report(store, args.names, Path(args.out))
    print(f"{len(figures)} figures and {Path(args.out) / 'index.html'}")
    for name in args.names:
        failure = store.get_experiment(name).failure
        if failure:
            print(f"note: experiment {name} failed: {failure['reason']}")


def register_trials(subparsers) -> None:
    parser = subparsers.add_parser("trials", help="one row per trial: hyperparameters, metrics, status, times")
    parser.add_argument("names", nargs="+", metavar="NAME", help="experiments")
    parser.add_argument("--export", default=None, metavar="FILE.csv", help="write CSV here instead of printing")
    parser.add_argument("--store", default=None, help=STORE_HELP)
    parser.set_defaults(run=_trials)


def _trials(args) -> None:
    from analysis.frame import export_columns, trials_frame

    frame = export_columns(trials_frame(open_store(args.store, read_only=True), args.names)[0])
    if args.export:
        frame.to_csv(args.export, index=False)
        print(f"{len(frame)} trials written to {args.export}")
    else:
        print(frame.to_string(index=False, max_colwidth=30))


def register_import(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-results",
        help="import 2018 LARNN result files as an experiment",
        description="Import 2018 result files (one JSON per trial: space, loss, status, best_validation_accuracy, "
        "history, ...) into a named experiment. Invalid files are reported by name and skipped.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="result JSON files")
    parser.add_argument("--name", required=True, help="experiment name to create")
    parser.add_argument("--store", default=None, help=STORE_HELP)
    parser.set_defaults(run=_import)


def _import(args) -> int:
    from analysis.import2018 import import_results

    count, problems = import_results(open_store(args.store), args.name, [Path(f) for f in args.files])
    for problem in problems:
        print(one_line(f"skipped {problem}"), file=sys.stderr)
    print(f"imported {count} trial(s) into {args.name!r}" + (f"; {len(problems)} file(s) skipped" if problems else ""))
    return 0 if count else 2


def register_dashboard(subparsers) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="a live web page over the trial store (optuna-dashboard, read-only)",
        description="Serve optuna-dashboard over the store: each experiment a study, each trial's epochs its "
        "learning curve (growing while it runs), counts by state, the best trials, hyperparameter "
        "plots and importance. Read-only: it never writes to the store. Works offline.",
    )
    parser.add_argument("--store", default=None, help=STORE_HELP)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="IP address to listen on, or localhost (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)",
    )
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.set_defaults(run=_dashboard)


def check_host(host: str) -> None:
    """--host: an IP address of this machine's (or all: 0.0.0.0, ::) or localhost, refused before
    the store is opened rather than when the server binds; no name is looked up (offline)."""
    if host == "localhost":
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--host must be an IP address (127.0.0.1, 0.0.0.0, ::1) or localhost, got {host!r}") from None


def _dashboard(args) -> None:
    from analysis.dashboard import serve

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    check_host(args.host)
    store = open_store(args.store, read_only=True)
    store.experiments()  # an unreachable store or a bad URL: one line now, not a page of errors later
    print(f"larnn dashboard on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    serve(store, args.host, args.port)
