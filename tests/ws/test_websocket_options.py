"""
The WebSocket factory's protocol options, and what the tuned stack changes in
Autobahn, as connections see them; each change is engaged per test and undone.
"""

import os
import random
from types import SimpleNamespace
from typing import Any

import autobahn.twisted.websocket as twisted_module
import autobahn.websocket.protocol as protocol_module
from autobahn.util import hltype, hlval
from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.tuned.autobahn import (
    SmallFrameMasker,
    defer_debug_formatting,
    use_small_frame_masker,
    with_options,
)
from socketdock.ws.factory import RelayServerFactory
from socketdock.ws.protocol import RelayServerProtocol

#: These factories never relay: only their options are exercised.
NO_RELAY: Any = SimpleNamespace(metrics=None, budget=None)


class OptionsAsClassAttributesTests(SynchronousTestCase):
    def test_connections_share_the_factorys_options(self) -> None:
        """A connection reads the factory's options without a copy of its own."""
        factory = RelayServerFactory(NO_RELAY, 0, 10, Clock(), specialise=with_options)
        factory.setProtocolOptions(maxMessagePayloadSize=10, echoCloseCodeReason=True)
        protocol = factory.buildProtocol(None)
        self.assertEqual((protocol.maxMessagePayloadSize, protocol.echoCloseCodeReason), (10, True))  # type: ignore[attr-defined]  # Autobahn's options are set as attributes at run time
        self.assertNotIn("maxMessagePayloadSize", vars(protocol))
        self.assertTrue(issubclass(factory.protocol, RelayServerProtocol))

    def test_function_options_stay_plain_functions(self) -> None:
        """A function option (the deflate acceptor) is called with its own arguments, not the protocol."""
        seen = []
        factory = RelayServerFactory(NO_RELAY, 0, 10, Clock(), specialise=with_options)
        factory.setProtocolOptions(perMessageCompressionAccept=lambda offers: seen.append(offers))
        factory.buildProtocol(None).perMessageCompressionAccept(["offer"])  # type: ignore[attr-defined]  # Autobahn's options are set as attributes at run time
        self.assertEqual(seen, [["offer"]])

    def test_factories_do_not_share_options(self) -> None:
        """Two factories' options do not leak into each other's connections."""
        a = RelayServerFactory(NO_RELAY, 0, 10, Clock(), specialise=with_options)
        b = RelayServerFactory(NO_RELAY, 0, 10, Clock(), specialise=with_options)
        a.setProtocolOptions(maxMessagePayloadSize=1)
        b.setProtocolOptions(maxMessagePayloadSize=2)
        # Autobahn's options are set as attributes at run time.
        sizes = (a.protocol.maxMessagePayloadSize, b.protocol.maxMessagePayloadSize)  # type: ignore[attr-defined]
        self.assertEqual(sizes, (1, 2))
        self.assertIsNot(with_options(RelayServerProtocol, a), a.protocol)


class DeferredDebugFormattingTests(SynchronousTestCase):
    def test_debug_arguments_render_only_when_formatted(self) -> None:
        """Autobahn's per-frame log arguments cost nothing until a line is emitted, then read the same."""
        self.addCleanup(defer_debug_formatting())
        calls = []
        value = type("Counted", (), {"__str__": lambda self: calls.append(1) or "x"})()  # type: ignore[func-returns-value]  # count the call, then make it
        lazy = protocol_module.hlval(value)
        self.assertEqual(calls, [])
        self.assertEqual(f"{lazy}", hlval(value))
        self.assertEqual(
            str(twisted_module.hltype(DeferredDebugFormattingTests)),
            hltype(DeferredDebugFormattingTests),
        )
        self.assertEqual(str(protocol_module.pformat({"a": 1})), "{'a': 1}")


class SmallFrameMaskerTests(SynchronousTestCase):
    def test_unmasks_like_autobahn_in_any_chunks(self) -> None:
        """Every length under 128, cut into chunks anywhere, unmasks exactly as Autobahn's own masker."""
        rnd = random.Random(8)
        for length in range(0, 128):
            mask, payload = os.urandom(4), os.urandom(length)
            expected = create_xor_masker(mask, length).process(payload)
            ours, out, at = SmallFrameMasker(mask), [], 0
            while at < length:
                step = rnd.randint(1, 7)
                out.append(ours.process(payload[at : at + step]))
                at += step
            self.assertEqual(b"".join(out), expected, length)
            self.assertEqual(ours.pointer(), length)
            ours.reset()
            self.assertEqual((ours.pointer(), ours.process(b"")), (0, b""))

    def test_only_small_frames_use_it(self) -> None:
        """Frames of 128 bytes and more, and unknown lengths, keep Autobahn's masker."""
        self.addCleanup(use_small_frame_masker())
        create = protocol_module.create_xor_masker
        self.assertIsInstance(create(b"abcd", 127), SmallFrameMasker)
        self.assertNotIsInstance(create(b"abcd", 128), SmallFrameMasker)
        self.assertNotIsInstance(create(b"abcd"), SmallFrameMasker)


class PlainAutobahnTests(SynchronousTestCase):
    """Without a specialise hook or engaged patches, Autobahn is as it ships."""

    def test_plain_factory_copies_options_as_autobahn_does(self) -> None:
        factory = RelayServerFactory(NO_RELAY, 0, 10, Clock())
        factory.setProtocolOptions(maxMessagePayloadSize=10)
        self.assertIs(factory.protocol, RelayServerProtocol)

    def test_undo_puts_autobahn_back(self) -> None:
        """Each patch's undo restores Autobahn's own functions; nested engagements undo in order."""
        originals = (
            protocol_module.create_xor_masker,
            protocol_module.pformat,
            protocol_module.hlval,
            twisted_module.hltype,
        )
        outer = [use_small_frame_masker(), defer_debug_formatting()]
        inner = [use_small_frame_masker(), defer_debug_formatting()]
        self.assertIsNot(protocol_module.create_xor_masker, originals[0])
        for undo in reversed(inner):
            undo()
        self.assertIsNot(protocol_module.create_xor_masker, originals[0])
        for undo in reversed(outer):
            undo()
        self.assertEqual(
            (
                protocol_module.create_xor_masker,
                protocol_module.pformat,
                protocol_module.hlval,
                twisted_module.hltype,
            ),
            originals,
        )
        self.assertIs(protocol_module.create_xor_masker, create_xor_masker)
