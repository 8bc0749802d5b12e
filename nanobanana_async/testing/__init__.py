"""A faithful fake of the Nano Banana provider, for testing code that uses `nanobanana_async`.

```python
from nanobanana_async import TextToImage
from nanobanana_async.testing import FakeNanoBanana, Faults

fake = FakeNanoBanana(tier="basic", time_scale=0.01, faults=Faults(create={"500": 0.1}))
async with fake.client() as client:  # an AsyncNanoBanana wired to the fake in-process
    result = await client.generate(TextToImage(prompt="a banana"))
assert fake.stats.duplicates == 0
```

Also: ``fake.transport()`` (an httpx transport), ``async with fake.serve() as base_url:`` (a
real HTTP server on loopback), the ``nanobanana_fake`` pytest fixture, and `virtual_time`, an
anyio backend on a virtual clock (the fake keeps the event loop's time, so provider minutes
pass in no real time). See ``docs/testing.md``.
"""

from ._fake import FakeNanoBanana
from ._faults import Endpoint, FaultKind, Faults
from ._limits import TIERS, TierLimits
from ._neighbours import Neighbour
from ._reply import Reply
from ._stats import FakeStats, RequestRecord
from ._tasks import FakeTask, FakeTaskState
from ._virtual_time import VirtualTimeEventLoop, virtual_time

__all__ = [
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
