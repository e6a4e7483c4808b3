"""Throughput of concurrent trainings on one device: what `larnn worker --slots N` buys.
Prints and writes numbers; asserts nothing.

    python benchmarks/bench_throughput.py [--quick] [--slots 1,2,4,8,16] [--devices cpu,cuda] [--out F]

For each slot count N, N threads each train a model of their own, as worker slots do (one thread,
on CUDA one stream, each training with its own CUDA graphs, dropout generator and optimizer;
larnn_core.train's step and execution choice): the best 2018 configuration (larnn_core's
defaults) in every slot, and a mixed set of shapes sampled from paper-round2, one per slot. After
warm-up (compilation, graph capture), every slot runs --steps training steps on a HAR-shaped
batch; measured: aggregate training steps per second, HAR epochs per hour (an epoch: the training
windows of the offline data at the configuration's batch size), the ratio to the same trainings
one after another in one slot (each measured alone, the faster of two runs), and the peak device
memory per slot (CUDA; the CPU has no per-allocation peak to read). In the same run: the
single-trial LARNN step against torch.nn.LSTM of the same hidden size and layers on the same device.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import threading
import time

import numpy as np
import torch

from larnn_core.classifier import build_model
from larnn_core.execution import resolve
from larnn_core.execution.cuda_graphs import TrainStep, make_optimizer
from larnn_core.hparams import SEQUENCE_STEPS, HParams
from larnn_core.train import GLOBAL_RNG, dropout_generator
from search_spaces import load_space

TRAIN_WINDOWS = 6_400  # training windows of the offline HAR data once 5 validation subjects are held out (about)
INPUTS, CLASSES = 9, 6


def trainer(hp: HParams, dev: torch.device, seed: int, steps: int, batch: int):
    """A training ready to step: (step function, the batch)."""
    execution = resolve(dev.type)
    with GLOBAL_RNG:
        torch.manual_seed(seed)
        model = build_model(
            hp,
            n_inputs=INPUTS,
            n_classes=CLASSES,
            steps=steps,
            execution=execution,
            generator=dropout_generator(dev, execution, seed),
        ).to(dev)
    optimizer = make_optimizer(model, hp.learning_rate, hp.l2_weight_reg, capturable=dev.type == "cuda")
    step = TrainStep(model, optimizer, hp.clip_grad_norm, execution.cuda_graphs)
    x = torch.randn(batch, steps, INPUTS, device=dev)
    y = torch.randint(0, CLASSES, (batch,), device=dev)
    return step, x, y


def run_concurrently(configs: list[HParams], dev: torch.device, steps: int, seq: int, batch: int | None) -> dict:
    """Each configuration in a thread of its own: aggregate steps per second and peak memory."""
    ready, errors = threading.Barrier(len(configs) + 1), []
    done = []

    def slot(k: int, hp: HParams) -> None:
        try:
            if dev.type == "cuda":
                torch.cuda.set_stream(torch.cuda.Stream(device=dev))
            step, x, y = trainer(hp, dev, k, seq, batch or hp.batch_size)
            for _ in range(3):  # warm-up: compilation, graph capture, allocator
                step(x, y)
            if dev.type == "cuda":
                torch.cuda.current_stream(dev).synchronize()
            ready.wait()
            for _ in range(steps):
                loss, _ = step(x, y)
            loss.item()  # waits for this slot's stream
            done.append(time.perf_counter())
        except Exception as error:  # reported in the main thread
            errors.append(error)
            ready.abort()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    threads = [threading.Thread(target=slot, args=(k, hp)) for k, hp in enumerate(configs)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    wall = max(done) - started
    peak = torch.cuda.max_memory_allocated(dev) / len(configs) / 2**20 if dev.type == "cuda" else None
    return {
        "steps_per_s": len(configs) * steps / wall,
        "wall_s": wall,
        "peak_memory_per_slot_mb": round(peak, 1) if peak is not None else None,
    }


def epochs_per_hour(steps_per_s: float, batch: int) -> float:
    return steps_per_s * 3600 / math.ceil(TRAIN_WINDOWS / batch)


def measure(
    name: str, pick, dev: torch.device, slot_counts: list[int], steps: int, seq: int, batch: int | None
) -> dict:
    """pick(n) -> n configurations; each also alone, for the one-after-another baseline."""
    alone: dict[str, float] = {}  # configuration -> seconds per step, alone
    rows = {}
    for n in slot_counts:
        configs = pick(n)
        for hp in configs:
            key = json.dumps(hp.to_dict(), sort_keys=True)
            if key not in alone:  # the faster of two runs: a first run meets cold caches
                alone[key] = 1 / max(run_concurrently([hp], dev, steps, seq, batch)["steps_per_s"] for _ in range(2))
        together = run_concurrently(configs, dev, steps, seq, batch)
        one_after_another = (
            len(configs) * steps / sum(steps * alone[json.dumps(hp.to_dict(), sort_keys=True)] for hp in configs)
        )
        mean_batch = float(np.mean([batch or hp.batch_size for hp in configs]))
        rows[str(n)] = {
            **together,
            "epochs_per_hour": epochs_per_hour(together["steps_per_s"], mean_batch),
            "ratio_to_one_slot": together["steps_per_s"] / one_after_another,
        }
        print(
            f"{dev} {name} {n} slot(s): {together['steps_per_s']:.2f} steps/s, "
            f"{rows[str(n)]['ratio_to_one_slot']:.2f}x one slot",
            file=sys.stderr,
            flush=True,
        )
    return rows


FULL = {
    "slots": "1,2,4,8,16",
    "batch": None,
    "sequence": SEQUENCE_STEPS,
    "steps": 20,
}  # batch None: each configuration's
QUICK = {"slots": "1,2,4", "batch": 16, "sequence": 32, "steps": 3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK['slots']} slots, batch {QUICK['batch']}, {QUICK['sequence']} time steps, "
        f"{QUICK['steps']} steps, unless given (under 2 minutes on 2 cores)",
    )
    parser.add_argument("--slots", default=None, help=f"slot counts (default {FULL['slots']})")
    parser.add_argument("--devices", default=None, help="cpu and/or cuda (default: cpu, and cuda when present)")
    parser.add_argument(
        "--steps", type=int, default=None, help=f"timed training steps per slot (default {FULL['steps']})"
    )
    parser.add_argument("--sequence", type=int, default=None, help=f"time steps (default {FULL['sequence']}, HAR's)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: each configuration's)")
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads (default: torch's)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    for key, default in (
        QUICK if args.quick else FULL
    ).items():  # what the command line gives wins over --quick's shapes
        if getattr(args, key) is None:
            setattr(args, key, default)
    if args.threads:
        torch.set_num_threads(args.threads)
    slot_counts = [int(n) for n in args.slots.split(",")]
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    best = HParams()
    space = load_space("paper-round2")
    mixed = [HParams.from_dict(space.sample(np.random.default_rng(k))) for k in range(max(slot_counts))]
    lstm = HParams.from_dict({**best.to_dict(), "model": "lstm"})
    result = {
        "slots": slot_counts,
        "steps": args.steps,
        "sequence": args.sequence,
        "batch": args.batch,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "threads": torch.get_num_threads(),
        "device": {},
    }
    for name in devices:
        dev = torch.device(name)
        larnn = run_concurrently([best], dev, args.steps, args.sequence, args.batch)
        baseline = run_concurrently([lstm], dev, args.steps, args.sequence, args.batch)
        result["device"][name] = {
            "name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
            "execution": resolve(dev.type).as_record(),
            "best": measure("best", lambda n: [best] * n, dev, slot_counts, args.steps, args.sequence, args.batch),
            "mixed": measure("mixed", lambda n: mixed[:n], dev, slot_counts, args.steps, args.sequence, args.batch),
            "larnn_step_ms": 1000 / larnn["steps_per_s"],
            "lstm_step_ms": 1000 / baseline["steps_per_s"],
        }
        row = result["device"][name]
        row["larnn_vs_lstm_step"] = (
            row["larnn_step_ms"] / row["lstm_step_ms"]
        )  # how many LSTM steps one LARNN step costs
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
