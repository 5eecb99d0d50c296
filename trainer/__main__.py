"""``python -m trainer RUN_DIR/config.yaml``: one rank of a DDP job (see trainer.train)."""

import sys

from trainer.train import main

if __name__ == "__main__":
    main(sys.argv[1:])
