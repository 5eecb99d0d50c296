"""Records how this rank was started: forked from the launcher's fork server (a warm start) or as
a fresh interpreter, the launcher's child; as __main__, with its own argv and globals."""

import sys

FRESH_GLOBALS = sorted(name for name in globals() if not name.startswith("__"))

import atexit  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402


def open_files() -> list[str]:
    names = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the directory's own descriptor, closed by now
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
    return names


def python_signal_handlers() -> dict[str, str]:
    import signal

    return {signal.Signals(signum).name: getattr(handler, "__qualname__", repr(handler))
            for signum in signal.valid_signals() if callable(handler := signal.getsignal(signum))}


def cpp_log_level() -> int:
    import ctypes

    import torch

    library = ctypes.CDLL(os.path.join(torch.__path__[0], "lib", "libc10.so"))
    return ctypes.c_int.in_dll(library, "FLAGS_caffe2_log_level").value


def hydra_starts_afresh() -> bool:
    """A script of the user's that uses Hydra itself must find no app of the launcher's."""
    from hydra import compose, initialize
    from hydra.core.hydra_config import HydraConfig

    with initialize(version_base=None):
        return compose(overrides=["+probe=1"]).probe == 1 and not HydraConfig.initialized()


logging.basicConfig(level=logging.INFO, format="probe says: %(message)s")  # takes effect, as alone
logging.getLogger("probe").info("the script's own logging")
record = {"forked_by_server": os.getppid() != int(os.environ["LAUNCHER_PARENT_PID"]), "name": __name__, "argv": sys.argv[1:],
          "fresh_globals": FRESH_GLOBALS, "cwd": os.getcwd(), "own_session": os.getsid(0) == os.getpid(),
          "start_method": multiprocessing.get_start_method(),
          "open_files": open_files(), "signal_handlers": python_signal_handlers(),
          "cpp_log_level": cpp_log_level(), "hydra_starts_afresh": hydra_starts_afresh()}
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
