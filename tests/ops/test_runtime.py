"""Tests for socketdock.ops.runtime: GC pauses and reactor lag, on fake clocks."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.ops.runtime import RuntimeMetrics


class RuntimeMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.registry = CollectorRegistry()
        self.clock = Clock()
        self.now = 0.0
        self.callbacks: list = []
        self.runtime = RuntimeMetrics(
            self.registry, self.clock, 1.0, lambda: self.now, self.callbacks
        )
        self.runtime.startService()
        self.addCleanup(self.runtime.stopService)

    def value(self, name: str, **labels: str) -> float:
        found = self.registry.get_sample_value(name, labels)
        assert found is not None, name
        return found

    def test_gc_pauses_per_generation(self) -> None:
        """Each collection is counted and timed under its generation."""
        (hook,) = self.callbacks
        for generation, seconds in ((0, 0.001), (2, 0.2), (0, 0.003)):
            hook("start", {"generation": generation})
            self.now += seconds
            hook("stop", {"generation": generation, "collected": 0})
        self.assertEqual(self.value("socketdock_gc_pause_seconds_count", generation="0"), 2)
        self.assertAlmostEqual(self.value("socketdock_gc_pause_seconds_sum", generation="0"), 0.004)
        self.assertEqual(self.value("socketdock_gc_pause_seconds_count", generation="1"), 0)
        self.assertAlmostEqual(self.value("socketdock_gc_pause_seconds_sum", generation="2"), 0.2)

    def test_reactor_lag(self) -> None:
        """A probe that runs on time observes 0; one the reactor ran 0.5 s late observes 0.5."""
        self.clock.advance(1.0)
        self.clock.advance(1.5)
        self.assertEqual(self.value("socketdock_reactor_lag_seconds_count"), 2)
        self.assertAlmostEqual(self.value("socketdock_reactor_lag_seconds_sum"), 0.5)
        self.assertEqual(self.value("socketdock_reactor_lag_seconds_bucket", le="0.001"), 1)

    def test_stop_unhooks(self) -> None:
        """Stopped, it leaves the collector's callbacks and the reactor as they were."""
        self.runtime.stopService()
        self.assertEqual(self.callbacks, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_real_collector(self) -> None:
        """Hooked into gc.callbacks, a real gc.collect() is counted as a generation-2 pause."""
        registry = CollectorRegistry()
        runtime = RuntimeMetrics(registry, Clock())
        before = len(gc.callbacks)
        runtime.startService()
        try:
            gc.collect()
        finally:
            runtime.stopService()
        self.assertEqual(len(gc.callbacks), before)
        sample = registry.get_sample_value
        self.assertEqual(sample("socketdock_gc_pause_seconds_count", {"generation": "2"}), 1)
        self.assertGreater(sample("socketdock_gc_pause_seconds_sum", {"generation": "2"}) or 0, 0)
