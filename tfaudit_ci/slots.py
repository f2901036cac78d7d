"""The two pure rules of the chain protocol that every writer and reader must share.

* **Which version of a slot wins**: the oldest version that is not a delete marker. Stores
  that ignore ``If-None-Match`` keep a losing writer's record as a later version of the same
  key; the oldest one is what the chain links to, whatever came after it.
* **Where the head is**: probing "is slot N taken", first exponentially (N = 0, 1, 3, 7, …
  from the start), then by binary search between the last taken and the first free probe.
  Appending to a stream of 100,000 records costs a few dozen probes. Slots beyond a free
  probe are invisible to it: verify reports such records (``after-head``), never trusts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tfaudit_ci.stores.base import VersionInfo


def winner(versions: Iterable[VersionInfo]) -> VersionInfo | None:
    """The version of a slot that counts (``versions`` oldest first), None if only markers."""
    return next((v for v in versions if not v.is_delete_marker), None)


def probe_head(taken: Callable[[int], bool], start: int = -1) -> int:
    """The highest slot an appender finds taken, or -1 for an empty stream.

    ``start`` is a slot already known to be taken (-1: nothing known); probing goes up from it.
    """
    low = start  # invariant: ``low`` is taken (or -1), ``high`` is free
    if low < 0:
        if not taken(0):
            return -1
        low = 0
    step = 1
    high = low + step
    while taken(high):
        low = high
        step *= 2
        high = low + step
    while high - low > 1:
        mid = (low + high) // 2
        if taken(mid):
            low = mid
        else:
            high = mid
    return low
