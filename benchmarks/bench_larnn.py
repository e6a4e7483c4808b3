"""LARNN speed and memory: the fast path against the straightforward reference and torch.nn.LSTM.

    python benchmarks/bench_larnn.py [--quick] [--configs best small] [--threads N] [--epoch] [--out bench.json]

For each configuration and device (CPU, and CUDA when present): the median time of a training
step (forward, loss, backward, optimizer step) and of an inference forward, after warm-up, for
`reference` (larnn_core/reference.py), `fast` (the default model) and `lstm` (torch.nn.LSTM of the
same hidden size and layers, in the same classifier wrapper); the ratios measured in this run;
and the peak memory of a fast training step over the reference's. Each implementation runs in a
fresh process of its own, one at a time. Prints JSON.

--epoch adds the wall time of one full training epoch of the offline HAR data (larnn_core.train:
every batch, then the validation and test evaluations) for each implementation: about a quarter
of an hour for the reference's best configuration on a small CPU. With glibc's default malloc
that epoch's reference grows past 22 GB (its steps' large blocks fragment the heap); with
MALLOC_MMAP_THRESHOLD_=131072 in the environment it stays near its 13 GB step peak, but pays page
faults (its step took about twice as long). The setting reaches every implementation's process,
so compare ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import statistics
import time

import torch
import torch.nn.functional as F

import larnn_core.train
from larnn_core.classifier import build_model
from larnn_core.data.dataset import load
from larnn_core.hparams import HParams
from larnn_core.reference import reference_forward

CONFIGS = {
    "best": dict(hidden_size=81, attention_heads=27, larnn_window_size=38, larnn_mode="residual", num_layers=3,
                 use_positional_encoding=False, activation_on_keys_and_values=True, is_stacked_residual=True),
    "small": dict(hidden_size=32, attention_heads=4, larnn_window_size=10, num_layers=2),
}
BATCH, STEPS, INPUTS = 256, 128, 9


def hparams_for(kind: str, config: dict) -> HParams:
    return HParams.from_dict({**config, "model": "lstm" if kind == "lstm" else "larnn", "batch_size": BATCH})


def as_reference(model: torch.nn.Module) -> torch.nn.Module:
    """The same model and parameters computed by the straightforward reference."""
    model.body.forward = lambda x, stack=model.body: reference_forward(stack, x)
    return model


def model_for(kind: str, config: dict, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(hparams_for(kind, config)).to(device)
    return as_reference(model) if kind == "reference" else model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> float:
    """Peak bytes so far: the CUDA allocator's, or on CPU the process's resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(kind: str, config: dict, device_name: str, repeats: int, warmup: int, threads: int) -> dict:
    """Peak memory one training step adds, then the median training step and inference forward
    (ms) after warm-up. Runs in a fresh process, so the first step's growth is its own."""
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    model = model_for(kind, config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(BATCH, STEPS, INPUTS, device=device)
    y = torch.randint(0, 6, (BATCH,), device=device)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    def infer():
        with torch.no_grad():
            model(x)

    _sync(device)
    before = _peak_memory(device)
    train_step()
    _sync(device)
    result = {"peak_bytes": _peak_memory(device) - before}
    for name, work, mode in (("train_ms", train_step, True), ("infer_ms", infer, False)):
        model.train(mode)
        times = []
        for i in range(warmup + repeats):
            _sync(device)
            started = time.perf_counter()
            work()
            _sync(device)
            if i >= warmup:
                times.append((time.perf_counter() - started) * 1000)
        result[name] = statistics.median(times)
    return result


def measure_epoch(kind: str, config: dict, device_name: str, threads: int) -> dict:
    """Seconds of the first training epoch, as larnn_core.train runs it, on the offline HAR data."""
    torch.set_num_threads(threads)
    if kind == "reference":
        build = larnn_core.train.build_model
        larnn_core.train.build_model = lambda *args, **kwargs: as_reference(build(*args, **kwargs))
    hp = hparams_for(kind, {**config, "training_epochs": 1})
    result = larnn_core.train.train(hp, load("hapt", progress=False), device=device_name, progress=False)
    return {"epoch_s": result["history"]["epoch_seconds"][0]}


def _child(queue, work, *args) -> None:
    queue.put(work(*args))


def measure_in_own_process(work, *args) -> dict:
    """One implementation at a time, each in a fresh process: no memory left over from another
    (the reference's step on the 2018 best configuration holds about 13 GB on CPU)."""
    context = multiprocessing.get_context("spawn")  # forking after OpenMP threads can hang
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, work, *args))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (well under two minutes on a small CPU)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads for every measurement (default: torch's default here, %(default)s)")
    parser.add_argument("--epoch", action="store_true", help="also time one full training epoch of HAR per implementation")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    repeats, warmup = (2, 1) if args.quick else (7, 2)

    out = {"device": {}, "torch": torch.__version__,
           "machine": f"{platform.machine()}, {args.threads} torch threads, {platform.processor() or platform.system()}",
           "batch": BATCH, "steps": STEPS, "repeats": repeats, "warmup": warmup}
    for name in args.devices:
        device = torch.device(name)
        if device.type == "cuda":
            out.setdefault("gpu", torch.cuda.get_device_name(device))
        out["device"][name] = {}
        for config_name in args.configs:
            config = CONFIGS[config_name]
            row, peaks = {}, {}
            for kind in ("reference", "fast", "lstm"):
                # the reference re-projects the whole window: one repetition is the point there
                r, w = (1, 0) if kind == "reference" and args.quick else (repeats, warmup)
                result = measure_in_own_process(measure, kind, config, name, r, w, args.threads)
                row[f"{kind}_train_ms"], row[f"{kind}_infer_ms"] = result["train_ms"], result["infer_ms"]
                peaks[kind] = result["peak_bytes"]
                if args.epoch:
                    row[f"{kind}_epoch_s"] = measure_in_own_process(measure_epoch, kind, config, name, args.threads)["epoch_s"]
            row["fast_vs_reference_train"] = row["reference_train_ms"] / row["fast_train_ms"]
            row["fast_vs_reference_infer"] = row["reference_infer_ms"] / row["fast_infer_ms"]
            row["fast_vs_lstm_train"] = row["fast_train_ms"] / row["lstm_train_ms"]
            row["fast_vs_lstm_infer"] = row["fast_infer_ms"] / row["lstm_infer_ms"]
            if args.epoch:
                row["fast_vs_reference_epoch"] = row["reference_epoch_s"] / row["fast_epoch_s"]
            for kind in ("reference", "fast", "lstm"):
                row[f"{kind}_peak_mb"] = peaks[kind] / 2**20
            row["peak_mem_ratio"] = peaks["fast"] / peaks["reference"]
            out["device"][name][config_name] = row
            print(json.dumps({name: {config_name: row}}), flush=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
