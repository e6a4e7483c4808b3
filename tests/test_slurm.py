"""deploy/slurm/larnn-workers.sbatch on a real Slurm: a job array of workers runs an experiment to
its budget, and Slurm's SIGTERM (scancel --signal=TERM, a preemption's, the time limit's warning)
gives the running trials back. The submitting tests need a Slurm cluster that answers (CI starts
one with deploy/slurm/local-cluster.sh); the script's refusals need none."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from larnn_core import cli
from larnn_core.data import dataset
from tests.support.data import synthetic_har
from tests.support.fake_workers import wait_for
from tests.test_supervisor import SPACE
from workers.records import DONE, NEW, RUNNING
from workers.store import open_store

ROOT = Path(__file__).resolve().parent.parent
SBATCH = ROOT / "deploy" / "slurm" / "larnn-workers.sbatch"


def slurm_answers() -> bool:
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False
    try:
        nodes = subprocess.run(
            ["sinfo", "--noheader", "--states=idle,mixed", "--format=%N"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return False
    return nodes.returncode == 0 and bool(nodes.stdout.strip())


needs_slurm = pytest.mark.skipif(
    not slurm_answers(),
    reason="no Slurm cluster answers (sinfo shows no idle node): start one with "
    "deploy/slurm/local-cluster.sh --listen-on-all-interfaces, as .ci/run does",
)


@pytest.fixture
def experiment(tmp_path, isolated_data_dir):
    """A store with an experiment of the tiny LARNN, its URL in a file only its owner may read,
    and the environment a job array needs (sbatch passes the submitter's environment on)."""

    def submit(max_evals: int, epochs: int):
        dataset.save(synthetic_har(), dataset.cache_path("hapt"))
        (tmp_path / "tiny.yaml").write_text(SPACE)
        url = f"sqlite:///{tmp_path / 'store.db'}"
        options = ["--max-evals", str(max_evals), "--epochs", str(epochs), "--pruner", "none", "--store", url]
        assert cli.main(["submit", str(tmp_path / "tiny.yaml"), "--name", "slurm", *options]) == 0
        url_file = tmp_path / "store-url"
        url_file.write_text(url + "\n")
        url_file.chmod(0o600)
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # larnn, as installed
            "PYTHONPATH": str(ROOT),
            "LARNN_STORE_FILE": str(url_file),
            "LARNN_DEVICES": "cpu",
            "LARNN_DATA": str(isolated_data_dir),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
        }
        env.pop("LARNN_STORE", None)
        return open_store(url, read_only=True), env

    return submit


def sbatch(tmp_path, env, *worker_options) -> str:
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--array=0-1", "--cpus-per-task=1", "--time=10", str(SBATCH), *worker_options],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip().split(";")[0]


def job_gone(job: str) -> bool:
    queue = subprocess.run(["squeue", "--noheader", "--jobs", job], capture_output=True, text=True, timeout=30)
    return queue.returncode != 0 or not queue.stdout.strip()


@pytest.mark.slow
@needs_slurm
def test_a_job_array_of_two_workers_runs_the_experiment_to_exactly_its_budget(tmp_path, experiment):
    store, env = experiment(max_evals=4, epochs=2)
    job = sbatch(tmp_path, env, "--experiment", "slurm", "--idle-exit", "5", "--heartbeat", "0.5")
    try:
        wait_for(lambda: job_gone(job), timeout=300, poll_s=1.0)
    finally:
        subprocess.run(["scancel", job], timeout=30)
    trials = store.trials("slurm")
    assert len(trials) == 4 and all(t.state == DONE for t in trials), [(t.state, t.result.error) for t in trials]
    logs = sorted(tmp_path.glob(f"larnn-workers-{job}_*.log"))
    assert [log.name for log in logs] == [f"larnn-workers-{job}_0.log", f"larnn-workers-{job}_1.log"]
    for task, log in enumerate(logs):
        assert f"array task {task} of job {job}" in log.read_text()
    assert "sqlite" not in " ".join(log.read_text().splitlines()[0] for log in logs)  # the URL is not logged


@pytest.mark.slow
@needs_slurm
def test_slurms_sigterm_makes_each_worker_give_its_trial_back(tmp_path, experiment):
    store, env = experiment(max_evals=2, epochs=150)  # trials long enough to be interrupted
    job = sbatch(tmp_path, env, "--experiment", "slurm", "--heartbeat", "0.5")
    try:
        wait_for(lambda: sum(t.state == RUNNING for t in store.trials("slurm")) == 2, timeout=180, poll_s=1.0)
        subprocess.run(["scancel", "--signal=TERM", job], check=True, timeout=30)
        wait_for(lambda: job_gone(job), timeout=120, poll_s=1.0)
    finally:
        subprocess.run(["scancel", job], timeout=30)
    trials = store.trials("slurm")
    assert [t.state for t in trials] == [NEW, NEW]  # back in the queue, for the next worker
    assert all(t.attempt_log[-1].outcome == "given back" and t.attempts == 0 for t in trials)


@pytest.mark.parametrize(
    "mode, content, message",
    [
        (0o644, "sqlite:///x.db\n", "is readable by others (mode 644): chmod 600 it"),
        (None, None, "no store URL file"),
    ],
)
def test_the_script_refuses_a_store_url_file_others_may_read_or_a_missing_one(tmp_path, mode, content, message):
    url_file = tmp_path / "store-url"
    if content is not None:
        url_file.write_text(content)
        url_file.chmod(mode)
    env = {**os.environ, "LARNN_STORE_FILE": str(url_file), "PATH": "/usr/bin:/bin"}  # no srun needed to refuse
    ran = subprocess.run(["bash", str(SBATCH)], env=env, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 2 and message in ran.stderr and len(ran.stderr.splitlines()) == 1, ran.stderr
