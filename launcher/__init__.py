"""Launch PyTorch DDP jobs: one command that gives every rank the right environment."""

__version__ = "0.1.0"

from launcher.resolvers import register_resolvers

# Registered on import, wherever the package is loaded: a Slurm task that unpickles a sweep's
# config needs them before anything else of ours runs.
register_resolvers()


def __getattr__(name: str) -> object:
    """``launcher.launch`` without importing Hydra and the launch machinery at ``import launcher``
    (every rank imports this package)."""
    if name == "launch":
        from launcher.api import launch

        return launch
    raise AttributeError(f"module 'launcher' has no attribute {name!r}")
