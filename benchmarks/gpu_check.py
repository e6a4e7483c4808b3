"""Every GPU check of the project, once, on a machine with a CUDA GPU. Prints a one-screen summary;
writes everything, failures with their tracebacks, to OUT_DIR/gpu_check.json.

    python benchmarks/gpu_check.py OUT_DIR                # on the GPU machine (about 8 minutes on an H200)
    python benchmarks/gpu_check.py OUT_DIR --dry-run      # the same steps on CPU, shrunk (CI runs it)

The steps, each in a process of its own with a time limit, each recorded whatever the others do:
- environment: torch, CUDA, the device, Triton;
- cuda_tests: the tests marked `cuda` (python -m pytest -m cuda): CUDA graphs, the compiled path
  against the reference, worker slots on one GPU;
- bench_larnn: benchmarks/bench_larnn.py --quick on the best configuration: the LARNN step graphed
  and compiled (`fast`), launched op by op (`fast_eager`), graphed but uncompiled
  (`fast_uncompiled`), each layer's time loop as the fused Triton kernels (`fast_fused`, graphed,
  and `fast_fused_eager`), cuDNN's LSTM, the first step with its compilation; the cuda tests
  include the fused kernels against the reference (tests/test_fused_layer.py), compiled;
- bench_throughput: benchmarks/bench_throughput.py with 1, 2, 4, 8 and 16 slots, the best
  configuration and mixed paper-round2 shapes: aggregate steps/s, epochs and trials per hour,
  peak memory per slot;
- search: a real `larnn search paper-round2` with slots and ASHA on the offline data, stopped
  after --search-s seconds (SIGTERM, as a user's Ctrl-C): trials finished and pruned, trials per
  hour, the best validation accuracy and the test accuracy at its epoch.

The machine needs what a CUDA PyTorch machine has, plus this project's pure-Python dependencies
carried as wheels (README, "The GPU check", says how).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEST_EPOCHS = 100  # the 2018 best configuration's training_epochs (larnn_core.hparams' default): epochs per trial


class Plan:
    """What each step runs: the GPU's shapes, or --dry-run's CPU ones."""

    def __init__(self, dry_run: bool, search_s: float, slots: str, search_slots: int):
        self.dry_run, self.search_s, self.slots = dry_run, search_s, slots
        self.device = "cpu" if dry_run else "cuda"
        self.bench_larnn = (
            ["--quick", "--devices", "cpu", "--configs", "small", "--batch", "8", "--steps", "5", "--threads", "1"]
            if dry_run
            else ["--quick", "--devices", "cuda", "--configs", "best"]
        )
        self.bench_throughput = (
            ["--quick", "--devices", "cpu", "--slots", "1,2", "--threads", "1"]
            if dry_run
            else ["--devices", "cuda", "--slots", slots]
        )
        self.search = (
            ["smoke", "--epochs", "1", "--slots", str(search_slots), "--device", "cpu"]
            if dry_run
            else ["paper-round2", "--slots", str(search_slots), "--device", "cuda"]
        )
        self.limits = {"cuda_tests": 300, "bench_larnn": 240, "bench_throughput": 360, "search": search_s + 180}


def run_step(name: str, work: Callable[[], dict]) -> dict:
    """{ok, seconds, result} or {ok: False, seconds, error, traceback}: a failure never stops the others."""
    started = time.perf_counter()
    try:
        outcome = {"ok": True, "result": work()}
    except Exception as error:
        outcome = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    outcome["seconds"] = round(time.perf_counter() - started, 1)
    print(
        f"{name}: {'ok' if outcome['ok'] else 'FAILED ' + outcome['error'][:200]} ({outcome['seconds']} s)",
        file=sys.stderr,
        flush=True,
    )
    return outcome


def command(args: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """A step's process, in the repository, with this interpreter; its end is its own business."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": python_path(), **(env or {})},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} exited {done.returncode}: {done.stderr[-3000:]}")
    return done


def python_path() -> str:
    """This checkout first, then what the caller's PYTHONPATH holds (the carried wheels on a GPU machine)."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def environment() -> dict:
    import torch

    found = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        found.update(
            device=properties.name,
            capability=f"{properties.major}.{properties.minor}",
            memory_gib=round(properties.total_memory / 2**30, 1),
            devices=torch.cuda.device_count(),
        )
    try:
        import triton

        found["triton"] = triton.__version__
    except ImportError:
        found["triton"] = None
    return found


def cuda_tests(plan: Plan, out: Path) -> dict:
    """The cuda-marked tests; on CPU they are all skipped, which the dry run checks too."""
    report = out / "cuda_tests.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", f"--junitxml={report}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=plan.limits["cuda_tests"],
    )
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    if done.returncode not in (0, 5) or failed:  # 5: nothing collected
        raise RuntimeError(f"{len(failed)} CUDA test(s) failed: {failed[:10]}; {done.stdout[-2000:]}")
    return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]}


def bench(script: str, arguments: list[str], timeout: float, out: Path) -> dict:
    target = out / f"{Path(script).stem}.json"
    command([f"benchmarks/{script}", *arguments, "--out", str(target)], timeout)
    return json.loads(target.read_text())


def throughput_summary(result: dict) -> dict:
    """Per device and shape set: steps/s, ratio to one slot, trials per hour and peak memory per slot."""
    summary = {}
    for device, rows in result["device"].items():
        for shapes in ("best", "mixed"):
            summary[f"{device} {shapes}"] = {
                slots: {
                    "steps_per_s": round(row["steps_per_s"], 2),
                    "ratio": round(row["ratio_to_one_slot"], 2),
                    "trials_per_hour": round(row["epochs_per_hour"] / BEST_EPOCHS, 2),
                    "peak_mb_per_slot": row["peak_memory_per_slot_mb"],
                }
                for slots, row in rows[shapes].items()
            }
    return summary


def search(plan: Plan) -> dict:
    """A real search, stopped after plan.search_s seconds as Ctrl-C stops it; then what the store holds."""
    from larnn_core import data as har
    from workers.records import DONE, PRUNED
    from workers.store import open_store

    har.load("hapt", progress=False)  # prepared before the clock starts (the search's workers read the cache)

    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/search.db"
        env = {**os.environ, "PYTHONPATH": python_path(), "LARNN_STORE": url}
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "larnn_core.cli",
                "search",
                *plan.search,
                "--name",
                "gpu-check",
                "--max-evals",
                "100000",
                "--pruner",
                "asha",
                "--seed",
                "0",
                "--logs",
                f"{scratch}/logs",
            ],
            cwd=scratch,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started = time.monotonic()
        try:
            run.wait(timeout=plan.search_s)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGTERM)  # every worker stops at its next epoch boundary
        run.communicate(timeout=plan.limits["search"] - plan.search_s)
        elapsed = time.monotonic() - started
        trials = open_store(url).trials("gpu-check")
        finished = [t for t in trials if t.state in (DONE, PRUNED)]
        done = [t for t in trials if t.state == DONE]
        best = max(done, key=lambda t: t.result.chosen.validation_accuracy, default=None)
        return {
            "arguments": plan.search,
            "seconds": round(elapsed, 1),
            "trials": len(trials),
            "done": len(done),
            "pruned": sum(t.state == PRUNED for t in trials),
            "trials_per_hour": round(len(finished) / elapsed * 3600, 1),
            "best_validation_accuracy": best.result.chosen.validation_accuracy if best else None,
            "its_test_accuracy": best.result.chosen.test_accuracy if best else None,
            "best_tid": best.tid if best else None,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="directory for gpu_check.json and the steps' own files")
    parser.add_argument("--dry-run", action="store_true", help="the same steps on CPU, shrunk (CI runs this)")
    parser.add_argument("--search-s", type=float, default=None, help="seconds of real search (default 180; dry run 30)")
    parser.add_argument("--slots", default="1,2,4,8,16", help="slot counts for the throughput (default 1,2,4,8,16)")
    parser.add_argument(
        "--search-slots", type=int, default=None, help="slots of the real search (default 4; dry run 2)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(
        args.dry_run,
        args.search_s or (30.0 if args.dry_run else 180.0),
        args.slots,
        args.search_slots or (2 if args.dry_run else 4),
    )
    report = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    report["environment"] = run_step("environment", environment)
    report["cuda_tests"] = run_step("cuda_tests", lambda: cuda_tests(plan, out))
    report["bench_larnn"] = run_step(
        "bench_larnn", lambda: bench("bench_larnn.py", plan.bench_larnn, plan.limits["bench_larnn"], out)
    )
    report["bench_throughput"] = run_step(
        "bench_throughput",
        lambda: throughput_summary(
            bench("bench_throughput.py", plan.bench_throughput, plan.limits["bench_throughput"], out)
        ),
    )
    report["search"] = run_step("search", lambda: search(plan))
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    print(summary(report))
    return 0 if all(step["ok"] for key, step in report.items() if isinstance(step, dict) and "ok" in step) else 1


def summary(report: dict) -> str:
    """One screen: each step's outcome and its few numbers."""
    lines = [f"GPU check ({'dry run on CPU' if report['dry_run'] else 'CUDA'}), {report['started']}"]
    env = report["environment"].get("result", {})
    lines.append(
        f"  environment: torch {env.get('torch')}, CUDA {env.get('cuda')}, "
        f"{env.get('device', 'no GPU')}, triton {env.get('triton')}"
    )
    for name in ("cuda_tests", "bench_larnn", "bench_throughput", "search"):
        step = report[name]
        if not step["ok"]:
            lines.append(f"  {name}: FAILED ({step['seconds']} s): {step['error'][:300]}")
            continue
        result = step["result"]
        if name == "cuda_tests":
            failed = result["failures"] + result["errors"]
            text = f"{result['passed']} passed, {failed} failed, {result['skipped']} skipped"
        elif name == "bench_larnn":
            rows = [
                (f"{dev} {config}", row) for dev, configs in result["device"].items() for config, row in configs.items()
            ]
            text = "; ".join(
                f"{key}: train {row.get('fast_train_ms', 0):.0f} ms, LSTM {row.get('lstm_train_ms', 0):.1f} ms, "
                f"{row.get('fast_vs_lstm_train', 0):.1f}x LSTM"
                + (
                    f", fused kernels {row['fast_fused_train_ms']:.0f} ms ({row['fused_vs_lstm_train']:.1f}x LSTM)"
                    if "fused_vs_lstm_train" in row
                    else ""
                )
                for key, row in rows
            )
        elif name == "bench_throughput":
            text = "; ".join(
                f"{key}: " + ", ".join(f"{n}: {row['steps_per_s']}/s ({row['ratio']}x)" for n, row in rows.items())
                for key, rows in result.items()
            )
        else:
            text = (
                f"{result['done']} done, {result['pruned']} pruned in {result['seconds']} s "
                f"({result['trials_per_hour']} trials/h); best validation {result['best_validation_accuracy']}, "
                f"its test {result['its_test_accuracy']}"
            )
        lines.append(f"  {name} ({step['seconds']} s): {text}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
