"""Errors that carry data and are rendered once, at the CLI edge.

Ports raise these; connectors translate their library's exceptions into them so
the core never sees a caldav/google/msal exception type.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base class. `hint` is the next thing the user should do, if any."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message

    def render_line(self) -> str:
        """One line for `status`: the problem and what to do about it."""
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class UserError(SyncdError):
    """Wrong input from the user (config, arguments): exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """One or more problems in the config file, each naming file, line and key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class StateLocked(SyncdError):
    """Another syncd holds the state directory lock."""


class RemoteError(SyncdError):
    """A remote (source or calendar) failed; `retryable` says whether a later
    try may succeed (5xx, timeouts) or needs the user (401, 403, not found)."""

    def __init__(self, message: str, hint: str = "", retryable: bool = True) -> None:
        super().__init__(message, hint)
        self.retryable = retryable


class AuthError(RemoteError):
    """Credentials missing, rejected or expired: the user must act."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint, retryable=False)


class AlreadyExists(RemoteError):
    """A create met an existing object with the same identity (If-None-Match: *
    412, Google 409, UID conflict). The caller fetches it and adopts it."""


class PreconditionFailed(RemoteError):
    """An update's ETag no longer matches (412): re-read, merge, retry."""


class NotFound(RemoteError):
    """The object is gone from the remote."""


class CursorExpired(RemoteError):
    """The sync token/delta link was rejected; the caller re-reads in full."""
