"""``python -m launcher.status RUN_DIR``: see ``launcher.jobs``."""

import sys

from launcher.workdir import search_working_directory_last

if __name__ == "__main__":
    search_working_directory_last()
    from launcher.jobs import status_main

    sys.exit(status_main(sys.argv[1:]))
