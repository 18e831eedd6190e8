"""
How the callback API reaches connections: by id, or by tag (SPEC §8).

The callback API asks only :class:`IReach`; it never looks into the registry for a
tag or an id itself.  Without ``cluster`` the answer is local
(:class:`socketdock.relay.localreach.LocalReach` over the registry's index).  In
cluster mode an implementation backed by a shared store (Redis) answers for
every instance, and :class:`IConnectionEvents` is how it learns what this
instance's connections are doing so it can publish it.

Every callback route that names a connection or a tag goes through it
(``socketdock/api/sockets.py``, ``tags.py``, ``listing.py``), with one tree
with or without ``cluster``; only ``GET /connections`` reads this instance's
registry directly.

Wiring (socketdock/assembly.py): the registry is built with the
:class:`IConnectionEvents` (``Registry(events)``) and the API with the :class:`IReach`
(``make_api_children(..., reach)``).  In cluster mode the events are the
cluster node's (``ClusterEvents``) and the reach is ``ClusterReach``, which
keeps the local :class:`LocalReach` for what this instance holds and asks the
others for the rest.

Every method returns a Deferred, even where the local answer is immediate, so
that an implementation that must ask another instance fits the same callers.
Where the answer is known at once the Deferred has already fired, and the
API answers in the same call (``socketdock.api.routes.answer``): the local
``send_to_connection`` hands back the connection's own Deferred, no other.
Failures a caller must expect are the exceptions defined here,
:class:`socketdock.relay.registry.NotLive` / :class:`OutboundFull` and those
of the confirm, state and listing methods; the API maps them to statuses in
one place (``socketdock.api.routes.failed``):

==============================  ====================================
failure                         answer
==============================  ====================================
:class:`NotLive`                404 no such live connection
:class:`OutboundFull`           503 + ``Retry-After: 1``, its ``why``
:class:`InvalidTags`            400 with the exception's one-line text
``BadCursor``                   400 with the exception's one-line text
``InvalidState``                its ``status`` (400, 413) and text
:class:`Unreachable`            503 + ``Retry-After: <retry_after>``
``Unconfirmed``                 504 (the client did not confirm)
``Gone``                        410 (closed before it confirmed)
anything else                   500, logged
==============================  ====================================
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Interface, implementer

#: Marks a ``/socket/<id>`` request that one instance forwarded to another
#: (cluster mode).  The receiver answers it from its own connections only,
#: never forwards it again: a holder entry naming an alias of the instance
#: itself cannot make a request travel in a loop (RFC 8586's ``CDN-Loop``
#: guards proxies the same way).  The callback API's token is checked first,
#: as for any request.
HOP_HEADER = b"X-SocketDock-Forwarded"

#: The header on a request one instance makes to another for the part of a
#: tag request that only the receiver's own connections answer (SPEC §9's
#: confirmed tag send and tag listing, fanned out by the instance asked).
HERE_ONLY = b"x-socketdock-scope"


class Unreachable(Exception):
    """
    The answer depends on instances that cannot be asked right now (the
    cluster link is down): the caller cannot know, and should retry.

    :param why: one line for the 503 answer and the log.
    :param retry_after: whole seconds suggested in ``Retry-After``.
    """

    def __init__(self, why: str, retry_after: int = 1) -> None:
        super().__init__(why)
        self.why = why
        self.retry_after = retry_after


class InvalidTags(ValueError):
    """A tag, or a connection's resulting set of tags, breaks the rules of SPEC §8."""


@attrs.frozen
class Reached:
    """
    What a request to a tag found.

    Exactly one of ``connections`` and ``instances`` is set: a cluster
    implementation that can count only the instances it reached (not their
    connections) sets ``instances`` instead.  Zero (in whichever is set)
    means nobody carries the tag, and the API answers 404.

    :param connections: live connections that carry the tag (for a send:
        those the frame was handed to, or held for until their handshake
        completes).
    :param instances: instances that hold at least one such connection.
    :param full: for a send, connections that carried the tag but were not
        sent the frame because their client reads too slowly (SPEC §4's
        outbound-buffer rule); not counted in ``connections``.
    """

    connections: int | None = None
    instances: int | None = None
    full: int = 0

    @property
    def none(self) -> bool:
        """Nobody (reachable) carries the tag."""
        return not (self.connections or self.instances or self.full)

    def as_json(self) -> dict:
        """The 200 answer's JSON object: only the figures that are known."""
        answer: dict = {}
        if self.connections is not None:
            answer["connections"] = self.connections
        if self.instances is not None:
            answer["instances"] = self.instances
        if self.full:
            answer["full"] = self.full
        return answer


class IReach(Interface):
    """
    Where connections are and who carries a tag: the contract between the
    callback API and the local or cluster implementation.

    Tags given to the methods are already validated strings
    (:func:`socketdock.relay.tags.check_tag`); the implementation validates only
    what needs the connection's state (the 64-tag limit).  "Live" is
    SPEC §4's: open or in a pending handshake, not closing.
    """

    def here_only() -> IReach:
        """
        This reach answering from this instance's connections only: for a
        request another instance forwarded (:data:`HOP_HEADER`), a connection
        not held here is :class:`NotLive`, never asked of a third instance.
        Without a cluster, the reach itself.
        """

    def send_to_connection(connection_id: str, payload: bytes, is_binary: bool) -> Deferred[None]:
        """
        Hand one frame to one connection, wherever it is held.

        Fires once handed to the socket (after the handshake, for a pending
        one); fails with :class:`NotLive` when no instance holds it live,
        :class:`OutboundFull` when its client reads too slowly, :class:`Unreachable`
        when the instance that may hold it cannot be asked.
        """

    def confirm_to_connection(
        connection_id: str, payload: bytes, is_binary: bool, timeout: float
    ) -> Deferred[None]:
        """
        :meth:`send_to_connection`, then wait up to ``timeout`` seconds for
        its client to confirm it (SPEC §9).  Fails as that does, or with
        :class:`socketdock.relay.confirm.Unconfirmed` or
        :class:`socketdock.relay.confirm.Gone`.
        """

    def close_connection(connection_id: str, code: int, reason: str) -> Deferred[None]:
        """
        Close one connection on behalf of the backend (the notice says
        ``"initiator": "backend"``).  Fails with :class:`NotLive` or :class:`Unreachable`.
        """

    def describe_connection(connection_id: str) -> Deferred[dict]:
        """
        The JSON object of ``GET /socket/<id>`` for one connection, wherever
        it is held.  Fails with :class:`NotLive` or :class:`Unreachable`.
        """

    def change_tags(
        connection_id: str, add: Sequence[str], remove: Sequence[str]
    ) -> Deferred[tuple[str, ...]]:
        """
        Remove ``remove`` then add ``add`` to one connection's tags, all or
        nothing, and fire with its tags now (in the order they were first
        added).  Removing a tag it does not carry, or adding one it does, is
        no error.  Fails with :class:`InvalidTags` when the result would pass 64
        tags (nothing changed), :class:`NotLive`, or :class:`Unreachable`.
        """

    def set_state(connection_id: str, state: str) -> Deferred[str]:
        """
        Replace one connection's state (compact JSON text, already checked)
        and fire with it.  Fails with :class:`NotLive` or :class:`Unreachable`.
        """

    def send_to_tag(tag: str, payload: bytes, is_binary: bool) -> Deferred[Reached]:
        """
        Hand one frame to every live connection carrying ``tag``, on every
        instance.  A connection whose client reads too slowly is skipped and
        counted in :attr:`Reached.full`; the others still get the frame.  Fires
        with what was reached (:attr:`Reached.none` when nobody carries the tag);
        fails with :class:`Unreachable` when some instance that may hold such a
        connection cannot be asked (then nothing is promised about the
        others: the backend retries the whole send).
        """

    def confirm_to_tag(
        tag: str, payload: bytes, is_binary: bool, timeout: float, everywhere: bool = True
    ) -> Deferred:
        """
        Hand one frame to every live connection carrying ``tag`` and wait up
        to ``timeout`` seconds for each client to confirm it; fires with a
        :class:`socketdock.relay.confirm.Tally` (:attr:`~socketdock.relay.confirm.Tally.none`
        when nobody carries the tag).  Fails with :class:`Unreachable` when
        an instance cannot be asked (the backend retries the whole send).

        :param everywhere: False: this instance's carriers only.
        """

    def list_tag(
        tag: str, cursor: str | None, limit: int, everywhere: bool = True
    ) -> Deferred[dict]:
        """
        One page of the walk over every instance's live connections carrying
        ``tag``: ``{"connections": [...], "cursor": <str> | None}``.  Fails
        with :class:`socketdock.relay.listing.BadCursor` (a cursor it did not
        give), or :class:`Unreachable`.

        :param everywhere: False: this instance's connections only.
        """

    def close_tag(tag: str, code: int, reason: str) -> Deferred[Reached]:
        """
        Close every live connection carrying ``tag`` (initiator ``backend``).
        Fires with how many were closed; fails with :class:`Unreachable`.
        """

    def count_tag(tag: str) -> Deferred[Reached]:
        """
        How many live connections (or instances) carry ``tag``; fails with
        :class:`Unreachable`.
        """


class IConnectionEvents(Interface):
    """
    What this instance's registry reports as its connections change: the
    hooks a cluster implementation uses to publish who is where.  Called
    synchronously from the registry; must not raise, and must not call back
    into the registry.  The local implementation ignores them (the registry
    keeps its own index).
    """

    def connection_added(connection_id: str) -> None:
        """A handshake started here: the connection is live on this instance."""

    def tags_changed(connection_id: str, added: Sequence[str], removed: Sequence[str]) -> None:
        """A live connection's tags changed by exactly these (never both empty)."""

    def connection_gone(connection_id: str, tags: Sequence[str]) -> None:
        """
        The connection stopped being live (closing, closed, or refused);
        ``tags`` are those it carried, now dropped from every index.
        """


@implementer(IConnectionEvents)
@attrs.frozen
class NoEvents:
    """:class:`IConnectionEvents` that ignores everything: the default, without a cluster."""

    def connection_added(self, connection_id: str) -> None:
        pass

    def tags_changed(
        self, connection_id: str, added: Sequence[str], removed: Sequence[str]
    ) -> None:
        pass

    def connection_gone(self, connection_id: str, tags: Sequence[str]) -> None:
        pass
