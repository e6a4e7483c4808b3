"""The deployment (docker-compose.yml, Dockerfile, .env.example) without a Docker engine: a real
Compose implementation validates the file, and its structure is held to what README promises:
authentication, loopback by default, no credential in the repository or on a command line, every
GPU reserved, the services and profiles users run."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)")
REFERENCE = re.compile(r"\$\{[A-Z_][A-Z0-9_]*(:?[-?][^}]*)?\}")


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def compose_command() -> list[str] | None:
    """A real Compose implementation: Docker's plugin (`docker compose`) or Debian's docker-compose."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.skipif(
    compose_command() is None,
    reason="no Compose implementation installed (docker compose or "
    "docker-compose; .ci/run installs Debian's docker-compose)",
)
def test_a_real_compose_implementation_accepts_every_profile():
    profiles = [
        part
        for service in SERVICES.values()
        for profile in service.get("profiles", [])
        for part in ("--profile", profile)
    ]
    done = subprocess.run(
        [*compose_command(), "--env-file", ".env.example", "-f", "docker-compose.yml", *profiles, "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_services_and_profiles():
    profiles = {name: service.get("profiles", []) for name, service in SERVICES.items()}
    assert profiles == {
        "mongo": [],
        "worker": [],
        "worker-cpu": ["cpu"],
        "cli": ["cli"],
        "dashboard": ["dashboard"],
        "test": ["test"],
    }
    assert re.fullmatch(r"mongo:\d+", SERVICES["mongo"]["image"])  # the official image, major version pinned
    assert "mongosh" in SERVICES["mongo"]["healthcheck"]["test"]
    for name in ("worker", "worker-cpu", "cli", "dashboard", "test"):
        assert SERVICES[name]["depends_on"] == {"mongo": {"condition": "service_healthy"}}, name


def test_mongodb_authenticates_and_listens_on_loopback_by_default():
    mongo = SERVICES["mongo"]
    for variable in ("MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD", "LARNN_DB_USER", "LARNN_DB_PASSWORD"):
        assert REFERENCE.fullmatch(mongo["environment"][variable]), variable
    assert any("docker-entrypoint-initdb.d" in volume for volume in mongo["volumes"])  # creates the app user
    init = (ROOT / "deploy" / "mongo-init.js").read_text()
    assert 'roles: [{role: "readWrite", db: "larnn"}]' in init
    for name, service in SERVICES.items():
        for port in service.get("ports", []):  # HOST:PUBLISHED:TARGET once each ${VAR:-default} is its default
            host, _, _ = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", port).split(":")
            assert host == "127.0.0.1", (name, port)
    assert env_example()["MONGO_BIND"] == env_example()["DASHBOARD_BIND"] == "127.0.0.1"


def test_every_variable_is_in_env_example_and_no_credential_is_written_anywhere():
    text = (ROOT / "docker-compose.yml").read_text()
    example = env_example()
    assert set(VARIABLE.findall(text)) <= set(example), set(VARIABLE.findall(text)) - set(example)
    assert all("CHANGE-ME" in value for key, value in example.items() if "PASSWORD" in key)
    for user, password in re.findall(r"://([^:@/\s]+):([^@\s]+)@", text):  # URLs with credentials
        assert REFERENCE.fullmatch(user) and REFERENCE.fullmatch(password), (user, password)
    for service in SERVICES.values():
        for key, value in service.get("environment", {}).items():
            if "PASSWORD" in key:
                assert REFERENCE.fullmatch(value), key
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored and ".env" in (ROOT / ".dockerignore").read_text().split()


def test_no_command_line_carries_the_store_and_workers_read_it_from_the_environment():
    for name, service in SERVICES.items():
        assert "--store" not in service.get("command", []) + service.get("entrypoint", []), name
    for name in ("worker", "worker-cpu", "cli"):
        assert SERVICES[name]["environment"]["LARNN_STORE"].startswith("mongodb://${LARNN_DB_USER"), name


def test_no_privileges_or_host_namespaces():
    for name, service in SERVICES.items():
        assert not service.get("privileged") and "cap_add" not in service, name
        for namespace in ("network_mode", "pid", "ipc"):
            assert service.get(namespace) != "host", (name, namespace)


def test_the_worker_reserves_every_gpu_and_runs_one_process_per_device():
    (devices,) = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices["count"] == "all" and "gpu" in devices["capabilities"]
    assert SERVICES["worker"]["command"] == ["worker", "--devices", "${LARNN_DEVICES:-all}"]
    assert (
        SERVICES["worker-cpu"]["command"] == ["worker", "--devices", "cpu"] and "deploy" not in SERVICES["worker-cpu"]
    )
    for name in ("worker", "worker-cpu"):
        volumes = SERVICES[name]["volumes"]
        assert "har-data:/data" in volumes and "spool:/cache" in volumes, name  # named volumes outlive containers
    assert SERVICES["cli"]["volumes"][-1] == "./results:/results"


def test_the_image_runs_as_a_user_from_a_pinned_base_and_its_commands_exist():
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:3\.\d+-slim", base)  # a pinned Python; PyTorch pinned below
    assert re.search(r"^USER larnn$", dockerfile, re.M) and 'ENTRYPOINT ["larnn"]' in dockerfile
    assert "ARG EXTRAS=hapt\n" in dockerfile  # no test dependencies in the worker image
    assert SERVICES["test"]["build"]["args"]["EXTRAS"] == "hapt,dev"
    commands = {tuple(service["command"][:1]) for service in SERVICES.values() if service.get("command")}
    for command in sorted(commands | {("worker",), ("submit",), ("status",), ("best",), ("plot",)}):
        done = subprocess.run(
            [sys.executable, "-m", "larnn_core.cli", *command, "--help"], capture_output=True, text=True
        )
        assert done.returncode == 0 and "usage: larnn" in done.stdout, (command, done.stderr)


def test_the_image_and_ci_use_one_pytorch_release():
    """The image runs the PyTorch that CI tests the code with (its major.minor: a CUDA wheel of the
    same release as .ci/run's CPU one)."""
    image = re.search(r"^ARG TORCH=(\d+\.\d+)\.\d+$", (ROOT / "Dockerfile").read_text(), re.M)
    ci = re.search(r"torch==(\d+\.\d+)\.\d+", (ROOT / ".ci" / "run").read_text())
    assert image and ci and image[1] == ci[1], (image, ci)
