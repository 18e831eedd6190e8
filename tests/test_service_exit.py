"""
The exit that follows a completed shutdown (socketdock.service): registered
only once the reactor's shutdown has finished, and never over an error.
"""

from __future__ import annotations

import atexit
import sys

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from socketdock.service import _exit_now, exit_right_after_shutdown


class ExitAfterShutdownTests(SynchronousTestCase):
    def test_registered_after_shutdown_only(self) -> None:
        """Nothing is registered until the 'after shutdown' trigger runs; then the exit is."""
        reactor = MemoryReactor()
        exits: list[int] = []
        exit_right_after_shutdown(reactor, exits.append)
        ((call, args, kwargs),) = reactor.triggers["after"]["shutdown"]
        self.assertEqual((call, args, kwargs), (atexit.register, (_exit_now, exits.append), {}))

    def test_exit_now_exits_zero(self) -> None:
        """The handler exits 0 at once."""
        exits: list[int] = []
        _exit_now(exits.append)
        self.assertEqual(exits, [0])

    def test_exit_now_leaves_an_uncaught_error_to_python(self) -> None:
        """After an uncaught exception Python reports it and exits non-zero: no exit 0 over it."""
        if hasattr(sys, "last_value"):
            self.addCleanup(setattr, sys, "last_value", sys.last_value)
        else:
            self.addCleanup(delattr, sys, "last_value")
        sys.last_value = RuntimeError("boom")
        exits: list[int] = []
        _exit_now(exits.append)
        self.assertEqual(exits, [])
