"""LARNN speed and memory: the fast path against the straightforward reference and torch.nn.LSTM.

    python benchmarks/bench_larnn.py [--quick] [--configs best small] [--threads N] [--epoch] [--out bench.json]

For each configuration and device (CPU, and CUDA when present): the median time of a training
step (forward, loss, backward, optimizer step) and of an inference forward, after warm-up, for
`reference` (larnn_core/reference.py), `fast` (the default model) and `lstm` (torch.nn.LSTM of the
same hidden size and layers, in the same classifier wrapper); the ratios measured in this run;
and the peak memory of a fast training step over the reference's. Each implementation runs in a
fresh process of its own, one at a time. Prints JSON.

The training step and the inference forward are the ones larnn_core.train runs
(larnn_core/execution/cuda_graphs.py), executed as larnn_core.train resolves it: on CUDA they
are replayed as CUDA graphs, so there `fast` and `lstm` are graphed, and `fast_eager` and
`lstm_eager` the same work launched op by op
(`graphs_speedup_fast_train` is the LARNN's ratio). There the LARNN's per-step work is also
compiled (larnn_core/execution/torch_compile.py); `fast_uncompiled` is the graphed step without it
(`compile_speedup_fast_train`). `fast_fused` runs each layer's time loop as two Triton kernels
(larnn_core/execution/fused_layer.py), graphed, and `fast_fused_eager` without graphs:
`fused_vs_lstm_train` is its training step over cuDNN's LSTM's, the ratio the kernels are for.
`*_first_train_ms` is the first step, compilation included.
The reference always runs eagerly.

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
import sys
import time
import traceback

import torch

import larnn_core.train
from larnn_core.classifier import build_model
from larnn_core.data.dataset import load
from larnn_core.execution import Execution, resolve
from larnn_core.execution.cuda_graphs import Graphed, TrainStep, make_optimizer
from larnn_core.hparams import HParams
from larnn_core.reference import reference_forward

CONFIGS = {
    "best": dict(
        hidden_size=81,
        attention_heads=27,
        larnn_window_size=38,
        larnn_mode="residual",
        num_layers=3,
        use_positional_encoding=False,
        activation_on_keys_and_values=True,
        is_stacked_residual=True,
    ),
    "small": dict(hidden_size=32, attention_heads=4, larnn_window_size=10, num_layers=2),
}
BATCH, STEPS, INPUTS = 256, 128, 9  # the shapes; --batch and --steps shrink them for a smoke run


def hparams_for(kind: str, config: dict, batch: int = BATCH) -> HParams:
    return HParams.from_dict({**config, "model": "lstm" if kind == "lstm" else "larnn", "batch_size": batch})


def as_reference(model: torch.nn.Module) -> torch.nn.Module:
    """The same model and parameters computed by the straightforward reference."""
    model.body.forward = lambda x, stack=model.body: reference_forward(stack, x)
    return model


def runs_for(device: torch.device) -> list[tuple[str, str, bool, bool, bool]]:
    """(label, implementation, CUDA graphs, torch.compile, fused kernel) to measure. On CUDA, fast
    and lstm run as training does (graphed steps, the LARNN's step compiled: larnn_core/execution/),
    and again eagerly and uncompiled, so that the graphs' and the compiler's shares are measured
    too; fast_fused runs each layer's time loop as the fused Triton kernels (graphed, and eagerly)."""
    if device.type != "cuda":
        return [
            ("reference", "reference", False, True, False),
            ("fast", "fast", False, True, False),
            ("lstm", "lstm", False, True, False),
        ]
    return [
        ("reference", "reference", False, True, False),
        ("fast", "fast", True, True, False),
        ("lstm", "lstm", True, True, False),
        ("fast_uncompiled", "fast", True, False, False),
        ("fast_eager", "fast", False, True, False),
        ("lstm_eager", "lstm", False, True, False),
        ("fast_fused", "fast", True, True, True),
        ("fast_fused_eager", "fast", False, True, True),
    ]


def model_for(kind: str, config: dict, device: torch.device, execution: Execution = Execution()) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(hparams_for(kind, config), execution=execution).to(device)
    return as_reference(model) if kind == "reference" else model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> float:
    """Peak bytes so far: the CUDA allocator's, or on CPU the process's resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(
    kind: str,
    config: dict,
    device_name: str,
    repeats: int,
    warmup: int,
    threads: int,
    graphs: bool = False,
    batch: int = BATCH,
    steps: int = STEPS,
    compile: bool = True,
    fused: bool = False,
) -> dict:
    """Peak memory one training step adds, then the median training step and inference forward
    (ms) after warm-up. Runs in a fresh process, so the first step's growth is its own. The
    training step and the forward are larnn_core.train's (execution/cuda_graphs.py), replayed as CUDA
    graphs when graphs is set: the first call of each (for the step, the one whose memory is
    measured) runs eagerly, the second is captured. compile=False turns torch.compile off (else
    the device's default); the first step's time, first_train_ms, includes the compilation. fused:
    the layers' time loops as the fused Triton kernels (execution/fused_layer.py)."""
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    execution = resolve(device.type, torch_compile=None if compile else False, cuda_graphs=graphs, fused_kernel=fused)
    model = model_for(kind, config, device, execution)
    train_step = TrainStep(
        model, make_optimizer(model, 1e-3, 0.0, capturable=device.type == "cuda"), graphs=execution.cuda_graphs
    )
    x = torch.randn(batch, steps, INPUTS, device=device)
    y = torch.randint(0, 6, (batch,), device=device)

    forward = Graphed(model) if graphs else model

    def infer():
        with torch.no_grad():
            forward(x)

    _sync(device)
    before, started = _peak_memory(device), time.perf_counter()
    train_step(x, y)
    _sync(device)
    result = {"peak_bytes": _peak_memory(device) - before, "first_train_ms": (time.perf_counter() - started) * 1000}
    if graphs:
        model.eval()
        infer()  # the eager first call, so that warm-up captures and the timed calls replay
    for name, work, mode in (("train_ms", lambda: train_step(x, y), True), ("infer_ms", infer, False)):
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


def measure_epoch(kind: str, config: dict, device_name: str, threads: int, batch: int = BATCH) -> dict:
    """Seconds of the first training epoch, as larnn_core.train runs it, on the offline HAR data."""
    torch.set_num_threads(threads)
    if kind == "reference":
        build = larnn_core.train.build_model
        larnn_core.train.build_model = lambda *args, **kwargs: as_reference(build(*args, **kwargs))
    hp = hparams_for(kind, {**config, "training_epochs": 1}, batch)
    result = larnn_core.train.train(hp, load("hapt", progress=False), device=device_name, progress=False)
    return {"epoch_s": result.epochs[0].seconds}


def _child(sender, work, *args) -> None:
    try:
        sender.send(work(*args))
    except BaseException:
        sender.send({"error": traceback.format_exc()})
        raise


def measure_in_own_process(work, *args) -> dict:
    """One implementation at a time, each in a fresh process: no memory left over from another
    (the reference's step on the 2018 best configuration holds about 13 GB on CPU)."""
    # forked from a server that has imported this module and torch but run nothing (forking
    # after OpenMP threads have started can hang): each measurement starts in half a second
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__"])
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, work, *args))
    process.start()
    sender.close()  # the process holds the sending end now: however it ends, that is an end of file here
    try:
        result = receiver.recv()
    except EOFError:  # killed before it could report, e.g. for memory
        process.join()
        raise RuntimeError(
            f"{work.__name__}{args} ended without a result, exit code "
            f"{process.exitcode} (-9: killed, often for lack of memory)"
        ) from None
    process.join()
    if "error" in result:
        raise RuntimeError(f"{work.__name__}{args} failed in its process:\n{result['error']}")
    return result


def measure_device(
    device: torch.device,
    config_names: list[str],
    quick: bool,
    epoch: bool,
    threads: int,
    repeats: int,
    warmup: int,
    batch: int = BATCH,
    steps: int = STEPS,
) -> dict:
    """One row of times and ratios per configuration. The references run last: freeing the
    reference's 13 GB keeps this VM's kernel busy returning memory for a while, which slowed the
    next process's steps by a quarter. Each implementation's steps run back to back, as in
    training: timing the implementations' steps in turn (all alive at once) made every step
    slower here (LSTM 1.6 s instead of 0.7 s, the reference 22-26 s instead of 18-21 s), most
    likely because this VM hands memory freed by a step back to its host, and a step that comes
    seconds later takes it back page by page (a first touch costs about 3 s per GB here)."""
    results = {c: {} for c in config_names}
    runs = [(c, *run) for c in config_names for run in runs_for(device)]
    for config_name, label, kind, graphs, compile, fused in sorted(runs, key=lambda run: run[2] == "reference"):
        config, row = CONFIGS[config_name], results[config_name]
        # the reference re-projects the whole window: one repetition is the point there
        r, w = (1, 0) if kind == "reference" and quick else (repeats, max(warmup, 1 if graphs else 0))
        result = measure_in_own_process(
            measure, kind, config, str(device), r, w, threads, graphs, batch, steps, compile, fused
        )
        print(
            f"{device} {config_name} {label}: train {result['train_ms']:.1f} ms, "
            f"inference {result['infer_ms']:.1f} ms, "
            f"first step {result['first_train_ms']:.0f} ms",
            file=sys.stderr,
            flush=True,
        )
        row[f"{label}_train_ms"], row[f"{label}_infer_ms"] = result["train_ms"], result["infer_ms"]
        row[f"{label}_peak_mb"] = result["peak_bytes"] / 2**20
        row[f"{label}_first_train_ms"] = result["first_train_ms"]
        if epoch and label == kind:
            row[f"{kind}_epoch_s"] = measure_in_own_process(measure_epoch, kind, config, str(device), threads, batch)[
                "epoch_s"
            ]
    for row in results.values():
        row["fast_vs_reference_train"] = row["reference_train_ms"] / row["fast_train_ms"]
        row["fast_vs_reference_infer"] = row["reference_infer_ms"] / row["fast_infer_ms"]
        row["fast_vs_lstm_train"] = row["fast_train_ms"] / row["lstm_train_ms"]
        row["fast_vs_lstm_infer"] = row["fast_infer_ms"] / row["lstm_infer_ms"]
        if epoch:
            row["fast_vs_reference_epoch"] = row["reference_epoch_s"] / row["fast_epoch_s"]
        if "fast_eager_train_ms" in row:
            row["graphs_speedup_fast_train"] = row["fast_eager_train_ms"] / row["fast_train_ms"]
            row["fast_eager_vs_lstm_eager_train"] = row["fast_eager_train_ms"] / row["lstm_eager_train_ms"]
            row["compile_speedup_fast_train"] = row["fast_uncompiled_train_ms"] / row["fast_train_ms"]
        if "fast_fused_train_ms" in row:
            row["fused_speedup_fast_train"] = row["fast_train_ms"] / row["fast_fused_train_ms"]
            row["fused_vs_lstm_train"] = row["fast_fused_train_ms"] / row["lstm_train_ms"]
            row["fused_vs_lstm_infer"] = row["fast_fused_infer_ms"] / row["lstm_infer_ms"]
        row["peak_mem_ratio"] = row["fast_peak_mb"] / row["reference_peak_mb"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions: 1.5 minutes on a 2-core VM (about 2 with --threads 1)"
    )
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads for every measurement (default: torch's default here, %(default)s)",
    )
    parser.add_argument(
        "--epoch", action="store_true", help="also time one full training epoch of HAR per implementation"
    )
    parser.add_argument("--batch", type=int, default=BATCH, help="batch size (default %(default)s, the targets' shape)")
    parser.add_argument("--steps", type=int, default=STEPS, help="time steps per sequence (default %(default)s)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    # warm-up after the first step (whose memory is measured): quick relies on that first step
    # alone, except where a graphed step must be captured before it is replayed
    repeats, warmup = (2, 0) if args.quick else (7, 2)

    out = {
        "device": {},
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {args.threads} torch threads, {platform.processor() or platform.system()}",
        "batch": args.batch,
        "steps": args.steps,
        "repeats": repeats,
        "warmup": warmup,
    }
    for name in args.devices:
        device = torch.device(name)
        if device.type == "cuda":
            out.setdefault("gpu", torch.cuda.get_device_name(device))
        out["device"][name] = measure_device(
            device, args.configs, args.quick, args.epoch, args.threads, repeats, warmup, args.batch, args.steps
        )
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
