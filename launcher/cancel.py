"""``python -m launcher.cancel RUN_DIR``: see ``launcher.jobs``."""

import sys

from launcher.workdir import search_working_directory_last

if __name__ == "__main__":
    search_working_directory_last()
    from launcher.jobs import cancel_main

    sys.exit(cancel_main(sys.argv[1:]))
