"""A batch's input, read lazily: the requests, and the journal's rows beside them."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from typing import Any, cast

import anyio
import anyio.lowlevel

from ._journal import Journal, JournalRow

__all__ = ["JournalCursor", "read_requests"]

_JOURNAL_CHUNK = 512


class JournalCursor:
    """Reads journal rows in index order, a chunk at a time, beside the lazy input."""

    def __init__(self, journal: Journal | None) -> None:
        self._journal = journal
        self._rows: dict[int, JournalRow] = {}
        self._next = 0
        self._exhausted = journal is None

    async def get(self, index: int) -> JournalRow | None:
        """The row of job ``index``; indexes must be asked for in increasing order."""
        if self._journal is None:
            return None
        # Past the chunk in hand: read on (the loop ends once the chunk covers ``index``, or
        # the journal has no more rows).
        while not self._exhausted and index >= self._next:
            rows = await self._journal.rows(self._next, _JOURNAL_CHUNK)
            self._rows = {row.index: row for row in rows}
            if len(rows) < _JOURNAL_CHUNK:
                self._exhausted = True
            else:
                self._next = rows[-1].index + 1
        return self._rows.pop(index, None)


async def read_requests(
    requests: Iterable[Any] | AsyncIterable[Any],
) -> AsyncGenerator[object, None]:
    """The items of a sync or async iterable, one at a time (yielding to others between)."""
    if isinstance(requests, AsyncIterable):
        async for request in cast("AsyncIterable[object]", requests):
            yield request
    else:
        for request in cast("Iterable[object]", requests):
            yield request
            await anyio.lowlevel.checkpoint()
