"""Launch PyTorch DDP jobs: one command that gives every rank the right environment."""

__version__ = "0.1.0"

from launcher.resolvers import register_resolvers

# Registered on import, wherever the package is loaded: a Slurm task that unpickles a sweep's
# config needs them before anything else of ours runs.
register_resolvers()
