"""
The client side's Autobahn factory: one :class:`RelayServerProtocol` per
client, built with the listener's :class:`~socketdock.ws.hub.Hub`, and
Autobahn's options from the settings.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory

from socketdock.relay.admission import Admissions
from socketdock.relay.session import Relay
from socketdock.ws.context import HeaderAllowList
from socketdock.ws.gate import Gate
from socketdock.ws.hub import Hub
from socketdock.ws.origins import OriginPolicy
from socketdock.ws.protocol import RelayServerProtocol
from socketdock.ws.ratelimit import HandshakeRate


class RelayServerFactory(WebSocketServerFactory):
    """
    Builds one :class:`RelayServerProtocol` per client; holds only its
    collaborators, in :attr:`hub`, and Autobahn's options.

    :param relay: the sessions and the backend.
    :param max_connections: live connections allowed (0: no limit).
    :param max_message_size: also bounds a slow reader's unsent bytes (twice this).
    :param max_pending: handshakes waiting for the backend's answer at once
        (0: no limit).
    :param rate: the per-address handshake rate, or None for none.
    :param specialise: given the protocol class and this factory after its
        options are set, returns the class to build connections from
        (:mod:`socketdock.tuning` passes one that shares the options), or None.
    :param forward_headers: which handshake headers the connect notice carries.

    The other parameters are the :class:`~socketdock.ws.hub.Hub`'s.
    """

    protocol = RelayServerProtocol  # type: ignore[assignment]  # built with a hub (buildProtocol)

    def __init__(
        self,
        relay: Relay,
        max_connections: int,
        max_message_size: int,
        reactor,
        origins: OriginPolicy = OriginPolicy(["*"]),
        ping_interval: float = 0,
        ping_timeout: float = 0,
        specialise: Callable[
            [type[RelayServerProtocol], RelayServerFactory], type[RelayServerProtocol]
        ]
        | None = None,
        max_pending: int = 0,
        rate: HandshakeRate | None = None,
        max_lifetime: float = 0,
        tag_deadline: float = 0,
        uniform: Callable[[], float] = random.random,
        forward_headers: HeaderAllowList | None = None,
    ) -> None:
        self._specialise = specialise
        super().__init__(reactor=reactor)
        self.hub = Hub(
            reactor=reactor,
            metrics=relay.metrics,
            gate=Gate(Admissions(relay, max_connections), origins, rate, max_pending),
            budget=relay.budget,
            forward_headers=forward_headers or HeaderAllowList(["*"]),
            max_message_size=max_message_size,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_lifetime=max_lifetime,
            tag_deadline=tag_deadline,
            uniform=uniform,
        )

    def buildProtocol(self, addr: object) -> RelayServerProtocol:
        """As Twisted's, but the protocol is handed its :class:`~socketdock.ws.hub.Hub`."""
        protocol = self.protocol(self.hub)
        protocol.factory = self
        return protocol

    # Autobahn spells out every option; this forwards them all by keyword.
    def setProtocolOptions(self, **options: Any) -> None:  # type: ignore[override]
        """Set Autobahn's options, and let ``specialise`` see them."""
        super().setProtocolOptions(**options)
        if self._specialise is not None:
            self.protocol = self._specialise(RelayServerProtocol, self)


def make_ws_factory(config, relay: Relay, reactor, specialise=None) -> RelayServerFactory:
    """
    The client-side factory, with Autobahn's options taken from the config.

    :param specialise: see :class:`RelayServerFactory`.
    """
    factory = RelayServerFactory(
        relay,
        config.max_connections,
        config.max_message_size,
        reactor,
        OriginPolicy(config.allowed_origins),
        config.ping_interval,
        config.ping_timeout,
        specialise,
        config.pending_handshakes,
        HandshakeRate(reactor, config.handshake_rate, config.handshake_burst)
        if config.handshake_rate
        else None,
        config.max_lifetime,
        config.tag_deadline,
        forward_headers=HeaderAllowList(config.forward_headers),
    )
    options = dict(
        webStatus=False,
        # Origins are checked in onConnect (socketdock.ws.origins): 403, and
        # patterns without a port mean the default port.
        allowedOrigins=["*"],
        allowNullOrigin=True,
        maxMessagePayloadSize=config.max_message_size,
        maxFramePayloadSize=config.max_message_size,
        # twisted.web already bounded the request headers; the backend's
        # admission has its own bound (timeout x retries).
        openHandshakeTimeout=0,
        closeHandshakeTimeout=1,
        # Pings are ours (socketdock.ws.keepalive): Autobahn's timers truncate
        # deadlines to whole seconds.
        autoPingInterval=0,
        # Messages are handed on whole; there is no use for partial frames.
        autoFragmentSize=0,
        failByDrop=False,
        # Answer a client's close with its own code and reason, as RFC 6455
        # §5.5.1 suggests and ws, websockets and browsers do: their close
        # events report the code of our reply, not the one they sent.
        echoCloseCodeReason=True,
    )
    if config.permessage_deflate:
        from autobahn.websocket.compress import (
            PerMessageDeflateOffer,
            PerMessageDeflateOfferAccept,
        )

        def accept(offers):
            for offer in offers:
                if isinstance(offer, PerMessageDeflateOffer):
                    return PerMessageDeflateOfferAccept(offer)
            return None

        options["perMessageCompressionAccept"] = accept
    factory.setProtocolOptions(**options)
    return factory
