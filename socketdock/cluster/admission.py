"""
Tags given in the connect answer take effect only once other instances can
reach them (SPEC §8: a send made through any instance after the backend
answered the connect notice reaches that connection).

:class:`SubscribingBackend` wraps the relay's backend: when an admission carries
tags, their channels are subscribed before the admission goes on to the
protocol, which then tags the connection and answers the handshake.  The
hold taken here is released right after the protocol took the admission;
by then the connection holds the tags itself.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, gatherResults
from zope.interface import implementer

from socketdock.cluster.subscriptions import Subscriptions
from socketdock.relay.backend import Admission, IBackend


@implementer(IBackend)
class SubscribingBackend:
    """
    An :class:`IBackend` whose admissions wait for their tags' subscriptions.

    :param backend: the real backend; every other request goes straight to it.
    """

    def __init__(self, backend: IBackend, subscriptions: Subscriptions) -> None:
        self._backend = backend
        self._subscriptions = subscriptions
        self.admits = backend.admits

    def connect(self, connection_id, headers, offered, context=None) -> Deferred[Admission]:
        outer: Deferred[Admission] = Deferred()

        def admitted(admission: Admission) -> None:
            if not admission.tags:
                outer.callback(admission)
                return
            holds = [self._subscriptions.hold(tag) for tag in admission.tags]
            gatherResults(holds).addCallback(lambda _: go_on(admission))

        def go_on(admission: Admission) -> None:
            try:
                outer.callback(admission)
            finally:
                for tag in admission.tags:
                    self._subscriptions.release(tag)

        d = self._backend.connect(connection_id, headers, offered, context)
        d.addCallbacks(admitted, outer.errback)
        return outer

    def message(self, connection_id, seq, payload, is_binary, tags=(), state=None):
        if state is None:
            return self._backend.message(connection_id, seq, payload, is_binary, tags)
        return self._backend.message(connection_id, seq, payload, is_binary, tags, state=state)

    def disconnect(
        self, connection_id, code, reason, initiator, recovered=False, tags=(), state=None
    ):
        if state is not None:
            return self._backend.disconnect(
                connection_id, code, reason, initiator, recovered=recovered, tags=tags, state=state
            )
        return self._backend.disconnect(
            connection_id, code, reason, initiator, recovered=recovered, tags=tags
        )
