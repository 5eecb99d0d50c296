"""Errors the launcher reports to the user without a traceback."""

from __future__ import annotations

CONFIG_ERROR_EXIT_CODE = 2


class ConfigError(Exception):
    """A configuration value that cannot work: reported as one line, exit code 2, nothing started."""

    def __init__(self, key: str, value: object, allowed: str, hint: str | None = None) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        self.hint = hint  # printed under the one-line message (e.g. the #SBATCH lines that fit)
        super().__init__(f"invalid config: {key}={value!r}: {allowed}")


class StartFailed(Exception):
    """The ranks could not be started or could not find each other; the message says why."""


class LaunchFailed(RuntimeError):
    """``launcher.launch()``: the job failed; the message names the first failing rank, its host and
    its traceback, and ``failure`` holds the same as data (``launcher.failures.RankFailure``)."""

    def __init__(self, message: str, failure: object | None = None) -> None:
        super().__init__(message)
        self.failure = failure
