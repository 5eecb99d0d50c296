"""``python -m launcher.cancel RUN_DIR``: see ``launcher.jobs``."""

import sys

from launcher.jobs import cancel_main

if __name__ == "__main__":
    sys.exit(cancel_main(sys.argv[1:]))
