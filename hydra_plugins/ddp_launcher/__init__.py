"""The launcher's Hydra plugins. Hydra instantiates a launcher only from the ``hydra_plugins``
namespace package (and finds it by scanning that package), so ``hydra/launcher=slurm_submit``
names the class here; everything it does is in ``launcher.slurm.sweep``."""

from launcher.slurm.sweep import SubmitAndExitSlurmLauncher as _SubmitAndExitSlurmLauncher


class SubmitAndExitSlurmLauncher(_SubmitAndExitSlurmLauncher):
    __doc__ = _SubmitAndExitSlurmLauncher.__doc__
