"""Fixtures for the fake provider's own tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from nanobanana_async.testing import FakeNanoBanana

T2I = "nano-banana-text-to-image"
I2I = "nano-banana-image-to-image"


class ManualClock:
    """A clock the test moves by hand, in real seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Api:
    """Calls the fake's pure `handle` the way a client would, returning (status, body)."""

    def __init__(self, fake: FakeNanoBanana) -> None:
        self.fake = fake

    def create_reply(
        self,
        prompt: str | None = "a banana",
        *,
        model: str = T2I,
        request_id: str | None = None,
        key: str | None = "sk-test",
        body: bytes | None = None,
        **fields: Any,
    ) -> Any:
        if body is None:
            payload: dict[str, Any] = {"model": model, "input": dict(fields)}
            if prompt is not None:
                payload["input"]["prompt"] = prompt
            body = json.dumps(payload).encode()
        return self.fake.handle(
            method="POST",
            path="/api/v1/jobs/createTask",
            authorization=None if key is None else f"Bearer {key}",
            request_id=request_id,
            body=body,
        )

    def create(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        reply = self.create_reply(*args, **kwargs)
        return reply.status, json.loads(reply.body)

    def task_id(self, *args: Any, **kwargs: Any) -> str:
        status, body = self.create(*args, **kwargs)
        assert status == 200, body
        return str(body["data"]["taskId"])

    def query_reply(self, task_id: str | None, *, key: str | None = "sk-test") -> Any:
        return self.fake.handle(
            method="GET",
            path="/api/v1/jobs/recordInfo",
            query="" if task_id is None else f"taskId={task_id}",
            authorization=None if key is None else f"Bearer {key}",
        )

    def query(self, task_id: str | None, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        reply = self.query_reply(task_id, **kwargs)
        return reply.status, json.loads(reply.body)

    def record(self, task_id: str) -> dict[str, Any]:
        status, body = self.query(task_id)
        assert status == 200, body
        return dict(body["data"])

    def result(self, url_or_path: str, *, authorization: str | None = None) -> Any:
        path = url_or_path.split(".test", 1)[-1]
        return self.fake.handle(method="GET", path=path, authorization=authorization)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_fake(clock: ManualClock) -> Callable[..., FakeNanoBanana]:
    """Build a fake on the manual clock; tier=None and duration=10 s unless given."""

    def make(**kwargs: Any) -> FakeNanoBanana:
        kwargs.setdefault("tier", None)
        kwargs.setdefault("duration", 10.0)
        kwargs.setdefault("clock", clock)
        return FakeNanoBanana(**kwargs)

    return make


@pytest.fixture
def api_for() -> Callable[[FakeNanoBanana], Api]:
    return Api
