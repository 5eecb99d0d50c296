"""The allowed values of the trainer's options, in a module without torch so the launcher can check
a config against them before it starts anything (one list for both)."""

PRECISIONS = ("32", "bf16", "fp16")
MODES = ("train", "eval")
LR_SCALING_RULES = ("none", "linear", "sqrt")
SCHEDULE_INTERVALS = ("step", "epoch")
PROGRESS_BAR = ("auto", True, False)
