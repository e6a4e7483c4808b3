"""One worker process per device of a host: `larnn worker --devices all | cpu | cuda:0,cuda:2`.

A container (or a user) starts one supervisor; it runs `larnn worker --device D` for each device D,
restarts a child that dies (killed, or crashed), and forwards SIGTERM and Ctrl-C to every child,
each of which then gives its trial back at its next epoch boundary. The store URL reaches the
children through LARNN_STORE, never their command lines, where `ps` would show its password.

A child that exits 0 (its --max-trials or --idle-exit reached) has finished and is not restarted;
nor is one that exits 2, the CLI's status for bad input, or 3, a worker's status when it stops for
a reason of its own (its spool cannot be written, its experiment failed: the line before says
which): a restart would only meet them again. Any other exit, or a signal, is restarted; a store
that is down is not such a reason (a worker waits for it).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("larnn.supervisor")

BAD_INPUT = 2  # larnn's exit status for a refused input (larnn_core/cli.py)
CANNOT_GO_ON = 3  # larnn worker's exit status when it stops for a reason a restart would meet again
NOT_RESTARTED = {BAD_INPUT: "refused its input", CANNOT_GO_ON: "cannot go on"}
DEVICE = re.compile(r"cpu|cuda:(\d+)")


def parse_devices(text: str, cuda_count: Callable[[], int]) -> list[str]:
    """--devices: `all` (every visible CUDA device), or a comma-separated list of `cpu` and `cuda:N`
    (a device may repeat: two workers on it). ValueError naming the entry that is wrong."""
    if text == "all":
        count = cuda_count()
        if count == 0:
            raise ValueError("--devices all: no CUDA device is visible; use --devices cpu")
        return [f"cuda:{i}" for i in range(count)]
    devices = [entry.strip() for entry in text.split(",")]
    for entry in devices:
        match = DEVICE.fullmatch(entry)
        if match is None:
            raise ValueError(f"--devices: {entry[:40]!r} is not cpu or cuda:N (or use all)")
        if match.group(1) is not None and int(match.group(1)) >= cuda_count():
            raise ValueError(f"--devices: {entry} is not visible ({cuda_count()} CUDA device(s))")
    return devices


@dataclass
class Child:
    device: str
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0


class Supervisor:
    """Runs worker_args (the `larnn worker` options other than the device and the store) once per
    device until every child has finished, or until SIGTERM / SIGINT."""

    def __init__(
        self,
        devices: list[str],
        worker_args: list[str],
        store_url: str,
        *,
        restart_delay_s: float = 2.0,
        max_restart_delay_s: float = 60.0,
        poll_s: float = 0.2,
    ):
        self.devices, self.worker_args = devices, worker_args
        self.env = {**os.environ, "LARNN_STORE": store_url}
        if all(device == "cpu" for device in devices):  # CPU workers share the cores
            self.env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(devices))))
        self.restart_delay_s, self.max_restart_delay_s, self.poll_s = restart_delay_s, max_restart_delay_s, poll_s
        self.stopping = False
        self.children: list[Child] = []

    def _start(self, device: str, restarts: int = 0) -> Child:
        command = [sys.executable, "-m", "larnn_core.cli", "worker", "--device", device, *self.worker_args]
        process = subprocess.Popen(command, env=self.env, start_new_session=True)  # signals come from here only
        log.info("worker on %s started (pid %d)", device, process.pid)
        return Child(device, process, restarts=restarts)

    def _stop(self, signum, frame) -> None:
        if not self.stopping:
            log.info("stopping %d worker(s) at their next epoch boundary", len(self.children))
        self.stopping = True
        for child in self.children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """0 when every child finished or was stopped; else the exit status of the last child
        that was not restarted (2 or 3)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        self.children = [self._start(device) for device in self.devices]
        status, pending = 0, []  # pending: (when, device, restarts) of children to start again
        while self.children or (pending and not self.stopping):
            time.sleep(self.poll_s)
            for child in list(self.children):
                code = child.process.poll()
                if code is None:
                    continue
                self.children.remove(child)
                if self.stopping or code == 0:
                    log.info("worker on %s exited (%d)", child.device, code)
                elif code in NOT_RESTARTED:
                    log.error("worker on %s %s (exit %d): not restarted", child.device, NOT_RESTARTED[code], code)
                    status = code
                else:
                    steady = time.monotonic() - child.started > self.max_restart_delay_s
                    restarts = 0 if steady else child.restarts + 1
                    delay = min(self.max_restart_delay_s, self.restart_delay_s * 2 ** max(0, restarts - 1))
                    log.warning(
                        "worker on %s died (%s); restarting in %.0f s",
                        child.device,
                        f"signal {-code}" if code < 0 else f"exit {code}",
                        delay,
                    )
                    pending.append((time.monotonic() + delay, child.device, restarts))
            now = time.monotonic()
            for entry in [p for p in pending if p[0] <= now and not self.stopping]:
                pending.remove(entry)
                self.children.append(self._start(entry[1], entry[2]))
        return status
