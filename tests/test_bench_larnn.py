"""benchmarks/bench_larnn.py, bench_throughput.py, bench_eval_agreement.py and bench_fleet.py end to
end on shrunken shapes: the JSON that runs are compared by."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = (
    "reference_train_ms",
    "fast_train_ms",
    "lstm_train_ms",
    "reference_infer_ms",
    "fast_infer_ms",
    "lstm_infer_ms",
    "fast_vs_reference_train",
    "fast_vs_lstm_train",
    "peak_mem_ratio",
)


@pytest.mark.slow
def test_quick_run_writes_the_documented_shape(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_larnn.py",
            "--quick",
            "--configs",
            "small",
            "--devices",
            "cpu",
            "--threads",
            "1",
            "--batch",
            "8",
            "--steps",
            "5",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert json.loads(run.stdout) == result
    assert {"device", "torch", "machine"} <= result.keys()
    assert (result["batch"], result["steps"]) == (8, 5)
    row = result["device"]["cpu"]["small"]
    assert set(ROW_KEYS) <= row.keys()
    assert all(row[key] > 0 for key in ROW_KEYS)
    assert row["fast_vs_reference_train"] == row["reference_train_ms"] / row["fast_train_ms"]
    assert row["fast_vs_lstm_train"] == row["fast_train_ms"] / row["lstm_train_ms"]
    for label in ("reference", "fast", "lstm"):  # progress on stderr, one line per measurement
        assert f"cpu small {label}: train" in run.stderr


def _killed() -> dict:
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer does
    return {}


def test_a_measurement_killed_without_a_result_is_reported_not_waited_for(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # also for the measurement's process
    import bench_larnn

    with pytest.raises(RuntimeError, match="exit code -9"):
        bench_larnn.measure_in_own_process(_killed)


def _fails() -> dict:
    raise ValueError("no such configuration")


def test_a_measurement_that_fails_reports_its_traceback(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_larnn

    with pytest.raises(RuntimeError, match="ValueError: no such configuration"):
        bench_larnn.measure_in_own_process(_fails)


@pytest.mark.slow
def test_throughput_benchmark_quick_run_writes_ratios_per_slot_count(tmp_path):
    out = tmp_path / "throughput.json"
    run = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_throughput.py",
            "--quick",
            "--slots",
            "1,2",
            "--steps",
            "1",
            "--devices",
            "cpu",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    cpu = result["device"]["cpu"]
    for workload in ("best", "mixed"):
        assert set(cpu[workload]) == {"1", "2"}
        for row in cpu[workload].values():
            assert row["steps_per_s"] > 0 and row["ratio_to_one_slot"] > 0 and row["epochs_per_hour"] > 0
    assert cpu["larnn_vs_lstm_step"] == cpu["larnn_step_ms"] / cpu["lstm_step_ms"]
    assert "cpu best 2 slot(s)" in run.stderr


@pytest.mark.slow
def test_eval_agreement_benchmark_smoke_run_writes_both_statistics(tmp_path):
    out = tmp_path / "agreement.json"
    run = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_eval_agreement.py",
            "--seeds",
            "0",
            "--steps",
            "2",
            "--samples",
            "64",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LARNN_DATA": str(tmp_path / "data")},
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    (row,) = result["seeds"]
    for kind in ("trailing", "refreshed"):
        assert len({"ratio_max", "ratio_min", "eval_loss", "train_loss"} & row[kind].keys()) == 4
        assert row[kind]["ratio_min"] <= row[kind]["ratio_max"]
        assert result["worst"][kind]["ratio_max"] == row[kind]["ratio_max"]


@pytest.mark.slow
def test_the_gpu_check_dry_run_runs_every_step_on_cpu(tmp_path):
    """benchmarks/gpu_check.py --dry-run: the GPU check's every step, shrunk, on CPU, so that it cannot rot."""
    out = tmp_path / "gpu"
    run = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", str(out), "--dry-run", "--search-s", "30"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LARNN_DATA": str(tmp_path / "data")},
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    steps = ("environment", "cuda_tests", "bench_larnn", "bench_throughput", "search")
    assert all(report[step]["ok"] for step in steps), {s: report[s].get("error") for s in steps}
    assert report["cuda_tests"]["result"]["skipped"] >= 5 and report["cuda_tests"]["result"]["passed"] == 0
    assert report["bench_larnn"]["result"]["device"]["cpu"]["small"]["fast_train_ms"] > 0
    assert set(report["bench_throughput"]["result"]["cpu best"]) == {"1", "2"}
    assert report["search"]["result"]["done"] >= 1 and report["search"]["result"]["its_test_accuracy"] > 0
    assert run.stdout.startswith("GPU check (dry run on CPU)") and len(run.stdout.splitlines()) <= 24  # one screen


def test_a_failing_gpu_check_step_is_recorded_with_its_traceback_and_the_rest_go_on(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    failed = gpu_check.run_step("broken", lambda: 1 / 0)
    assert failed["ok"] is False and failed["error"].startswith("ZeroDivisionError")
    assert "Traceback" in failed["traceback"] and failed["seconds"] >= 0
    assert gpu_check.run_step("fine", lambda: {"n": 1}) == {"ok": True, "result": {"n": 1}, "seconds": 0.0}


@pytest.mark.slow
def test_bench_fleet_on_a_small_experiment_measures_what_readme_reports(tmp_path):
    """benchmarks/bench_fleet.py with 30 trials and two fake workers: every number README's table
    and fleet paragraph quote is there, summaries read less than whole trials, the fleet starts trials."""
    out = tmp_path / "fleet.json"
    options = ["--sizes", "30", "--repeats", "1", "--fleet", "2", "--fleet-base", "30", "--fleet-seconds", "2"]
    run = subprocess.run(
        [sys.executable, "benchmarks/bench_fleet.py", *options, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    for store in ("sqlite", "mongomock"):
        (row,) = result["latency"][store]
        assert row["trials"] == 30 and row["read_summaries_MB"] < row["read_whole_MB"] / 10
        for key in ("tpe_algorithm_ms", "anneal_algorithm_ms", "rand_algorithm_ms", "next_trial_ms", "status_ms"):
            assert row[key] > 0
    assert [(r["algorithm"], r["workers"]) for r in result["fleet"]] == [("tpe", 2), ("rand", 2)]
    assert all(r["trials_started_per_s"] > 0 and 0 < r["training_share"] <= 1 for r in result["fleet"])
