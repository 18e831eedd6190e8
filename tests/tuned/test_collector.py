"""The garbage collector settings the daemon runs with."""

import gc
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.tap import makeService
from socketdock.tuned.collector import YOUNG_THRESHOLD, tune_collector
from tests.harness import stack_with
from tests.test_tap_options import _parse, private_log_beginner


class TuneCollectorTests(SynchronousTestCase):
    def setUp(self) -> None:
        before = gc.get_threshold()

        def restore() -> None:
            gc.unfreeze()
            gc.set_threshold(*before)

        self.addCleanup(restore)

    def test_young_collections_are_rarer_and_startup_objects_frozen(self) -> None:
        """Young passes wait for YOUNG_THRESHOLD allocations; what exists already is frozen."""
        gc.set_threshold(700, 10, 10)
        gc.unfreeze()
        tune_collector()
        self.assertEqual(gc.get_threshold(), (YOUNG_THRESHOLD, 10, 10))
        self.assertGreater(gc.get_freeze_count(), 0)

    def test_the_daemon_tunes_once_the_reactor_runs(self) -> None:
        """makeService leaves the tuning for reactor start, after every startup import."""
        gc.set_threshold(700, 10, 10)
        reactor = MemoryReactorClock()
        options: Any = {
            "settings": _parse(["--externalhostandport", "h:1"]),
            "stack": stack_with("gc"),
        }  # only options["settings"] and ["stack"] are read
        makeService(options, reactor=reactor, log_beginner=private_log_beginner())
        self.assertEqual(gc.get_threshold()[0], 700)
        for hook, args, kwargs in reactor.whenRunningHooks:
            if hook is tune_collector:
                hook(*args, **kwargs)
        self.assertEqual(gc.get_threshold()[0], YOUNG_THRESHOLD)

    def test_the_daemon_leaves_the_collector_alone_without_the_piece(self) -> None:
        """With the gc piece off, makeService schedules no collector tuning."""
        reactor = MemoryReactorClock()
        options: Any = {
            "settings": _parse(["--externalhostandport", "h:1"]),
            "stack": stack_with("channel"),
        }
        makeService(options, reactor=reactor, log_beginner=private_log_beginner())
        self.assertNotIn(tune_collector, [hook for hook, _, _ in reactor.whenRunningHooks])
