"""Records how this rank was started: forked from the launcher's fork server (a warm start) or as
a fresh interpreter, the launcher's child; as __main__, with its own argv and globals."""

import sys

FRESH_GLOBALS = sorted(name for name in globals() if not name.startswith("__"))

import atexit  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402

record = {"forked_by_server": os.getppid() != int(os.environ["LAUNCHER_PARENT_PID"]), "name": __name__, "argv": sys.argv[1:],
          "fresh_globals": FRESH_GLOBALS, "cwd": os.getcwd(), "own_session": os.getsid(0) == os.getpid(),
          "start_method": multiprocessing.get_start_method()}
with open(os.path.join(os.environ["USER_SCRIPT_OUT"], f"rank_{os.environ['RANK']}.json"), "w") as file:
    json.dump(record, file)


def leave_a_mark() -> None:
    """An exit handler, as scripts register to flush or close what they write: run at the end."""
    open(os.path.join(os.environ["USER_SCRIPT_OUT"], f"rank_{os.environ['RANK']}.atexit"), "w").close()


atexit.register(leave_a_mark)

# USER_SCRIPT_END=os_exit: end as scripts do to skip a slow teardown, after a forked child (as a
# DataLoader worker would be) has left the same way; rank 1 with code PROBE_RANK_1_CODE.
if os.environ.get("USER_SCRIPT_END") == "os_exit":
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    sys.stdout.write(f"rank {os.environ['RANK']} last words, unflushed")
    os._exit(int(os.environ.get("PROBE_RANK_1_CODE", "0")) if os.environ["RANK"] == "1" else 0)
