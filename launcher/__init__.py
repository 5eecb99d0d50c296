"""Launch PyTorch DDP jobs: one command that gives every rank the right environment."""

__version__ = "0.1.0"
