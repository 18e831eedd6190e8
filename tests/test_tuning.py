"""
The seam between the plain and the faster paths (socketdock/tuning.py):
each piece decides for itself by its start-up check, made-up checks and
versions show how the verdicts become a stack, and each real check notices
the library change it guards against.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import autobahn.twisted.websocket as twisted_websocket
import autobahn.websocket.protocol as protocol_module
import treq.client as treq_client
from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet import tcp
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web import _newclient
from twisted.web.client import CookieAgent
from twisted.web.http import HTTPChannel

from socketdock.api.site import PlainHTTPChannel
from socketdock.config.settings import ConfigError, load_config
from socketdock.tap import Options, make_service
from socketdock.tuned import CheckFailed
from socketdock.tuned.fastchannel import FastHTTPChannel
from socketdock.tuning import PIECES, PLAIN, TUNED, Piece, Stack, choose_stack, untested


def _passes() -> None:
    pass


def _fails() -> None:
    raise CheckFailed("the thing it needs is gone")


def _breaks() -> None:
    raise ValueError("surprise\nsecond line")


def _made_up(**checks: Callable[[], None]) -> tuple[Piece, ...]:
    return tuple(Piece(name, f"{name} speed", check) for name, check in checks.items())


#: Versions inside the tested ranges, made up: no test reads what is installed.
_INSIDE = {"twisted": "26.10.0", "autobahn": "24.4.2", "treq": "24.9.1", "httptools": "0.6.4"}


class ChooseStackTests(SynchronousTestCase):
    def test_off_runs_no_check(self) -> None:
        """tuning = off turns every piece off without running a check."""
        stack = choose_stack("off", _INSIDE, _made_up(a=_breaks, b=_fails))
        self.assertEqual(stack.pieces, {"a": "tuning = off", "b": "tuning = off"})
        self.assertEqual(stack.name, "plain")

    def test_a_failed_check_turns_only_its_piece_off(self) -> None:
        stack = choose_stack("auto", _INSIDE, _made_up(a=_passes, b=_fails, c=_passes))
        self.assertEqual(stack.pieces, {"a": "on", "b": "the thing it needs is gone", "c": "on"})
        self.assertEqual(stack.name, "partly tuned")

    def test_a_check_that_raises_counts_as_failed_in_one_line(self) -> None:
        stack = choose_stack("auto", _INSIDE, _made_up(a=_breaks))
        self.assertEqual(stack.pieces["a"], "its check raised ValueError: surprise")

    def test_versions_outside_the_tested_range_are_information(self) -> None:
        """A newer library than tested keeps every passing piece on and says so."""
        versions = dict(_INSIDE, autobahn="99.1.0")
        stack = choose_stack("auto", versions, _made_up(a=_passes))
        self.assertEqual(stack.pieces, {"a": "on"})
        self.assertEqual(len(stack.notes), 1)
        self.assertIn("autobahn 99.1.0 is outside the tested", stack.notes[0])
        self.assertIn("autobahn 99.1.0", stack.summary())

    def test_a_piece_may_name_a_release_it_is_wrong_on(self) -> None:
        piece = Piece("a", "speed", _passes, broken_on=(("autobahn", "99.1"),))
        wrong = choose_stack("auto", dict(_INSIDE, autobahn="99.1.3"), (piece,))
        self.assertEqual(wrong.pieces, {"a": "known to be wrong on autobahn 99.1.3"})
        fine = choose_stack("auto", dict(_INSIDE, autobahn="99.10.0"), (piece,))
        self.assertEqual(fine.pieces, {"a": "on"})

    def test_required_refuses_in_one_line_naming_the_piece(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            choose_stack("required", _INSIDE, _made_up(a=_passes, b=_fails))
        line = str(caught.exception)
        self.assertTrue(line.startswith("tuning: required, but the b piece cannot run"), line)
        self.assertIn("the thing it needs is gone", line)
        self.assertNotIn("\n", line)
        stack = choose_stack("required", _INSIDE, _made_up(a=_passes))
        self.assertEqual(stack.pieces, {"a": "on"})

    def test_the_summary_says_what_an_off_piece_gives_and_how_to_get_it_back(self) -> None:
        pieces = _made_up(a=_passes, b=_fails)
        line = choose_stack("auto", _INSIDE, pieces).summary({"a": "A", "b": "half the CPU"})
        self.assertEqual(
            line,
            "tuning: partly tuned: a on, b OFF (the thing it needs is gone; it gives half the CPU);"
            " to get them back, install the tested set (pip install -c constraints.txt .)",
        )
        self.assertIn("set tuning = auto", choose_stack("off", _INSIDE, pieces).summary())

    def test_the_stack_follows_each_piece(self) -> None:
        """Each piece switches its own part and nothing else."""
        only_channel = Stack({p.name: ("on" if p.name == "channel" else "off") for p in PIECES})
        self.assertIs(only_channel.channel, FastHTTPChannel)
        self.assertIsNone(only_channel.ws_specialise)
        self.assertEqual(only_channel.patches, ())
        self.assertFalse(only_channel.tune_gc)
        only_masker = Stack({p.name: ("on" if p.name == "masker" else "off") for p in PIECES})
        self.assertIs(only_masker.channel, PlainHTTPChannel)
        self.assertEqual(len(only_masker.patches), 1)
        self.assertEqual(len(TUNED.patches), 3)
        self.assertEqual(PLAIN.patches, ())
        only_agent = Stack({p.name: ("on" if p.name == "agent" else "off") for p in PIECES})
        self.assertIsNot(only_agent.post, PLAIN.post)
        self.assertIs(only_channel.post, PLAIN.post)

    def test_untested_is_as_precise_as_given(self) -> None:
        self.assertEqual(untested(dict(_INSIDE, twisted="26.10.7")), [])
        self.assertNotEqual(untested(dict(_INSIDE, twisted="26.11.0")), [])
        self.assertEqual(untested(dict(_INSIDE, twisted="26.10.0rc1")), [])
        self.assertNotEqual(untested(dict(_INSIDE, httptools="")), [])


def _delete(testcase: SynchronousTestCase, owner: object, name: str) -> None:
    """Remove ``owner.name`` for this test, as a library release might."""
    saved = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    delattr(owner, name)
    testcase.addCleanup(setattr, owner, name, saved)


class RealCheckTests(SynchronousTestCase):
    """
    Each real check against a simulated library change.  A check that does
    not pass before the change skips, naming why (that piece truly cannot
    run here).
    """

    def assertNoticed(self, piece_name: str, change: Callable[[], None], words: str) -> None:
        piece = {p.name: p for p in PIECES}[piece_name]
        before = piece.verdict({})
        if before != "on":
            raise SkipTest(f"the {piece_name} piece cannot run here: {before}")
        change()
        after = piece.verdict({})
        self.assertIn(words, after)
        self.assertNotIn("\n", after)

    def test_channel(self) -> None:
        self.assertNoticed(
            "channel",
            lambda: _delete(self, HTTPChannel, "_respondToBadRequestAndDisconnect"),
            "HTTPChannel has no _respondToBadRequestAndDisconnect",
        )

    def test_channel_parses_differently(self) -> None:
        """A twisted.web that hands requests over otherwise: the differential notices."""

        def change() -> None:
            original = HTTPChannel.allHeadersReceived

            def dropping(channel) -> None:
                channel.requests[-1].requestHeaders.removeHeader(b"x-twice")
                original(channel)

            self.patch(HTTPChannel, "allHeadersReceived", dropping)

        self.assertNoticed("channel", change, "hands over other requests than twisted.web")

    def test_network(self) -> None:
        def change() -> None:
            def init(self, sock, protocol, client, server, sessionno, reactor, tls=None):
                raise AssertionError("not reached")

            self.patch(tcp.Server, "__init__", init)

        self.assertNoticed("network", change, "twisted.internet.tcp.Server takes")

    def test_agent(self) -> None:
        """A Twisted Agent that sends another header: the agent's POST no longer matches."""

        def change() -> None:
            original = _newclient.Request._writeHeaders

            def with_extra(request, transport, TEorCL) -> None:
                request.headers.addRawHeader(b"X-New", b"1")
                original(request, transport, TEorCL)

            self.patch(_newclient.Request, "_writeHeaders", with_extra)

        self.assertNoticed("agent", change, "the agent's POST differs from Twisted's")

    def test_agent_post_path(self) -> None:
        """A treq that no longer takes hyperlink's URLs as they are: the prepared URL is refused."""
        import treq.client

        def change() -> None:
            self.patch(treq.client, "EncodedURL", type("Other", (), {}))

        self.assertNoticed("agent", change, "its check raised")

    def test_ws_options(self) -> None:
        names = list(twisted_websocket.WebSocketServerProtocol.CONFIG_ATTRS)
        self.assertNoticed(
            "ws_options",
            lambda: self.patch(
                twisted_websocket.WebSocketServerProtocol, "CONFIG_ATTRS", [*names, "newOption"]
            ),
            "WebSocketServerFactory has no newOption",
        )

    def test_debug_formatting(self) -> None:
        self.assertNoticed(
            "debug_formatting", lambda: _delete(self, twisted_websocket, "hlval"), "hlval"
        )

    def test_masker(self) -> None:
        self.assertNoticed(
            "masker",
            lambda: self.patch(protocol_module, "create_xor_masker", lambda mask: None),
            "no longer takes (mask, length)",
        )

    def test_cookies(self) -> None:
        self.assertNoticed(
            "cookies",
            lambda: self.patch(treq_client, "CookieAgent", object),
            "treq no longer wraps its agent",
        )

    def test_gc(self) -> None:
        self.assertNoticed("gc", lambda: self.patch(gc, "isenabled", lambda: False), "disabled")


def _site_channels(service) -> list[type]:
    # The WebSocket listener's is the stack's channel, counted (socketdock.api.capped).
    channels = [listener.factory.protocol for listener in service if hasattr(listener, "factory")]
    return [getattr(channel, "uncounted", channel) for channel in channels]


class MakeServiceTests(SynchronousTestCase):
    def make(self, stack):
        config = load_config({"bindport": "0"}, {}, None)
        return make_service(config, MemoryReactorClock(), stack)

    def test_each_stack_builds_its_own_pieces(self) -> None:
        tuned, plain = self.make(TUNED), self.make(PLAIN)
        self.assertEqual(_site_channels(tuned), [FastHTTPChannel])
        self.assertEqual(_site_channels(plain), [PlainHTTPChannel])

    def test_one_start_up_line_lists_every_piece(self) -> None:
        """A piece that is off under auto is a warning naming it; all on is an info line."""
        partly = Stack({p.name: ("checks failed" if p.name == "agent" else "on") for p in PIECES})
        said = {}
        for stack, level in ((partly, "warn"), (TUNED, "info")):
            with capturedLogs() as events:
                self.make(stack)
            lines = [e for e in events if e.get("line", "").startswith("tuning: ")]
            self.assertEqual(len(lines), 1)
            self.assertEqual(lines[0]["log_level"].name, level)
            for piece in PIECES:
                self.assertIn(piece.name, lines[0]["line"])
            said[level] = lines[0]["line"]
        self.assertIn("agent OFF (checks failed; it gives ", said["warn"])
        self.assertNotIn("OFF", said["info"])

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


class RequiredTests(SynchronousTestCase):
    """``tuning = required`` at the command line, where an operator meets it."""

    def parse(self, *args: str) -> Options:
        options = Options(environ={}, preflight=lambda config: None)
        options.parseOptions(["--bindport", "0", *args])
        return options

    def test_required_refuses_to_start_in_one_line_when_a_piece_fails(self) -> None:
        if (verdict := {p.name: p for p in PIECES}["masker"].verdict({})) != "on":
            raise SkipTest(f"the masker piece cannot run here: {verdict}")
        self.patch(protocol_module, "create_xor_masker", lambda mask: None)
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--tuning", "required")
        line = str(caught.exception)
        self.assertTrue(line.startswith("tuning: required, but the masker piece cannot run"), line)
        self.assertNotIn("\n", line)
        stack = self.parse("--tuning", "auto")["stack"]
        self.assertEqual(list(stack.off), ["masker"])
