"""
The seam between the plain and the tuned stack (socketdock/tuning.py): which
one a setting and the library versions choose, what each builds, and that the
process-wide patches hold only while an instance runs.
"""

from __future__ import annotations

import autobahn.websocket.protocol as protocol_module
import treq.client as treq_client
from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import CookieAgent

from socketdock.api.site import PlainHTTPChannel
from socketdock.config.settings import load_config
from socketdock.tap import make_service
from socketdock.tuned.fastchannel import FastHTTPChannel
from socketdock.tuning import PLAIN, TESTED, TUNED, choose_stack, installed_versions, untested


def _inside() -> dict[str, str]:
    return {name: oldest for name, (oldest, newest) in TESTED.items()}


class ChooseStackTests(SynchronousTestCase):
    def test_installed_versions_are_tested(self) -> None:
        """The libraries installed here are inside TESTED: auto runs the tuned stack in CI."""
        self.assertEqual(untested(installed_versions()), [])
        self.assertIs(choose_stack("auto", installed_versions()), TUNED)

    def test_off_is_plain(self) -> None:
        self.assertIs(choose_stack("off", _inside()), PLAIN)

    def test_auto_on_untested_versions_is_plain_with_one_reason(self) -> None:
        """A newer or older library than tested, or none, falls back to the plain stack and says which."""
        for name, have in (("twisted", "99.1.0"), ("autobahn", "22.12.1"), ("httptools", "")):
            versions = dict(_inside(), **{name: have})
            stack = choose_stack("auto", versions)
            self.assertEqual(stack.name, "plain")
            self.assertIn(f"{name} {have or '(none)'} is outside", stack.reason)
            self.assertNotIn("\n", stack.reason)

    def test_newest_is_as_precise_as_given(self) -> None:
        """A patch release of the newest tested minor version is inside; the next minor is not."""
        oldest, newest = TESTED["twisted"]
        self.assertEqual(untested(dict(_inside(), twisted=newest + ".7")), [])
        major, minor = newest.split(".")[:2]
        self.assertNotEqual(untested(dict(_inside(), twisted=f"{major}.{int(minor) + 1}.0")), [])
        self.assertEqual(untested(dict(_inside(), twisted=oldest + "rc1")), [])


def _site_channels(service) -> list[type]:
    return [listener.factory.protocol for listener in service if hasattr(listener, "factory")]


class MakeServiceTests(SynchronousTestCase):
    def make(self, stack):
        config = load_config({"bindport": "0"}, {}, None)
        return make_service(config, MemoryReactorClock(), stack)

    def test_each_stack_builds_its_own_pieces(self) -> None:
        """The sites' channel and the WebSocket protocol class follow the stack."""
        tuned, plain = self.make(TUNED), self.make(PLAIN)
        self.assertEqual(_site_channels(tuned), [FastHTTPChannel])
        self.assertEqual(_site_channels(plain), [PlainHTTPChannel])

    def test_fallback_logs_one_line(self) -> None:
        """auto on an untested Twisted says so once, and builds the plain stack."""
        stack = choose_stack("auto", dict(_inside(), twisted="99.0.0"))
        with capturedLogs() as events:
            service = self.make(stack)
        lines = [e for e in events if "plain Twisted/treq/Autobahn" in e.get("reason", "")]
        self.assertEqual(len(lines), 1)
        self.assertEqual(_site_channels(service), [PlainHTTPChannel])

    def test_patches_hold_only_while_running(self) -> None:
        """Building changes no library; starting engages the patches, stopping undoes them."""
        service = self.make(TUNED)
        self.assertIs(protocol_module.create_xor_masker, create_xor_masker)
        self.assertIs(treq_client.CookieAgent, CookieAgent)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        self.assertIsNot(protocol_module.create_xor_masker, create_xor_masker)
        self.assertIsNot(treq_client.CookieAgent, CookieAgent)
        self.successResultOf(service.stopService())
        self.assertIs(protocol_module.create_xor_masker, create_xor_masker)
        self.assertIs(treq_client.CookieAgent, CookieAgent)

    def test_plain_stack_patches_nothing(self) -> None:
        service = self.make(PLAIN)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        self.assertIs(protocol_module.create_xor_masker, create_xor_masker)
        self.assertIs(treq_client.CookieAgent, CookieAgent)
