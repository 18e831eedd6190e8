"""
:class:`IReach` for a cluster (SPEC §8): this instance's connections directly,
the others' through Redis.

A tag request is published on the tag's channel, which every instance that
holds a connection with the tag is subscribed to; Redis answers PUBLISH with
the number of subscribers, so a tag request counts instances, not
connections.  The instance that takes the request delivers to its own
connections itself, after the publish succeeded, and skips its own message
when it comes back from Redis: each connection gets the frame once, and when
Redis cannot be reached nothing is delivered anywhere (503, the backend
retries the whole send without duplicating any of it).

A request for a connection id goes to the local registry first (the fast
path, and what the callback URLs in ``meta`` lead to) and otherwise to the
holder Redis names, through :class:`socketdock.cluster.forward.Forwarder`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.logger import Logger
from zope.interface import implementer

from socketdock.cluster.forward import Forwarder
from socketdock.cluster.roster import Roster
from socketdock.cluster.scripts import Names
from socketdock.cluster.subscriptions import Subscriptions
from socketdock.relay.confirm import Tally
from socketdock.relay.listing import BadCursor
from socketdock.relay.localreach import LocalReach
from socketdock.relay.reach import IConnectionEvents, IReach, Reached, Unreachable
from socketdock.relay.registry import NotLive, Registry

_DOWN = "no link to the cluster's Redis; retry later"


def _envelope(header: dict, payload: bytes = b"") -> bytes:
    return json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n" + payload


@implementer(IConnectionEvents)
class ClusterEvents:
    """
    What this instance's registry reports, passed on to the roster (where
    connections are) and the subscriptions (which tags are held here).
    """

    def __init__(self, roster: Roster, subscriptions: Subscriptions) -> None:
        self._roster = roster
        self._subscriptions = subscriptions

    def connection_added(self, connection_id: str) -> None:
        self._roster.added(connection_id)

    def tags_changed(
        self, connection_id: str, added: Sequence[str], removed: Sequence[str]
    ) -> None:
        for tag in added:
            self._subscriptions.hold(tag)
        for tag in removed:
            self._subscriptions.release(tag)

    def connection_gone(self, connection_id: str, tags: Sequence[str]) -> None:
        self._roster.gone(connection_id)
        for tag in tags:
            self._subscriptions.release(tag)


@implementer(IReach)
class ClusterReach:
    """
    Reach every instance's connections.

    :param link: the :class:`socketdock.cluster.link.RedisLink`; tag requests need it up.
    :param forwards: whether a connection held elsewhere is asked of its holder
        (False: 404, see :meth:`here_only`).
    """

    _log = Logger()

    def __init__(
        self,
        registry: Registry,
        link,
        names: Names,
        roster: Roster,
        subscriptions: Subscriptions,
        forwarder: Forwarder,
        forwards: bool = True,
    ) -> None:
        self._registry = registry
        self._local = LocalReach(registry, lambda: roster.me)
        self._link = link
        self._names = names
        self._roster = roster
        self._subscriptions = subscriptions
        self._forwarder = forwarder
        self._forwards = forwards
        #: Messages on tag channels that were not tag requests (junk).
        self.dropped = 0

    # -- one connection ---------------------------------------------------------

    def _holder(self, connection_id: str) -> Deferred[str]:
        """The other instance holding it; fails NotLive or Unreachable."""
        if not self._forwards:
            return fail(NotLive())
        if not self._link.up:
            return fail(Unreachable(_DOWN))

        def found(holder: str | None) -> str:
            if holder is None:
                raise NotLive()
            return holder

        return self._roster.locate(connection_id).addCallback(found)

    def here_only(self) -> ClusterReach:
        """
        This reach without forwarding: for a request another instance
        forwarded here (:data:`socketdock.relay.reach.HOP_HEADER`), a
        connection not held here is 404, never asked of a third instance.
        """
        return ClusterReach(
            self._registry,
            self._link,
            self._names,
            self._roster,
            self._subscriptions,
            self._forwarder,
            forwards=False,
        )

    def send_to_connection(self, connection_id: str, payload: bytes, is_binary: bool):
        if self._registry.get(connection_id) is not None:
            return self._local.send_to_connection(connection_id, payload, is_binary)
        d = self._holder(connection_id)
        return d.addCallback(self._forwarder.send, connection_id, payload, is_binary)

    def confirm_to_connection(
        self, connection_id: str, payload: bytes, is_binary: bool, timeout: float
    ):
        if self._registry.get(connection_id) is not None:
            return self._local.confirm_to_connection(connection_id, payload, is_binary, timeout)
        d = self._holder(connection_id)
        return d.addCallback(self._forwarder.confirm, connection_id, payload, is_binary, timeout)

    def close_connection(self, connection_id: str, code: int, reason: str):
        if self._registry.get(connection_id) is not None:
            return self._local.close_connection(connection_id, code, reason)
        d = self._holder(connection_id)
        return d.addCallback(self._forwarder.close, connection_id, code, reason)

    def describe_connection(self, connection_id: str):
        if self._registry.get(connection_id) is not None:
            return self._local.describe_connection(connection_id)
        d = self._holder(connection_id)
        return d.addCallback(self._forwarder.describe, connection_id)

    def change_tags(self, connection_id: str, add: Sequence[str], remove: Sequence[str]):
        connection = self._registry.get(connection_id)
        if connection is None:
            d = self._holder(connection_id)
            return d.addCallback(self._forwarder.change_tags, connection_id, add, remove)
        # Subscribed before the tags take effect, so that a tag request made
        # after this answer, through any instance, reaches the connection.
        new = [t for t in dict.fromkeys(add) if t not in connection.tags]
        holds = [self._subscriptions.hold(t) for t in new]

        def apply(_: object):
            try:
                return self._local.change_tags(connection_id, add, remove)
            finally:
                for tag in new:
                    self._subscriptions.release(tag)

        return gatherResults(holds).addCallback(apply)

    def set_state(self, connection_id: str, state: str):
        if self._registry.get(connection_id) is not None:
            return self._local.set_state(connection_id, state)
        d = self._holder(connection_id)
        return d.addCallback(self._forwarder.set_state, connection_id, state)

    # -- a tag ------------------------------------------------------------------

    def _others(self, tag: str, subscribers: int) -> int:
        """Subscribers Redis counted, less this instance."""
        return subscribers - (1 if self._subscriptions.confirmed(tag) else 0)

    def send_to_tag(self, tag: str, payload: bytes, is_binary: bool) -> Deferred[Reached]:
        if not self._link.up:
            return fail(Unreachable(_DOWN))
        message = _envelope({"op": "send", "from": self._roster.me, "binary": is_binary}, payload)
        d = self._link.command("PUBLISH", self._names.tag_channel(tag), message)

        def published(subscribers: int) -> Deferred[Reached]:
            others = self._others(tag, subscribers)
            return self._local.send_to_tag(tag, payload, is_binary).addCallback(
                self._counted, others
            )

        return d.addCallback(published)

    def confirm_to_tag(
        self, tag: str, payload: bytes, is_binary: bool, timeout: float, everywhere: bool = True
    ):
        # Confirms are counted per connection, which a tag's channel cannot
        # tell: every live instance is asked for its part over its callback
        # API, and the counts are added up.
        if not everywhere:
            return self._local.confirm_to_tag(tag, payload, is_binary, timeout)
        if not self._link.up:
            return fail(Unreachable(_DOWN))

        def ask(names: list[str]):
            parts = [
                self._local.confirm_to_tag(tag, payload, is_binary, timeout)
                if name == self._roster.me
                else self._forwarder.tag_confirm(name, tag, payload, is_binary, timeout)
                for name in names
            ]
            return gatherResults(parts, consumeErrors=True).addCallbacks(
                lambda tallies: sum(tallies, Tally()), _first_failure
            )

        return self._roster.instances().addCallback(ask)

    def list_tag(self, tag: str, cursor: str | None, limit: int, everywhere: bool = True):
        # One instance after the other, in name order; the cursor names the
        # instance and that instance's own cursor.
        if not everywhere:
            return self._local.list_tag(tag, cursor, limit)
        try:
            start, inner = _split_cursor(cursor)
        except BadCursor:
            return fail()
        if not self._link.up:
            return fail(Unreachable(_DOWN))

        def walk(names: list[str]):
            later = [n for n in names if n >= start] if start else names
            return self._page_from(tag, later, inner if later[:1] == [start] else None, limit)

        return self._roster.instances().addCallback(walk)

    def _page_from(self, tag: str, names: list[str], inner: str | None, limit: int):
        if not names:
            return {"connections": [], "cursor": None}
        name, rest = names[0], names[1:]
        if name == self._roster.me:
            d = self._local.list_tag(tag, inner, limit)
        else:
            d = self._forwarder.tag_page(name, tag, inner, limit)

        def paged(page: dict):
            if page["cursor"] is not None:
                return {
                    "connections": page["connections"],
                    "cursor": _join_cursor(name, page["cursor"]),
                }
            if page["connections"]:
                after = _join_cursor(rest[0], None) if rest else None
                return {"connections": page["connections"], "cursor": after}
            return self._page_from(tag, rest, None, limit)

        return d.addCallback(paged)

    def close_tag(self, tag: str, code: int, reason: str) -> Deferred[Reached]:
        if not self._link.up:
            return fail(Unreachable(_DOWN))
        message = _envelope(
            {"op": "close", "from": self._roster.me, "code": code, "reason": reason}
        )
        d = self._link.command("PUBLISH", self._names.tag_channel(tag), message)

        def published(subscribers: int) -> Deferred[Reached]:
            others = self._others(tag, subscribers)
            return self._local.close_tag(tag, code, reason).addCallback(self._counted, others)

        return d.addCallback(published)

    def count_tag(self, tag: str) -> Deferred[Reached]:
        if not self._link.up:
            return fail(Unreachable(_DOWN))
        d = self._link.command("PUBSUB", "NUMSUB", self._names.tag_channel(tag))

        def counted(answer: list) -> Reached:
            others = self._others(tag, int(answer[1]))
            here = 1 if self._registry.carriers(tag) else 0
            return Reached(instances=others + here)

        return d.addCallback(counted)

    @staticmethod
    def _counted(local: Reached, others: int) -> Reached:
        if others == 0 and not local.connections:
            # Only this instance, and none of its carriers took the frame:
            # the local answer (404, or 503 when all are full) is the truth.
            return local
        here = 1 if (local.connections or local.full) else 0
        return Reached(instances=others + here)

    def close_here(self, connection_ids: list[str], code: int, reason: str) -> None:
        """Close those of ``connection_ids`` live on this instance (initiator ``server``)."""
        for connection_id in connection_ids:
            connection = self._registry.get(connection_id)
            if connection is not None:
                connection.close(code, reason, "server")

    # -- from other instances ---------------------------------------------------

    def message(self, channel: bytes, data: bytes) -> None:
        """
        A tag request published by another instance (or this one, skipped).
        Anything else on a tag channel (whoever can publish to Redis can put
        it there) is counted in ``dropped`` and dropped; the first one is
        logged, in one line.
        """
        tag = self._names.tag_of(channel)
        if tag is None:
            return
        request = _tag_request(data)
        if request is None:
            self.dropped += 1
            if self.dropped == 1:
                self._log.warn(
                    "cluster: dropped a message on {channel!r} that is not a tag request; "
                    "further ones are only counted (socketdock_cluster_messages_dropped_total)",
                    channel=channel[:200],
                )
            return
        header, payload = request
        if header.get("from") == self._roster.me:
            return  # delivered here already, by the request itself
        if header["op"] == "send":
            self._local.send_to_tag(tag, payload, header["binary"])
        else:
            self._local.close_tag(tag, header["code"], header["reason"])


def _tag_request(data: bytes) -> tuple[dict, bytes] | None:
    """
    The header and payload of a message :func:`_envelope` made, or None for
    anything else.
    """
    head, _, payload = data.partition(b"\n")
    try:
        header = json.loads(head)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(header, dict):
        return None
    op = header.get("op")
    if op == "send":
        if type(header.get("binary")) is not bool:
            return None
    elif op == "close":
        code, reason = header.get("code"), header.get("reason")
        if type(code) is not int or not (code == 1000 or 3000 <= code <= 4999):
            return None
        if not isinstance(reason, str) or len(reason.encode("utf-8", "replace")) > 123:
            return None
    else:
        return None
    return header, payload


def _first_failure(failure):
    """gatherResults' FirstError, unwrapped: the failure of the first part that failed."""
    return failure.value.subFailure


def _join_cursor(instance: str, inner: str | None) -> str:
    raw = json.dumps([instance, inner], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _split_cursor(cursor: str | None) -> tuple[str | None, str | None]:
    """The instance and its own cursor a cluster cursor names; (None, None) to start."""
    if not cursor:
        return None, None
    try:
        instance, inner = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise BadCursor("cursor is not one this API gave") from None
    if not isinstance(instance, str) or not (inner is None or isinstance(inner, str)):
        raise BadCursor("cursor is not one this API gave")
    return instance, inner
