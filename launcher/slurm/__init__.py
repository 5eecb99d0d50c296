"""Everything Slurm: the allocation a step was given, its compressed host lists, submission through
submitit (one job, or a sweep's points), watching a job, the queue's answers, and the task that
becomes its rank in-process. The launcher's other modules know Slurm only through here and through
``launcher.environments.SlurmEnvironment``."""

# The run directory's Slurm parts, shared by every task of a job (and read by launcher.jobs):
LOG_FOLDER = "slurm"  # DIR/slurm: submitit's scripts and every task's output
FAILURES_DIR = "failures"  # DIR/failures: each failed task's record
