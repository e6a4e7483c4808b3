"""Does evaluation scale the LARNN as training does, on every trajectory? Prints numbers; asserts nothing.

    python benchmarks/bench_eval_agreement.py [--seeds 0-9] [--steps 60] [--out agreement.json]
    python benchmarks/bench_eval_agreement.py --seeds 0 --steps 2 --samples 64   # a smoke run (seconds)

For each seed: the 2018 best configuration (the defaults, dropout off so that the two modes
compare like with like) trained for --steps Adam steps of 128 training sequences at the 2018
learning rate on the offline HAR data, then the ratio of the last layer's mean |h| in eval mode
to train mode's at every time step, on 512 training sequences (larnn_core.statistics.agreement),
and both losses: once with the running statistics that training left (`trailing`), once after
larnn_core.statistics.refresh, as training does before every evaluation (`refreshed`). Seed s
draws the initialisation and the batches; the data split is the same for all.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from larnn_core.classifier import build_model  # noqa: E402
from larnn_core.data import make_splits  # noqa: E402
from larnn_core.data.dataset import load  # noqa: E402
from larnn_core.hparams import HParams  # noqa: E402
from larnn_core.statistics import REFRESH_SAMPLES, agreement, refresh  # noqa: E402


def seeds(text: str) -> list[int]:
    """'0-9' or '0,3,5'."""
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def summary(ratio: torch.Tensor, eval_loss: float, train_loss: float) -> dict:
    return {
        "ratio_max": ratio.max().item(),
        "ratio_min": ratio.min().item(),
        "ratio_last": ratio[-1].item(),
        "eval_loss": eval_loss,
        "train_loss": train_loss,
    }


def one_seed(seed: int, X: torch.Tensor, y: torch.Tensor, steps: int, samples: int) -> dict:
    torch.manual_seed(seed)
    model = build_model(HParams.from_dict({"dropout_drop_proba": 0.0}), steps=X.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=HParams().learning_rate)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    model.train()
    for _ in range(steps):
        index = torch.randint(len(X), (128,), generator=generator)
        loss = F.cross_entropy(model(X[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    probe = torch.from_numpy(np.random.default_rng(0).choice(len(X), samples, replace=False))
    row = {"seed": seed, "trailing": summary(*agreement(model, X[probe], y[probe]))}
    refresh(model, X[torch.randperm(len(X), generator=generator)[:REFRESH_SAMPLES]])
    row["refreshed"] = summary(*agreement(model, X[probe], y[probe]))
    row["seconds"] = time.perf_counter() - started
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=seeds, default=seeds("0-9"), help="seeds, as 0-9 or 0,3,5 (default 0-9)")
    parser.add_argument("--steps", type=int, default=60, help="training steps before the comparison (default 60)")
    parser.add_argument("--samples", type=int, default=512, help="sequences compared (default 512)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = make_splits(load("hapt"), 5, 0)
    X, y = torch.from_numpy(splits.train[0]), torch.from_numpy(splits.train[1])
    rows = []
    for seed in args.seeds:
        rows.append(one_seed(seed, X, y, args.steps, args.samples))
        print(json.dumps(rows[-1]), file=sys.stderr)
    worst = {
        kind: {
            "ratio_max": max(r[kind]["ratio_max"] for r in rows),
            "ratio_min": min(r[kind]["ratio_min"] for r in rows),
        }
        for kind in ("trailing", "refreshed")
    }
    result = {
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "torch": torch.__version__,
        "threads": args.threads,
        "steps": args.steps,
        "samples": args.samples,
        "worst": worst,
        "seeds": rows,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
