"""The ``nanobanana`` command line: generate, edit, batch, status, download, demo, fake-server.

typer and rich come with the ``[cli]`` extra. This package imports them only once `main` runs
(its modules import them freely: `main` imports those only after checking), so
``import nanobanana_async`` never does, and a missing extra is one line of advice, not a
traceback. Everything else runs on anyio (``anyio.run``), like the library.

Results go to stdout (saved paths, summaries, ``status``); progress, per-job lines and errors
go to stderr, so ``nanobanana generate "..." > paths.txt`` keeps only the paths. An error is one
line, ``error: ...``, with the API key in use redacted, and the exit code says what kind it was:

* 0 — everything asked for was done;
* 1 — an API or task failure (a task failed, a wait timed out, the API was unreachable, a
  result could not be saved);
* 2 — bad usage or input (a bad option, an unreadable file, an invalid row or request):
  nothing was sent for it;
* 3 — the API key is missing or was refused, or the account is out of credits;
* 130 — interrupted (Ctrl-C).

The modules: ``_exit`` (exit codes, error lines, redaction), ``_rows`` (batch files),
``_ui`` (the consoles, running a command), ``_commands`` (the one-task commands), ``_batch``
(a batch with progress and summary), ``_progress`` (its progress lines), ``_check`` (``batch
--check``), ``_names`` (``--name`` templates), ``_gallery`` (the ``index.html`` page),
``_args`` (arguments typer does not place), ``_demo``, ``_fake_server``, and ``_app`` (the
typer app).
"""

import sys

from ._exit import EXIT_FAILURE, EXIT_OK

__all__ = ["main"]

INSTALL_HINT = (
    "error: the nanobanana command line needs typer and rich: pip install 'nanobanana-async[cli]'"
)


def main(argv: list[str] | None = None) -> int:
    """Run the ``nanobanana`` command line; returns the exit code.

    Args:
        argv: The arguments, without the program name; default ``sys.argv[1:]``.
    """
    try:
        import rich  # noqa: F401  # pyright: ignore[reportUnusedImport]
        import typer  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        sys.stderr.write(INSTALL_HINT + "\n")
        return EXIT_FAILURE
    from ._app import build_app
    from ._args import hoist_global_options

    args = hoist_global_options(sys.argv[1:] if argv is None else argv)
    try:
        build_app(args)(args=args, prog_name="nanobanana")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_FAILURE
    return EXIT_OK  # pragma: no cover - typer always ends with SystemExit
