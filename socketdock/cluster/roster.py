"""
This instance's records in Redis: which connections it holds live, which
still owe the backend a disconnect notice, and its heartbeat; and the claim
of a lost instance's notices (SPEC §8).

The roster keeps the truth in memory and mirrors each change to Redis while
the link is up.  A change made while the link is down is not queued: when
the link comes back, :meth:`Roster.rejoin` rewrites the whole record from memory
in one script, which also covers a Redis that restarted empty.

It is the relay's journal in cluster mode (:meth:`Roster.record`/:meth:`Roster.forget`): a notice
owed here and never delivered, because this instance died, is sent by the
survivor whose heartbeat first finds this one's lapsed.  An instance that
was only cut off from Redis for that long learns at its next rejoin which of
its connections a survivor gave up for it, and closes those still open.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from socketdock.cluster.scripts import BEAT, INSTANCES, LEAVE, LOCATE, REJOIN, Names
from socketdock.relay.reach import Unreachable

#: Heartbeats an instance may miss before it is declared lost.
MISSED_BEATS = 3


class Roster:
    """
    This instance's live and owed connections, in memory and in Redis.

    :param link: a :class:`socketdock.cluster.link.RedisLink` (or anything with
        ``command``, ``eval`` and ``up``).
    :param names: the cluster's key names.
    :param name: this instance's name (its ``externalhostandport``, which may
        be learned only when the callback-API listener is bound: asked for at
        the first link, never before).
    :param heartbeat: seconds between beats; the time-to-live is
        :data:`MISSED_BEATS` of them.
    :param recover: called with ids whose notices this instance now owes on
        behalf of a lost instance (or of its own previous run):
        ``Relay.recover``.
    :param fenced: called with the ids, still live here, that a survivor
        claimed while this instance was cut off from Redis: the backend was
        told they are gone.
    """

    _log = Logger()

    def __init__(
        self,
        link,
        names: Names,
        name: Callable[[], str],
        heartbeat: float,
        recover: Callable[[list[str], dict[str, str]], None],
        fenced: Callable[[list[str]], None] = lambda ids: None,
    ) -> None:
        self._link = link
        self._names = names
        self._name = name
        self._ttl_ms = max(1, int(heartbeat * MISSED_BEATS * 1000))
        self._recover = recover
        self._fenced = fenced
        self._token = secrets.token_hex(8)
        self._live: set[str] = set()
        self._owed: set[str] = set()
        # Owed id -> its tags and state, for the notice (only those with any).
        self._details: dict[str, str] = {}
        self._joined = False
        self._first = True
        self._beating: Deferred | None = None
        #: Connections of lost instances this one claimed (for /status).
        self.recovered = 0

    def _logged(self, what: str, **fields: Any) -> Callable[[Failure], None]:
        """
        An errback that logs ``what`` with the failure (``addErrback(log.failure,
        what)`` would pass the failure as the format and ``what`` as the failure).
        """
        return lambda failure: self._log.failure(what, failure, **fields)

    @property
    def me(self) -> str:
        """This instance's name in the cluster."""
        return self._name()

    # -- the relay's journal ------------------------------------------------------

    def record(self, connection_id: str, details: str = "") -> Deferred[None]:
        """
        A connection is being accepted: its notice is owed.  Fires once Redis
        has it, as the journal's record fires once the disk has it, so that a
        client never sees open a connection whose notice a crash could lose;
        at once while the link is down (the next rejoin writes it), so that a
        Redis outage never holds up a handshake.

        :param details: its tags and state, for a recovered notice.
        """
        self._owed.add(connection_id)
        if details:
            self._details[connection_id] = details
        if not self._joined:
            return succeed(None)
        if details:
            self._command("HSET", self._names.details(self.me), connection_id, details)
        d = self._link.command("SADD", self._names.owed(self.me), connection_id)
        d.addErrback(lambda f: f.trap(Unreachable))
        d.addErrback(
            self._logged("cluster: recording {connection_id} failed", connection_id=connection_id)
        )
        return d.addCallback(lambda _: None)

    def note(self, connection_id: str, details: str) -> None:
        """An owed connection's tags or state changed (ignored for one not owed yet)."""
        if connection_id not in self._owed:
            return
        if details:
            self._details[connection_id] = details
            self._mirror("HSET", self._names.details(self.me), connection_id, details)
        elif self._details.pop(connection_id, None) is not None:
            self._mirror("HDEL", self._names.details(self.me), connection_id)

    def forget(self, connection_id: str) -> None:
        """Its notice was delivered."""
        self._owed.discard(connection_id)
        self._mirror("SREM", self._names.owed(self.me), connection_id)
        if self._details.pop(connection_id, None) is not None:
            self._mirror("HDEL", self._names.details(self.me), connection_id)

    # -- the registry's events ------------------------------------------------------

    def added(self, connection_id: str) -> None:
        """Live here from the start of its handshake: reachable through any instance."""
        self._live.add(connection_id)
        if self._joined:
            self._command("HSET", self._names.where, connection_id, self.me)
            self._command("SADD", self._names.live(self.me), connection_id)

    def gone(self, connection_id: str) -> None:
        """No longer live here."""
        self._live.discard(connection_id)
        if self._joined:
            self._command("HDEL", self._names.where, connection_id)
            self._command("SREM", self._names.live(self.me), connection_id)

    def _mirror(self, *args: object) -> None:
        if self._joined:
            self._command(*args)

    def _command(self, *args: object) -> None:
        # A change lost with the link is rewritten by the next rejoin.
        d = self._link.command(*args)
        d.addErrback(lambda f: f.trap(Unreachable))
        d.addErrback(self._logged("cluster: a Redis update failed"))

    # -- joining, beating, leaving ------------------------------------------------

    def rejoin(self) -> Deferred[None]:
        """
        (Re)write this instance's whole record and beat: at every new link,
        before it counts as up.  On the run's first link, the notices its
        previous run left owed are recovered.
        """
        self._joined = False
        live, owed = sorted(self._live), sorted(self._owed)
        first = self._first
        args = [
            self._names.prefix,
            self.me,
            self._token,
            self._ttl_ms,
            "1" if first else "0",
            len(live),
            len(owed),
            *live,
            *owed,
        ]
        for connection_id, details in sorted(self._details.items()):
            args += [connection_id, details]
        d = self._link.eval(REJOIN, [], args)
        # Changes from now on follow the script on the same connection, so
        # they apply on top of the snapshot just sent.
        self._joined = True
        d.addCallback(self._rejoined, first)
        return d

    def _rejoined(self, result: list, first: bool) -> None:
        fenced = [_text(i) for i in result[0]]
        leftover = [_text(i) for i in result[1]]
        flat = [_text(x) for x in result[2]]
        kept = dict(zip(flat[0::2], flat[1::2], strict=True))
        self._first = False
        still_live = [i for i in fenced if i in self._live]
        if still_live and not first:
            self._log.warn(
                "cluster: another instance declared this one lost while Redis was out "
                "of reach for {ttl}s or more, and sent recovered notices for {count} "
                "connections that are still open here; closing them so that their "
                "clients reconnect (the backend hears of each a second time)",
                ttl=self._ttl_ms / 1000,
                count=len(still_live),
            )
            self._fenced(still_live)
        leftover = [i for i in leftover if i not in self._owed]
        if leftover:
            self._log.info(
                "cluster: {count} connections left by this instance's last run; "
                "sending their notices",
                count=len(leftover),
            )
            self._claimed(leftover, {i: kept[i] for i in leftover if i in kept})

    def beat(self) -> Deferred[None]:
        """
        Renew the heartbeat and claim what lapsed instances owe.  Skipped
        while the link is down or a beat is still running.
        """
        if not self._joined or self._beating is not None:
            return succeed(None)
        d = self._beating = self._link.eval(
            BEAT, [], [self._names.prefix, self.me, self._token, self._ttl_ms]
        )
        d.addCallback(self._beaten)
        d.addErrback(lambda f: f.trap(Unreachable))
        d.addErrback(self._logged("cluster: a heartbeat failed"))

        def done(result: object) -> object:
            self._beating = None
            return result

        return d.addBoth(done)

    def _beaten(self, result: list) -> Deferred | None:
        if not result[0]:
            self._log.warn(
                "cluster: this instance's heartbeat lapsed in Redis, or another instance "
                "uses the same externalhostandport ({me}); rejoining",
                me=self.me,
            )
            return self.rejoin()
        flat = [_text(x) for x in result[1]]
        by_instance: dict[str, list[str]] = {}
        details: dict[str, str] = {}
        for lost, connection_id, kept in zip(flat[0::3], flat[1::3], flat[2::3], strict=True):
            by_instance.setdefault(lost, []).append(connection_id)
            if kept:
                details[connection_id] = kept
        self._log.debug("cluster: heartbeat, {count} lost instances", count=len(by_instance))
        for lost, ids in sorted(by_instance.items()):
            self._log.info(
                "cluster: instance {lost} stopped beating; sending the disconnect notices "
                "of its {count} connections",
                lost=lost,
                count=len(ids),
            )
            self._claimed(ids, {i: details[i] for i in ids if i in details})
        return None

    def _claimed(self, ids: list[str], details: dict[str, str]) -> None:
        """These notices are owed here now (already so in Redis): send them."""
        self._owed.update(ids)
        self._details.update(details)
        self.recovered += len(ids)
        self._recover(ids, details)

    def leave(self) -> Deferred[None]:
        """A clean stop, after the drain: what is still owed stays for a survivor."""
        self._joined = False
        d = self._link.eval(LEAVE, [], [self._names.prefix, self.me, self._token])
        d.addErrback(lambda f: f.trap(Unreachable))
        return d.addCallback(lambda _: None)

    def lost_link(self) -> None:
        """The link went down: changes wait for the next rejoin."""
        self._joined = False

    # -- finding another instance's connection ----------------------------------

    def locate(self, connection_id: str) -> Deferred[str | None]:
        """
        The live instance holding ``connection_id`` (never this one), or None.
        Fails with :class:`Unreachable` when Redis cannot be asked.
        """
        d = self._link.eval(LOCATE, [], [self._names.prefix, connection_id])

        def holder(result: object) -> str | None:
            if not result:
                return None
            name = _text(result)
            return None if name == self.me else name

        return d.addCallback(holder)

    def instances(self) -> Deferred[list[str]]:
        """
        The names of the instances alive now (this one included, even when
        its own record is not in Redis yet), sorted.  Fails with
        :class:`Unreachable` when Redis cannot be asked.
        """
        d = self._link.eval(INSTANCES, [], [self._names.prefix])
        return d.addCallback(lambda names: sorted({self.me, *(_text(n) for n in names)}))

    def status(self) -> dict:
        """This instance's part of the ``cluster`` object of ``/status``."""
        return {"instance": self.me, "owed": len(self._owed), "recovered": self.recovered}


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
