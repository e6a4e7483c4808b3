"""What checkpoints cost and what reading the test split once saves. Prints numbers; asserts nothing.

    python benchmarks/bench_checkpoint.py [--epochs 2] [--seed 0] [--config '{}'] [--out checkpoint.json]
    python benchmarks/bench_checkpoint.py --epochs 1 --config '{"hidden_size": 8, "num_layers": 1}'   # seconds

One training of the configuration (default: the 2018 best, HParams' defaults) on the offline HAR
data on CPU, twice in one run: once evaluating the test split at every epoch, as trainings did
before (test_curves), once reading it once after training, as they do now. Per epoch: the epoch's
seconds (training, statistics refresh and evaluation) in each mode. At every epoch boundary of
the second run, the checkpoint is encoded (bytes, ms) and kept in a SQLite store as a worker keeps
it (Store.save_file: the file written and fsynced, recorded in the trial, the older one deleted;
ms), and the model a trial leaves (its selected epoch's weights) is measured too.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from larnn_core.checkpoint import model_bytes  # noqa: E402
from larnn_core.data.dataset import load  # noqa: E402
from larnn_core.hparams import HParams  # noqa: E402
from larnn_core.train import train  # noqa: E402
from workers.records import CHECKPOINT, Experiment, Objective, Trial  # noqa: E402
from workers.store import open_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="{}", help="hyperparameters over the 2018 best (JSON)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    hp = HParams.from_dict({**json.loads(args.config), "training_epochs": args.epochs})
    data = load("hapt", progress=False)
    folder = Path(tempfile.mkdtemp())
    store = open_store(f"sqlite:///{folder / 'bench.db'}")
    store.create_experiment(Experiment("bench", None, "rand", 1, Objective(), 0, time.time()))
    store.insert_trial(Trial.new("bench", 0, {}, {}, owner="bench"))
    saves: list[dict] = []
    best: list = []

    def keep(checkpoint) -> None:
        started = time.perf_counter()
        data = checkpoint.to_bytes()
        encoded = time.perf_counter()
        store.save_file("bench", 0, CHECKPOINT, data, checkpoint.epoch, "bench")
        saved = time.perf_counter()
        saves.append({"bytes": len(data), "encode_ms": 1e3 * (encoded - started), "save_ms": 1e3 * (saved - encoded)})
        best[:] = [checkpoint.best]

    runs = {}
    for mode, curves in (("test every epoch", True), ("test once", False)):
        on_checkpoint = keep if not curves else None
        started = time.perf_counter()
        result = train(
            hp, data, device="cpu", seed=args.seed, progress=False, test_curves=curves, on_checkpoint=on_checkpoint
        )
        runs[mode] = {
            "epoch_s": [e.seconds for e in result.epochs],
            "total_s": time.perf_counter() - started,
            "test_accuracy": result.selected.test_accuracy,
        }
    with_test, once = (statistics.mean(runs[m]["epoch_s"]) for m in ("test every epoch", "test once"))
    model = model_bytes(best[0], {"hyperparameters": hp.to_dict()})
    summary = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "hyperparameters": hp.to_dict(),
        "parameters": sum(t.numel() for t in best[0].values()),
        "runs": runs,
        "epoch_s_test_every_epoch": with_test,
        "epoch_s_test_once": once,
        "saved_per_epoch": 1 - once / with_test,
        "checkpoint_bytes": saves[-1]["bytes"],
        "checkpoint_encode_ms": statistics.median(s["encode_ms"] for s in saves),
        "checkpoint_save_ms": statistics.median(s["save_ms"] for s in saves),
        "model_bytes": len(model),
    }
    print(json.dumps(summary, indent=2))
    print(
        f"\nepoch: {with_test:.1f} s with the test split every epoch, {once:.1f} s reading it once "
        f"({100 * summary['saved_per_epoch']:.1f} % saved); the same selected test accuracy: "
        f"{runs['test every epoch']['test_accuracy'] == runs['test once']['test_accuracy']}"
    )
    print(
        f"checkpoint: {summary['checkpoint_bytes'] / 1e6:.2f} MB, encoded in {summary['checkpoint_encode_ms']:.0f} ms, "
        f"kept in SQLite's folder in {summary['checkpoint_save_ms']:.0f} ms; model: {len(model) / 1e6:.2f} MB"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
