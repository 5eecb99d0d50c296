"""Errors the launcher reports to the user without a traceback."""

from __future__ import annotations

CONFIG_ERROR_EXIT_CODE = 2


class ConfigError(Exception):
    """A configuration value that cannot work: reported as one line, exit code 2, nothing started."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid config: {key}={value!r}: {allowed}")


class JobFailed(Exception):
    """The job ran and failed; the message already names what failed where."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
