"""
The process's own health beside SocketDock's figures, in the same registry:
``process_*`` (CPU, memory, open files: prometheus-client's
``ProcessCollector``), garbage-collector pauses per generation, and reactor
lag -- how late a call scheduled on the reactor runs, which is what every
connection of a busy instance waits on.

GC pauses are timed with a real clock (``time.perf_counter``): while the
collector runs the reactor does not, so its clock says nothing about them.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["RuntimeMetrics"]

#: Seconds; a young-generation collection takes microseconds, a full one of a
#: large heap can take a good part of a second.
_GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Seconds; a healthy reactor runs a due call within a millisecond or two.
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RuntimeMetrics(Service):
    """
    Adds the process, GC and reactor-lag series to ``registry``; the GC hook
    and the lag probe run while the service runs.

    :param clock: the reactor whose lag is measured.
    :param interval: seconds between lag probes.
    :param timer: a real clock for GC pauses.
    :param callbacks: the list the garbage collector calls (``gc.callbacks``).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        clock: IReactorTime,
        interval: float = 1.0,
        timer: Callable[[], float] = time.perf_counter,
        callbacks: list | None = None,
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._timer = timer
        self._callbacks = gc.callbacks if callbacks is None else callbacks
        ProcessCollector(registry=registry)
        self._gc = Histogram(
            "socketdock_gc_pause_seconds",
            "Garbage-collector pauses by generation (_count: collections).",
            ["generation"],
            buckets=_GC_BUCKETS,
            registry=registry,
        )
        for generation in range(3):
            self._gc.labels(str(generation))
        self._lag = Histogram(
            "socketdock_reactor_lag_seconds",
            "How late a call scheduled on the reactor ran (a busy or blocked reactor).",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self._gc_started: float | None = None
        self._probe: IDelayedCall | None = None
        self._due = 0.0

    def startService(self) -> None:
        super().startService()
        self._callbacks.append(self._collected)
        self._schedule()

    def stopService(self):
        if self._collected in self._callbacks:
            self._callbacks.remove(self._collected)
        if self._probe is not None and self._probe.active():
            self._probe.cancel()
        self._probe = None
        return super().stopService()

    def _collected(self, phase: str, info: dict) -> None:
        """A ``gc.callbacks`` hook: times each collection from start to stop."""
        if phase == "start":
            self._gc_started = self._timer()
        elif self._gc_started is not None:
            pause = self._timer() - self._gc_started
            self._gc_started = None
            self._gc.labels(str(info.get("generation", "?"))).observe(pause)

    def _schedule(self) -> None:
        self._due = self._clock.seconds() + self._interval
        self._probe = self._clock.callLater(self._interval, self._probed)

    def _probed(self) -> None:
        self._lag.observe(max(0.0, self._clock.seconds() - self._due))
        self._schedule()
