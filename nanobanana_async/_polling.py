"""When to ask ``recordInfo`` again.

Before the client has seen any task finish, polls follow `PollPolicy`: a short first interval
that grows geometrically, with jitter. Once tasks have finished, their durations (measured by
the client from create to the poll that saw the end, and corrected by the provider's own
timestamps) drive the schedule: the first poll goes out when the fastest tasks tend to end,
and later polls come closer together where tasks are most likely to finish, so a finished
task is seen soon without spending the key's query budget on tasks that cannot be done yet.
"""

from __future__ import annotations

import bisect
import collections
import random

import attrs

__all__ = ["DurationModel", "PollPolicy"]


@attrs.frozen(kw_only=True)
class PollPolicy:
    """How often to poll a task while the client has no durations to go on.

    Attributes:
        initial: Seconds before the first poll.
        factor: Each interval is this much longer than the one before.
        maximum: The longest interval, in seconds.
        jitter: A random spread of ±this fraction on every interval.
        min_interval: The shortest interval the learned schedule may use.
    """

    initial: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    factor: float = attrs.field(default=1.5, validator=attrs.validators.ge(1))
    maximum: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    jitter: float = attrs.field(
        default=0.1, validator=[attrs.validators.ge(0), attrs.validators.lt(1)]
    )
    min_interval: float = attrs.field(default=0.05, validator=attrs.validators.gt(0))

    def interval(self, polls: int, rng: random.Random) -> float:
        """The interval before poll number ``polls`` (0-based), without learned durations."""
        base = min(self.maximum, self.initial * self.factor ** min(polls, 60))
        return self.spread(base, rng)

    def spread(self, seconds: float, rng: random.Random) -> float:
        """Apply the jitter to an interval."""
        if self.jitter == 0:
            return seconds
        return seconds * rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)


class DurationModel:
    """The durations of recent tasks, and the poll schedule they suggest.

    Args:
        size: How many recent durations to keep.
        min_samples: Durations needed before the learned schedule replaces the policy.
    """

    #: The share of a task's expected remaining spread between two polls near its likely end.
    RESOLUTION = 0.025

    def __init__(self, size: int = 512, min_samples: int = 1) -> None:
        self._recent: collections.deque[float] = collections.deque(maxlen=size)
        self._sorted: list[float] = []
        self._min_samples = min_samples

    def __len__(self) -> int:
        return len(self._recent)

    def observe(self, seconds: float) -> None:
        """Record how long a finished task took, in seconds."""
        if not seconds > 0:
            return
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._recent.append(seconds)
        bisect.insort(self._sorted, seconds)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the recent durations, or None without enough samples."""
        if len(self._sorted) < self._min_samples:
            return None
        index = min(len(self._sorted) - 1, max(0, int(q * len(self._sorted))))
        return self._sorted[index]

    def expected_remaining(self, age: float) -> float | None:
        """Roughly how much longer a task of ``age`` seconds will run, or None without samples.

        It is the median of the recent durations longer than ``age``, minus ``age``.
        """
        if len(self._sorted) < self._min_samples:
            return None
        above = bisect.bisect_right(self._sorted, age)
        if above >= len(self._sorted):
            # Older than every task seen: assume it runs as long again as the typical one.
            return self._sorted[len(self._sorted) // 2]
        middle = above + (len(self._sorted) - above) // 2
        return max(0.0, self._sorted[middle] - age)

    def next_delay(self, age: float, polls: int, policy: PollPolicy, rng: random.Random) -> float:
        """Seconds from now until a task of ``age`` seconds, polled ``polls`` times, is polled.

        Args:
            age: Seconds since the task was created.
            polls: How many times it has been polled already.
            policy: The fallback policy and the interval bounds.
            rng: The source of jitter.
        """
        low = self.quantile(0.05)
        if low is None:
            return policy.interval(polls, rng)
        high = self.quantile(0.95)
        assert high is not None
        typical = self.quantile(0.5) or low
        if age < low:
            # Nothing tends to finish before the fastest tasks do: sleep until then.
            return max(policy.min_interval, low - age)
        # Near and past the likely end, poll a small fraction of the typical duration apart;
        # once the task outlives nearly all others, back off towards the policy's maximum.
        step = max(policy.min_interval, typical * self.RESOLUTION)
        if age > high:
            overdue = (age - high) / max(typical, policy.min_interval)
            step = min(policy.maximum, step * (1.0 + 4.0 * overdue))
        return policy.spread(min(step, policy.maximum), rng)
