"""``python -m launcher.logs RUN_DIR``: see ``launcher.jobs``."""

import sys

from launcher.jobs import logs_main

if __name__ == "__main__":
    sys.exit(logs_main(sys.argv[1:]))
