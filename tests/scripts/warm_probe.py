"""Records how this rank was started: forked from the launcher's fork server (a warm start) or as
a fresh interpreter, the launcher's child; as __main__, with its own argv and globals."""

import sys

FRESH_GLOBALS = sorted(name for name in globals() if not name.startswith("__"))

import json  # noqa: E402
import os  # noqa: E402

record = {"forked_by_server": os.getppid() != int(os.environ["LAUNCHER_PARENT_PID"]), "name": __name__, "argv": sys.argv[1:],
          "fresh_globals": FRESH_GLOBALS, "cwd": os.getcwd(), "own_session": os.getsid(0) == os.getpid()}
with open(os.path.join(os.environ["USER_SCRIPT_OUT"], f"rank_{os.environ['RANK']}.json"), "w") as file:
    json.dump(record, file)
