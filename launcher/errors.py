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


class UncheckedConfig(ConfigError):
    """A check that failed with an exception of another kind (a value of a type the code did not
    expect, a bug in a check): still one line and exit code 2, never a traceback and never a job
    started on a config nobody checked. Names the key where the exception does (OmegaConf's)."""

    def __init__(self, error: Exception) -> None:
        key = str(getattr(error, "full_key", "") or "")
        text = str(getattr(error, "msg", "") or error).strip().splitlines()
        reason = f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
        self.key, self.value, self.allowed, self.hint = key, None, f"could not be checked ({reason})", None
        Exception.__init__(self, f"invalid config: {key + ': ' if key else ''}{self.allowed}")


def as_config_error(error: Exception) -> ConfigError:
    """``error`` as the one-line report of a config that cannot be used."""
    return error if isinstance(error, ConfigError) else UncheckedConfig(error)


class StartFailed(Exception):
    """The ranks could not be started or could not find each other; the message says why."""


class LaunchFailed(RuntimeError):
    """``launcher.launch()``: the job failed; the message names the first failing rank, its host and
    its traceback, and ``failure`` holds the same as data (``launcher.failures.RankFailure``)."""

    def __init__(self, message: str, failure: object | None = None) -> None:
        super().__init__(message)
        self.failure = failure
