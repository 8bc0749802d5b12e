"""The ``nanobanana`` pytest plugin and its ``nanobanana_fake`` fixture."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from nanobanana_async import TextToImage
from nanobanana_async.testing import FakeNanoBanana, TierLimits


def test_the_plugin_is_registered_with_pytest() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins["nanobanana"] == "nanobanana_async.testing._pytest_plugin"


def test_the_fixture_is_a_fast_fake_without_limits(nanobanana_fake: FakeNanoBanana) -> None:
    assert isinstance(nanobanana_fake, FakeNanoBanana)
    assert nanobanana_fake.time_scale == 0.01
    assert nanobanana_fake.limits == TierLimits(name="custom")
    assert len(nanobanana_fake.tasks) == 0


@pytest.mark.anyio
async def test_the_fixture_works_on_each_backend(nanobanana_fake: FakeNanoBanana) -> None:
    async with nanobanana_fake.client() as client:
        result = await client.generate(TextToImage(prompt="a banana"))
    assert nanobanana_fake.tasks[result.task_id].state == "success"


def test_public_names() -> None:
    import nanobanana_async.testing as testing

    assert testing.__all__ == [
        "TIERS",
        "Endpoint",
        "FakeNanoBanana",
        "FakeStats",
        "FakeTask",
        "FakeTaskState",
        "FaultKind",
        "Faults",
        "Neighbour",
        "Reply",
        "RequestRecord",
        "TierLimits",
        "VirtualTimeEventLoop",
        "virtual_time",
    ]
    constants = [name for name in testing.__all__ if name.isupper()]
    others = [name for name in testing.__all__ if not name.isupper()]
    assert testing.__all__ == sorted(constants) + sorted(others)
    assert all(hasattr(testing, name) for name in testing.__all__)
