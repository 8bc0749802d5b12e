"""Exit codes, and how an error becomes one line for a shell user, with the key redacted."""

from typing import cast

from .. import (
    APIConnectionError,
    AuthenticationError,
    InsufficientCreditsError,
    InvalidRequestError,
)

__all__ = [
    "EXIT_AUTH",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "REDACTED",
    "CliError",
    "describe",
    "exit_code_for",
    "leaf",
    "one_line",
    "os_error",
    "redact",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERRUPTED = 130

REDACTED = "***"


class CliError(Exception):
    """An error the command line reports as one line, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        self.exit_code = exit_code
        super().__init__(message)


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` (and of its trimmed form) replaced by ``***``.

    A server may echo the key it was sent ("Invalid API key provided: Bearer sk-..."); what
    the command line prints goes through this first. No secret, or a blank one, changes nothing.
    """
    if not secret:
        return text
    # The client sends the key trimmed, so a server echoes that form; the untrimmed one is what
    # the user typed. Longer first, so that one replacement cannot leave part of the other.
    for form in sorted({secret, secret.strip()} - {""}, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, made one space."""
    return " ".join(text.split())


def leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup):
        members = cast("BaseExceptionGroup[BaseException]", exc).exceptions
        exc = next((e for e in members if isinstance(e, Exception)), members[0])
    return exc


def describe(exc: BaseException) -> str:
    """A one-line message for an error, worded for a shell user (not yet redacted)."""
    if isinstance(exc, AuthenticationError):
        return f"the API key was refused ({exc}); check --api-key or NANOBANANA_API_KEY"
    if isinstance(exc, InsufficientCreditsError):
        return f"the account is out of credits ({exc})"
    if isinstance(exc, APIConnectionError):
        return f"could not reach the API: {exc}"
    return one_line(str(exc)) or type(exc).__name__


def os_error(exc: OSError) -> str:
    """An `OSError` as its reason and the file it concerns: ``File exists: out``."""
    return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an error that ended a command."""
    if isinstance(exc, CliError):
        return exc.exit_code
    if isinstance(exc, (AuthenticationError, InsufficientCreditsError)):
        return EXIT_AUTH
    if isinstance(exc, InvalidRequestError):
        return EXIT_USAGE
    return EXIT_FAILURE
