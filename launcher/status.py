"""``python -m launcher.status RUN_DIR``: see ``launcher.jobs``."""

import sys

from launcher.jobs import status_main

if __name__ == "__main__":
    sys.exit(status_main(sys.argv[1:]))
