"""``python -m trainer RUN_DIR/config.yaml``: one rank of a DDP job (see trainer.train)."""

import atexit
import logging
import multiprocessing
import os
import sys

from trainer.train import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    # Everything is written and closed. Tearing down the interpreter after a gloo/DDP session costs
    # about a second per process here (and can abort in C++ destructors): run the exit handlers,
    # flush, and leave. A rank forked by the launcher's fork server returns instead when it
    # succeeded (torchrun's agent waits for that); multiprocessing then leaves without teardown.
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    if code or multiprocessing.parent_process() is None:
        os._exit(code)
