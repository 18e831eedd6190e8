"""
The open-file limit a started daemon runs with: the soft limit raised to the
hard one, in the process itself and in a real ``twistd socketdock``.
"""

import os
import resource
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import capturedLogs
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from socketdock.ops.filelimit import raise_open_file_limit
from tests.daemon import TWISTD, spawn, started


class Limits:
    """What ``resource`` answers for RLIMIT_NOFILE, as this test sets it."""

    RLIMIT_NOFILE = resource.RLIMIT_NOFILE

    def __init__(self, soft, hard, refuse=None):
        self.limits = (soft, hard)
        self._refuse = refuse

    def getrlimit(self, which):
        assert which == self.RLIMIT_NOFILE
        return self.limits

    def setrlimit(self, which, limits):
        assert which == self.RLIMIT_NOFILE
        if self._refuse is not None:
            raise self._refuse
        self.limits = limits


class RaiseTests(SynchronousTestCase):
    def test_soft_limit_rises_to_the_hard_one(self):
        """1024 of 524288 becomes 524288 of 524288, and the log says so."""
        limits = Limits(1024, 524288)
        with capturedLogs() as events:
            self.assertEqual(raise_open_file_limit(limits), (1024, 524288))
        self.assertEqual(limits.limits, (524288, 524288))
        self.assertEqual([(e["before"], e["after"]) for e in events], [(1024, 524288)])

    def test_equal_limits_are_left_alone(self):
        """Nothing to raise: no setrlimit call, one line naming the limit."""
        limits = Limits(20000, 20000, refuse=AssertionError("setrlimit called"))
        with capturedLogs() as events:
            self.assertEqual(raise_open_file_limit(limits), (20000, 20000))
        self.assertEqual([e["limit"] for e in events], [20000])

    def test_a_refused_raise_keeps_the_soft_limit_and_warns(self):
        """An unlimited hard limit cannot be the soft one: start anyway, with a warning."""
        limits = Limits(1024, resource.RLIM_INFINITY, refuse=ValueError("not allowed"))
        with capturedLogs() as events:
            self.assertEqual(raise_open_file_limit(limits), (1024, 1024))
        self.assertEqual([(e["log_level"].name, e["soft"]) for e in events], [("warn", 1024)])


class DaemonLimitTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_daemon_started_with_a_low_soft_limit_runs_with_the_hard_one(self):
        """Started from a shell whose soft limit is 512, the daemon's own is the hard limit."""
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard <= 512:
            raise SkipTest(f"the hard open-file limit here is {hard}: nothing to raise to")
        if not sys.platform.startswith("linux"):
            raise SkipTest("reads /proc/<pid>/limits")
        argv = [
            "/bin/sh",
            "-c",
            'ulimit -S -n 512 && exec "$@"',
            "sh",
            *TWISTD,
            "-n",
            "--pidfile=",
            "socketdock",
            "--bindport",
            "0",
        ]
        workdir = self.mktemp()
        os.makedirs(workdir)
        proc = spawn(self, reactor, "socketdock", argv, path=workdir)
        yield Deferred.fromCoroutine(started(reactor, proc))
        with open(f"/proc/{proc.pid}/limits") as f:
            line = next(line for line in f if line.startswith("Max open files"))
        soft, hard_seen = line.split()[3:5]
        self.assertEqual(soft, hard_seen)
        self.assertNotEqual(soft, "512")
        self.assertIn(f"open-file limit raised from 512 to {soft}", proc.text())


class BudgetTests(SynchronousTestCase):
    def test_budget_leaves_the_pool_and_the_reserve(self) -> None:
        """The public listener gets the limit less the backend pool and RESERVED, and never fewer than MINIMUM_BUDGET."""
        from socketdock.ops.filelimit import MINIMUM_BUDGET, RESERVED, connection_budget

        self.assertEqual(connection_budget(1024, 128), 1024 - 128 - RESERVED)
        self.assertEqual(connection_budget(256, 128), 256 - 128 - RESERVED)
        self.assertEqual(connection_budget(100, 128), MINIMUM_BUDGET)

    def test_cap_takes_and_releases_once(self) -> None:
        """Places run out at the limit; a release gives one back, a second release of the same nothing more."""
        from socketdock.ops.filelimit import ListenerCap, hand_over, no_release

        cap = ListenerCap(2)
        first, second = cap.take(), cap.take()
        self.assertIsNone(cap.take())
        assert first is not None and second is not None
        first()
        first()
        self.assertEqual(cap.open, 1)

        class Channel:
            release = staticmethod(no_release)

        channel = Channel()
        channel.release = cap.take()  # type: ignore[assignment]
        self.assertIsNone(cap.take())
        taken = hand_over(channel)
        channel.release()
        self.assertEqual(cap.open, 2)
        taken()
        self.assertEqual(cap.open, 1)
        self.assertIs(hand_over(object()), no_release)
