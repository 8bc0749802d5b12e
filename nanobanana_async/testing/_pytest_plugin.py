"""The ``nanobanana`` pytest plugin: a ``nanobanana_fake`` fixture for users' tests.

Registered through the ``pytest11`` entry point, so installing ``nanobanana-async`` makes the
fixture available. Kept light: the fake is imported only when a test asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from nanobanana_async.testing import FakeNanoBanana

__all__ = ["nanobanana_fake"]


@pytest.fixture
def nanobanana_fake() -> FakeNanoBanana:
    """A fresh `FakeNanoBanana` for one test, 100x faster than the provider and without limits.

    Tasks take 0.02-0.06 s of the event loop's clock; tighten it (``nanobanana_fake.faults =
    ...``, ``.script(...)``, ``.credits = ...``) or build your own
    ``FakeNanoBanana(tier="free", ...)`` for limit tests. Works with any async backend
    (``@pytest.mark.anyio``, asyncio or trio), on the real clock or a virtual one
    (`virtual_time`).

    Returns:
        The fake; use ``.client()``, ``.transport()`` or ``.serve()`` to reach it.
    """
    from nanobanana_async.testing import FakeNanoBanana

    return FakeNanoBanana(tier=None, time_scale=0.01)
