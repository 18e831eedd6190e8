"""
The garbage collector, set for a relay's allocation pattern.

Every relayed message and every handshake allocates a few hundred short-lived
container objects (Deferreds, requests, headers); with CPython's default
threshold of 700 the collector ran a young-generation pass every few dozen
round trips, and each pass also walked whatever was mid-flight.  Measured with
``bench/run.py`` (10,000 idle connections opened, held and closed), the
collector took 2.96 s of the relay's 13.05 s CPU at the defaults and 0.94 s of
10.86 s with a threshold of 10,000.  Objects are still freed by reference
counting the moment they are dropped; only cyclic garbage waits a little
longer, and RSS per idle connection stayed at 8.6 KiB.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from socketdock.tuned import require, require_attributes

#: Allocations (net of frees) between young-generation collections.
YOUNG_THRESHOLD = 10_000


def tune_collector() -> Callable[[], None]:
    """
    Collect less often, and leave what startup loaded (modules, classes, the
    settings) out of every later full collection: it lives as long as the
    process does.

    :returns: the undo (thresholds back, everything unfrozen).
    """
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    _, middle, old = before
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)

    def undo() -> None:
        gc.unfreeze()
        gc.set_threshold(*before)

    return undo


def check_collector() -> None:
    """:func:`tune_collector` needs a collector with generations and ``freeze``."""
    require_attributes(
        gc, ("freeze", "unfreeze", "get_freeze_count", "get_threshold", "set_threshold"), "gc"
    )
    require(gc.isenabled(), "the garbage collector is disabled")
    require(len(gc.get_threshold()) == 3, "the collector no longer has three generations")
