"""
What every connection of one WebSocket listener shares, handed to each
protocol by its factory's ``buildProtocol``.

The protocol reads its collaborators and limits from this one frozen
object, not off ``self.factory``: what a connection depends on is then
written in one place, and a test builds a connection with a hub of its own.
Autobahn's options stay on the factory, where Autobahn reads them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs

from socketdock.ops.metrics import Metrics
from socketdock.relay.budget import ByteBudget
from socketdock.ws.context import HeaderAllowList
from socketdock.ws.gate import Gate


@attrs.frozen
class Hub:
    """
    One listener's collaborators and limits.

    :param reactor: the clock (``seconds``, ``callLater``).
    :param gate: decides each handshake and counts those waiting.
    :param budget: the instance's bytes a slow reader may leave unsent.
    :param forward_headers: which handshake headers the connect notice carries.
    :param max_message_size: also bounds a slow reader's unsent bytes (twice
        this) and the bytes kept aside during admission.
    :param ping_interval: seconds between keepalive pings (0: none).
    :param ping_timeout: seconds a pong may be late (0: never drop).
    :param max_lifetime: seconds (±10%) after which an open connection is
        closed with 1001; 0 for never.
    :param tag_deadline: seconds after opening by which a tag must have
        reached a connection, else it is closed with 1008; 0 for never.
    :param uniform: numbers in [0, 1) for the lifetime's jitter.
    """

    reactor: Any
    metrics: Metrics
    gate: Gate
    budget: ByteBudget
    forward_headers: HeaderAllowList
    max_message_size: int
    ping_interval: float = 0
    ping_timeout: float = 0
    max_lifetime: float = 0
    tag_deadline: float = 0
    uniform: Callable[[], float] = random.random
