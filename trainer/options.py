"""The allowed values of the trainer's options, in a module without torch so the launcher can check
a config against them before it starts anything (one list for both)."""

PRECISIONS = ("32", "bf16", "fp16")
MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision's three
MODES = ("train", "eval")
LR_SCALING_RULES = ("none", "linear", "sqrt")
SCHEDULE_INTERVALS = ("step", "epoch")
PROGRESS_BAR = ("auto", True, False)
CACHE_SCOPES = ("global", "node")  # data.cache_scope: rank 0 prepares, or local rank 0 of each node
WORKER_START_METHODS = ("fork", "forkserver", "spawn")  # data.worker_start_method: DataLoader workers
