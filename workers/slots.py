"""`larnn worker --slots N`: N trials at once on one device, in one process.

One LARNN training leaves most of a GPU idle: its step is a long chain of small kernels, bound by
launch latency rather than by the chip. Slots fill the gaps. Each slot is a Worker of its own (its
own owner, heartbeats, spool files, pruning, stop and failure handling, exactly as one worker
alone), running in its own thread. On CUDA each slot's thread trains on a CUDA stream of its own
(PyTorch's current stream is per thread), so one slot's kernels do not queue behind another's;
each training captures its own CUDA graphs, with their own memory pool. An exception or a CUDA
out-of-memory in one slot fails that slot's trial only (the Worker catches it). Trainings draw
from random generators of their own (larnn_core/train.py), so a trial's result does not depend
on what the other slots do. SIGTERM or Ctrl-C stops every slot at its next epoch boundary, each
giving its trial back. A slot whose loop ends on an error that concerns them all (the spool
cannot be written, the one experiment asked for has failed) stops the others, and the error is
raised once all have stopped.

A slot's owner is `<worker>/slot<k>-of-<N>`, so `larnn status` can show each live worker's slots.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # workers.worker imports torch; `larnn status` reads SLOT without it
    from workers.worker import Worker

MAX_SLOTS = 64  # slots per worker process: the throughput benchmark measures up to 16; past a few dozen, threads thrash
SLOT = re.compile(r"^(?P<worker>.+)/slot(?P<slot>\d+)-of-(?P<slots>\d+)$")


def slot_owner(worker: str, slot: int, slots: int) -> str:
    return f"{worker}/slot{slot}-of-{slots}"


def run_slots(make_worker: Callable[[str | None], Worker], slots: int, device: str) -> int:
    """Run `slots` workers (make_worker(owner) each) until every one has stopped; the trials they
    finished. With one slot, that worker runs here as it would alone."""
    from workers.worker import default_owner

    if slots == 1:
        return make_worker(None).run()
    base = default_owner()
    workers = [make_worker(slot_owner(base, k, slots)) for k in range(1, slots + 1)]
    errors: list[BaseException] = []

    def stop_all(*_) -> None:
        for worker in workers:
            worker.stop()

    def run(worker: Worker) -> None:
        if device.startswith("cuda"):
            import torch

            torch.cuda.set_stream(torch.cuda.Stream(device=device))
        try:
            worker.run()
        except Exception as error:  # raised in the main thread once every slot has stopped
            errors.append(error)
            stop_all()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop_all)
    threads = [threading.Thread(target=run, args=(w,), name=w.owner.rsplit("/", 1)[1]) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # a timed join, so that the main thread still handles signals
            thread.join(0.5)
    if errors:
        raise errors[0]
    return sum(w.finished for w in workers)
