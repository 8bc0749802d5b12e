"""The API key, held so that nothing shows it: not a repr, a log line, nor an echo of it.

Some servers echo the key back ("Invalid API key provided: Bearer sk-..."), in the body, a
header or even the status line. Every answer is redacted as it is read (`Secret.redact_bytes`,
`Secret.redact`), so such an echo never reaches an exception, a frame an error tracker
captures, a log line, the journal or the command line. The key is also looked for as JSON
escapes it (a quote, a backslash or a slash escaped), so an escaped echo is caught as well.

The `Secret` is the only object that holds the key: the ``Authorization`` header is made from
it for each request (`Secret.authorization`), never kept in a header object of the client's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

__all__ = ["REDACTED", "Secret"]

REDACTED = "***"
_REDACTED_BYTES = REDACTED.encode()


def _spellings(value: str) -> tuple[str, ...]:
    """The key as given, and as JSON may escape it (only those that differ)."""
    spellings = [value, json.dumps(value)[1:-1], value.replace("/", "\\/")]
    spellings.append(spellings[1].replace("/", "\\/"))
    return tuple(dict.fromkeys(spellings))


class Secret:
    """Holds the API key so that no repr, str or traceback local shows it.

    Args:
        value: The API key.
    """

    __slots__ = ("_as_bytes", "_escaped", "_spelled", "_spelled_bytes", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._spelled = _spellings(value)
        self._spelled_bytes = tuple(spelling.encode() for spelling in self._spelled)
        # Searched on every answer: the key as sent first, alone; escaped spellings (only for
        # keys with a quote, a backslash or a slash) after it. Searched with bytes.find: the
        # `in` operator first tries its operand as an integer, and failing costs more than the
        # search (about 3x on CPython 3.11).
        self._as_bytes = self._spelled_bytes[0]
        self._escaped = self._spelled_bytes[1:]

    def reveal(self) -> str:
        """The key itself, for building another client of the same key."""
        return self._value

    def authorization(self) -> str:
        """The value of the ``Authorization`` header, made anew for one request."""
        return "Bearer " + self._value

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the key (however JSON escapes it) as ``***``."""
        for spelling in self._spelled:
            if spelling in text:
                text = text.replace(spelling, REDACTED)
        return text

    def redact_bytes(self, content: bytes) -> bytes:
        """``content`` with every occurrence of the key (however JSON escapes it) as ``***``."""
        if not self.shows_in(content):
            return content
        for spelling in self._spelled_bytes:
            content = content.replace(spelling, _REDACTED_BYTES)
        return content

    def shows_in(self, content: bytes) -> bool:
        """Whether ``content`` holds the key (in any spelling `redact_bytes` replaces)."""
        if content.find(self._as_bytes) != -1:
            return True
        return bool(self._escaped) and any(content.find(s) != -1 for s in self._escaped)

    def shows_in_pairs(self, pairs: Sequence[tuple[bytes, bytes]]) -> bool:
        """Whether any name or value of ``pairs`` (raw headers) holds the key.

        One call per answer, looping here: cheaper than `shows_in` per header.
        """
        key = self._as_bytes
        for name, value in pairs:
            if value.find(key) != -1 or name.find(key) != -1:
                return True
        if not self._escaped:
            return False
        return any(self.shows_in(name) or self.shows_in(value) for name, value in pairs)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__
