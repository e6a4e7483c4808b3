"""A worker process with a fast fake objective, for the multi-process tests (workers.spawn starts it).

usage: python tests/support/worker_process.py STORE_URL RUNS_LOG EPOCH_SECONDS EPOCHS
                                              [HEARTBEAT STALE_AFTER [SPOOL [SLOTS]]]
Each trial appends "pid learning_rate" to RUNS_LOG when it starts, sleeps EPOCHS x EPOCH_SECONDS
(calling on_epoch between epochs) and reports accuracy = 1 - |learning_rate - 0.01|.
"""

import logging
import os
import sys

from tests.support.fake_workers import sleepy_objective
from workers.slots import run_slots
from workers.store import open_store
from workers.worker import Worker

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(message)s")
    url, runs, epoch_s, epochs = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    heartbeat, stale = (float(sys.argv[5]), float(sys.argv[6])) if len(sys.argv) > 6 else (10.0, 120.0)
    spool = sys.argv[7] if len(sys.argv) > 7 else os.path.join(os.path.dirname(runs), f"spool-{os.getpid()}")
    slots = int(sys.argv[8]) if len(sys.argv) > 8 else 1
    store = open_store(url)
    run_slots(
        lambda owner: Worker(
            store,
            sleepy_objective(runs, epoch_s, epochs),
            owner=owner,
            heartbeat_s=heartbeat,
            stale_after_s=stale,
            poll_s=0.05,
            idle_exit_s=2.0,
            spool=spool,
        ),
        slots,
        "cpu",
    )
