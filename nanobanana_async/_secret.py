"""The API key, held so that nothing shows it: not a repr, a log line, nor an echo of it.

Some servers echo the key back ("Invalid API key provided: Bearer sk-..."). Every answer is
passed through `Secret.redact` before it is read, so such an echo never reaches an exception,
a log line, the journal or the command line.
"""

from __future__ import annotations

__all__ = ["REDACTED", "Secret"]

REDACTED = "***"


class Secret:
    """Holds the API key so that no repr, str or traceback local shows it."""

    __slots__ = ("_bytes", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._bytes = value.encode()

    def reveal(self) -> str:
        """The key itself, for the ``Authorization`` header only."""
        return self._value

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the key replaced by ``***``."""
        return text.replace(self._value, REDACTED) if self._value in text else text

    def redact_bytes(self, content: bytes) -> bytes:
        """``content`` with every occurrence of the key replaced by ``***``."""
        return (
            content.replace(self._bytes, REDACTED.encode()) if self._bytes in content else content
        )

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__
