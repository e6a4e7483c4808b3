"""LARNN speed and memory: the fast path against the straightforward reference and torch.nn.LSTM.

    python benchmarks/bench_larnn.py [--quick] [--configs best small] [--out bench.json]

For each configuration and device (CPU, and CUDA when present): the median time of a training
step (forward, loss, backward, optimizer step) and of an inference forward, after warm-up, for
`reference` (larnn_core/reference.py), `fast` (the default model) and `lstm` (torch.nn.LSTM of the
same hidden size and layers, in the same classifier wrapper); the ratios measured in this run;
and the peak memory of a fast training step over the reference's. Prints JSON.
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

from larnn_core.classifier import build_model
from larnn_core.hparams import HParams
from larnn_core.reference import reference_forward

CONFIGS = {
    "best": dict(hidden_size=81, attention_heads=27, larnn_window_size=38, larnn_mode="residual", num_layers=3,
                 use_positional_encoding=False, activation_on_keys_and_values=True, is_stacked_residual=True),
    "small": dict(hidden_size=32, attention_heads=4, larnn_window_size=10, num_layers=2),
}
BATCH, STEPS, INPUTS = 256, 128, 9


def model_for(kind: str, config: dict, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(HParams.from_dict({**config, "model": "lstm" if kind == "lstm" else "larnn"})).to(device)
    if kind == "reference":  # same parameters, the straightforward computation
        model.body.forward = lambda x, stack=model.body: reference_forward(stack, x)
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(kind: str, config: dict, device: torch.device, repeats: int, warmup: int) -> tuple[float, float]:
    """(median training step ms, median inference forward ms)."""
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

    results = []
    for work, mode in ((train_step, True), (infer, False)):
        model.train(mode)
        times = []
        for i in range(warmup + repeats):
            _sync(device)
            started = time.perf_counter()
            work()
            _sync(device)
            if i >= warmup:
                times.append((time.perf_counter() - started) * 1000)
        results.append(statistics.median(times))
    return results[0], results[1]


def _peak_child(kind, config, queue):
    model = model_for(kind, config, torch.device("cpu"))
    x, y = torch.randn(BATCH, STEPS, INPUTS), torch.randint(0, 6, (BATCH,))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    F.cross_entropy(model(x), y).backward()
    queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)


def peak_bytes(kind: str, config: dict, device: torch.device) -> float:
    """Peak memory one training step adds: CUDA allocator peak, or on CPU the growth of the
    resident set of a fresh process running the step."""
    if device.type == "cuda":
        model = model_for(kind, config, device)
        x, y = torch.randn(BATCH, STEPS, INPUTS, device=device), torch.randint(0, 6, (BATCH,), device=device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        F.cross_entropy(model(x), y).backward()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    context = multiprocessing.get_context("spawn")  # a fresh process: forking after OpenMP threads can hang
    queue = context.Queue()
    process = context.Process(target=_peak_child, args=(kind, config, queue))
    process.start()
    value = queue.get()
    process.join()
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (well under two minutes on a small CPU)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    repeats, warmup = (2, 1) if args.quick else (7, 2)

    out = {"device": {}, "torch": torch.__version__,
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {platform.processor() or platform.system()}",
           "batch": BATCH, "steps": STEPS, "repeats": repeats, "warmup": warmup}
    for name in args.devices:
        device = torch.device(name)
        if device.type == "cuda":
            out.setdefault("gpu", torch.cuda.get_device_name(device))
        out["device"][name] = {}
        for config_name in args.configs:
            config = CONFIGS[config_name]
            row = {}
            for kind in ("reference", "fast", "lstm"):
                # the reference re-projects the whole window: one repetition is the point there
                r, w = (1, 0) if kind == "reference" and args.quick else (repeats, warmup)
                row[f"{kind}_train_ms"], row[f"{kind}_infer_ms"] = time_ms(kind, config, device, r, w)
            row["fast_vs_reference_train"] = row["reference_train_ms"] / row["fast_train_ms"]
            row["fast_vs_reference_infer"] = row["reference_infer_ms"] / row["fast_infer_ms"]
            row["fast_vs_lstm_train"] = row["fast_train_ms"] / row["lstm_train_ms"]
            row["fast_vs_lstm_infer"] = row["fast_infer_ms"] / row["lstm_infer_ms"]
            fast_peak, reference_peak = peak_bytes("fast", config, device), peak_bytes("reference", config, device)
            row["fast_peak_mb"], row["reference_peak_mb"] = fast_peak / 2**20, reference_peak / 2**20
            row["peak_mem_ratio"] = fast_peak / reference_peak if reference_peak > 0 else None  # None: not measurable
            out["device"][name][config_name] = row
            print(json.dumps({name: {config_name: row}}), flush=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
