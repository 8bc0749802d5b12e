"""The terminal: results on stdout, progress and errors on stderr, every line key-free.

`execute` runs a command on anyio and turns what it raises into one ``error:`` line and an
exit code. Every line printed through `Ui` has the key in use redacted, since a server may
echo it in an error message.
"""

import logging
import sys
from collections.abc import Awaitable, Callable

import anyio
from rich.console import Console
from rich.logging import RichHandler

from .. import NanoBananaError
from ._exit import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    CliError,
    describe,
    exit_code_for,
    leaf,
    one_line,
    os_error,
    redact,
)

__all__ = ["Ui", "execute", "setup_logging"]


class Ui:
    """The two consoles: results on stdout, progress and errors on stderr.

    Args:
        verbose: Show tracebacks of unexpected errors (and, set up elsewhere, log requests).
        secret: The API key in use, redacted from every line printed through this object.
    """

    def __init__(self, *, verbose: bool, secret: str | None = None) -> None:
        self.out: Console = Console(highlight=False, soft_wrap=True)
        self.err: Console = Console(stderr=True, highlight=False)
        self.verbose = verbose
        self.secret = secret
        fancy = (self.err.encoding or "").lower().replace("-", "").startswith("utf")
        self.ok_mark = "✓" if fancy else "+"
        self.fail_mark = "✗" if fancy else "x"

    def clean(self, text: str) -> str:
        """``text`` with the key in use redacted: for what came from a server or the user."""
        return redact(text, self.secret)

    def error(self, message: str) -> None:
        """Print one ``error:`` line on stderr."""
        sys.stderr.write(f"error: {one_line(self.clean(message))}\n")
        sys.stderr.flush()

    def info(self, message: str) -> None:
        """Print a line of information on stderr (no markup)."""
        self.err.print(self.clean(message), markup=False, soft_wrap=True)

    def result(self, message: str) -> None:
        """Print a line of result on stdout (no markup)."""
        self.out.print(self.clean(message), markup=False, soft_wrap=True)


class _Redacting(logging.Filter):
    """Redacts the key from each record's message, in case a server echoed it."""

    def __init__(self, secret: str | None) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self._secret)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def setup_logging(console: Console, secret: str | None = None) -> None:
    """Log the library's requests (``--verbose``) to ``console``, with ``secret`` redacted."""
    handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
    handler.addFilter(_Redacting(secret))
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler], force=True)
    logging.getLogger("nanobanana_async").setLevel(logging.DEBUG)


def execute(
    ui: Ui,
    work: Callable[[], Awaitable[int]],
    *,
    on_interrupt: Callable[[], None] | None = None,
) -> int:
    """Run ``work`` on anyio and turn what it raises into one line and an exit code."""
    try:
        return anyio.run(work)
    except BaseException as exc:
        # Errors from inside task groups arrive wrapped in exception groups.
        error = leaf(exc)
        if not isinstance(error, (Exception, KeyboardInterrupt)):
            raise
        if isinstance(error, KeyboardInterrupt):
            if on_interrupt is not None:
                on_interrupt()
            else:
                ui.error("interrupted")
            return EXIT_INTERRUPTED
        if isinstance(error, (NanoBananaError, CliError)):
            ui.error(describe(error))
            return exit_code_for(error)
        if isinstance(error, OSError):
            ui.error(os_error(error))
            return EXIT_FAILURE
        if ui.verbose:
            raise
        ui.error(
            f"unexpected {type(error).__name__}: {describe(error)} "
            "(run with --verbose for the traceback)"
        )
        return EXIT_FAILURE
