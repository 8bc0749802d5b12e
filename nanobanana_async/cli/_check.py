"""``nanobanana batch --check FILE``: read and validate a whole batch file, send nothing.

It needs no API key. It prints how many requests of which kind the batch would send and names
every row that would not be sent, by line, so that a typo at line 9000 is found before the
first row is paid for. Exit code 0 if every row is valid, 2 otherwise.
"""

from collections import Counter
from pathlib import Path

from .. import ImageToImage
from ._exit import EXIT_OK, EXIT_USAGE, CliError
from ._rows import BadRow, open_batch_file
from ._ui import Ui

__all__ = ["check_batch"]

_LISTED = 20


def check_batch(ui: Ui, path: Path) -> int:
    """Validate every row of ``path``; print the counts (stdout) and the bad rows (stderr)."""
    handle, rows, _ = open_batch_file(path)
    kinds: Counter[str] = Counter()
    bad: list[BadRow] = []
    with handle:
        for row in rows:
            if isinstance(row.item, BadRow):
                bad.append(row.item)
            elif isinstance(row.item, ImageToImage):
                kinds["image-to-image (edit)"] += 1
            else:
                kinds["text-to-image"] += 1
    valid = sum(kinds.values())
    if not valid and not bad:
        raise CliError(f"{path} holds no requests")
    detail = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    ui.result(
        f"{path}: {valid} request{'s' if valid != 1 else ''} would be sent"
        + (f" ({detail})" if detail else "")
        + f"; {len(bad)} invalid row{'s' if len(bad) != 1 else ''}. Nothing was sent."
    )
    for invalid in bad[:_LISTED]:
        ui.error(f"{path}: line {invalid.line}: {invalid.reason}")
    if len(bad) > _LISTED:
        ui.error(f"{path}: and {len(bad) - _LISTED} more invalid rows")
    return EXIT_USAGE if bad else EXIT_OK
