"""Where Python looks for modules when a user runs one of our commands in their project.

Every entry point (``python -m launcher``, ``launcher.check``, ``launcher.status``, ``launcher.logs``,
``launcher.cancel``, ``launcher.report``, a rank's ``launcher.child``) calls this before it imports
anything of ``trainer``: ``python -m`` puts the working directory first, and a user's ``trainer.py``
or ``trainer/`` there would be taken for ours.
"""

from __future__ import annotations

import os
import sys


def search_working_directory_last() -> None:
    """The user's working directory is searched after the installed packages, so a ``trainer.py``
    or ``trainer/`` there cannot replace ours (in the launcher or in a rank); the user's own modules
    there still import. A script's own directory still comes first, as ``python script.py`` has it.
    (``python -m launcher`` itself runs a ``launcher.py`` of the working directory, as Python always
    does: ``ddp-launch`` or ``python -P -m launcher`` do not.)"""
    here = {"", ".", os.getcwd()}
    entries = [entry for entry in sys.path if entry not in here]
    sys.path[:] = [*entries, os.getcwd()]
