"""The command line's arguments where typer does not read them as a user expects.

Global options may follow the command (`hoist_global_options`), and a batch's folders follow
from its input's name (`batch_paths`).
"""

from collections.abc import Sequence
from pathlib import Path

from ._exit import CliError

__all__ = ["batch_paths", "hoist_global_options"]

_GLOBAL_FLAGS = frozenset({"--verbose", "-v"})
_GLOBAL_VALUED = frozenset({"--api-key", "--base-url"})


def hoist_global_options(argv: Sequence[str]) -> list[str]:
    """``argv`` with the global options given after the command moved before it.

    So ``nanobanana generate "x" --base-url URL`` works like ``nanobanana --base-url URL
    generate "x"``; nothing after ``--`` is touched.
    """
    hoisted: list[str] = []
    rest: list[str] = []
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        name = arg.split("=", 1)[0]
        if arg in _GLOBAL_FLAGS or (name in _GLOBAL_VALUED and "=" in arg):
            hoisted.append(arg)
        elif arg in _GLOBAL_VALUED and index + 1 < len(args):
            hoisted += [arg, args[index + 1]]
            index += 1
        else:
            rest.append(arg)
        index += 1
    return hoisted + rest


def batch_paths(
    file: Path, out: Path | None, journal: Path | None, *, no_save: bool, no_journal: bool
) -> tuple[Path | None, Path | None]:
    """Where a batch saves its images and keeps its journal: safe unless told otherwise."""
    if no_save and out is not None:
        raise CliError("--out and --no-save contradict each other")
    if no_journal and journal is not None:
        raise CliError("--journal and --no-journal contradict each other")
    folder = None if no_save else (out or file.with_name(f"{file.stem}-out"))
    if no_journal:
        return folder, None
    if journal is None:
        # Beside the images, or beside the input when nothing is saved.
        journal = (folder / "journal.sqlite") if folder else file.with_name(f"{file.stem}.journal")
    return folder, journal
