"""What the fake answers: a status, headers and a body, and what to do with the connection."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

__all__ = ["Action", "Reply", "dumps"]

Action = Literal["answer", "refuse", "drop", "truncate", "slow"]

dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
"""Compact JSON, as the provider writes it (also for the JSON-string fields of a record)."""


class Reply:
    """What a front end (transport or server) must do with one request.

    Attributes:
        status: The HTTP status.
        content_type: The ``Content-Type`` of the body.
        headers: Other response headers, as ``(name, value)`` pairs.
        body: The response body.
        action: ``"answer"``; ``"refuse"`` (drop the connection, nothing was done);
            ``"drop"`` (drop it after the work); ``"truncate"`` (send half the body, then drop);
            ``"slow"`` (answer after ``slow_seconds``, ``None`` = after the client gives up).
        slow_seconds: For ``"slow"``.
    """

    __slots__ = ("action", "body", "content_type", "headers", "slow_seconds", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers: list[tuple[str, str]] = list(headers)
        self.action: Action = "answer"
        self.slow_seconds: float | None = None

    @classmethod
    def envelope(
        cls,
        code: int,
        msg: str,
        data: object = None,
        *,
        status: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Reply:
        """Build a JSON ``{"code", "msg", "data"}`` reply; the HTTP status defaults to ``code``."""
        body = dumps({"code": code, "msg": msg, "data": data}).encode()
        return cls(code if status is None else status, body, headers=headers)
