"""
This instance's records in Redis: which connections it holds live, which
still owe the backend a disconnect notice, and its heartbeat; and the claim
of a lost instance's notices (SPEC §8).

The roster keeps the truth in memory and mirrors each change to Redis while
the link is up.  A change made while the link is down is not queued: when
the link comes back, :meth:`Roster.rejoin` rewrites the whole record from memory
in one script, which also covers a Redis that restarted empty.  A change
Redis refuses with the link up (out of memory, ``READONLY`` after a failover)
is made good the same way: the whole record is rewritten, every
:data:`REWRITE_DELAY` seconds at first and less often while refused, until
Redis takes it, as the journal retries its batch.  The refusal and the end of
it are logged once each, not per change.

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

from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from socketdock.cluster.link import RedisRefused
from socketdock.cluster.scripts import APPLY, BEAT, INSTANCES, LEAVE, LOCATE, REJOIN, Names
from socketdock.relay.reach import Unreachable

#: Heartbeats an instance may miss before it is declared lost.
MISSED_BEATS = 3

#: Seconds before the record is rewritten after Redis refused a change;
#: doubled while the rewrite is refused too, up to :data:`REWRITE_DELAY_MAX`.
REWRITE_DELAY = 0.5
REWRITE_DELAY_MAX = 5.0


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
    :param clock: times the rewrite after a refused change, and the watch of
        another run's heartbeat at the first link.
    :param taken: called with one line when another live instance already
        runs under this name: this one must not join (``tap`` stops it).
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
        clock: IReactorTime | None = None,
        taken: Callable[[str], None] = lambda line: None,
    ) -> None:
        self._link = link
        self._clock = clock
        self._taken_by_other = taken
        self._heartbeat = heartbeat
        # The beat count of another run seen under this name at the first
        # link, while waiting to learn whether it lives (None: not waiting).
        self._other_beats: bytes | None = None
        # Why Redis last refused a change (None: it takes them), and the
        # rewrite that will make good what it refused.
        self._refusal: str | None = None
        self._rewrite: IDelayedCall | None = None
        self._rewrite_delay = REWRITE_DELAY
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
        # The group commit: (op, id, details) triples waiting to go, the
        # records waiting for them, and whether a batch is on its way.
        self._batch: list[str] = []
        self._waiters: list[Deferred[None]] = []
        self._sending = False
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
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        self._change("r", connection_id, details)
        return d

    def note(self, connection_id: str, details: str) -> None:
        """An owed connection's tags or state changed (ignored for one not owed yet)."""
        if connection_id not in self._owed:
            return
        if details:
            self._details[connection_id] = details
        elif self._details.pop(connection_id, None) is None:
            return
        self._change("n", connection_id, details)

    def forget(self, connection_id: str) -> None:
        """Its notice was delivered."""
        self._owed.discard(connection_id)
        self._details.pop(connection_id, None)
        self._change("f", connection_id)

    # -- the registry's events ------------------------------------------------------

    def added(self, connection_id: str) -> None:
        """Live here from the start of its handshake: reachable through any instance."""
        self._live.add(connection_id)
        self._change("a", connection_id)

    def gone(self, connection_id: str) -> None:
        """No longer live here."""
        self._live.discard(connection_id)
        self._change("g", connection_id)

    # -- the group commit ---------------------------------------------------------

    def _change(self, op: str, connection_id: str, details: str = "") -> None:
        """
        Mirror one change to Redis (while joined; a rejoin writes the rest).
        With no batch on its way it goes at once; changes made while one is
        on its way collect and go together, in one script, when it is
        answered: a storm of handshakes costs a few round trips, not three
        commands each, and no timer delays a quiet instance.
        """
        if not self._joined:
            return
        self._batch += (op, connection_id, details)
        if not self._sending:
            self._send()

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        waiters, self._waiters = self._waiters, []
        if not batch:
            _release(waiters)
            return
        self._sending = True
        d = self._link.eval(APPLY, [], [self._names.prefix, self.me, *batch])
        d.addCallbacks(self._taken, self._refused)
        d.addErrback(self._logged("cluster: a Redis update failed"))

        def sent(_: object) -> None:
            # Every record in the batch is answered, taken or not: a refusal
            # is made good by the rewrite, a lost link by the next rejoin.
            self._sending = False
            _release(waiters)
            if self._batch or self._waiters:
                self._send()

        d.addCallback(sent)

    def settled(self) -> Deferred[None]:
        """Fires once every change made so far was answered by Redis (or failed)."""
        if not self._sending and not self._batch:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        if not self._sending:
            self._send()
        return d

    # -- changes Redis refuses ------------------------------------------------------

    def _taken(self, result: object) -> None:
        """Redis took a change: if it refused the ones before, say it no longer does."""
        if self._refusal is not None:
            self._refusal = None
            self._rewrite_delay = REWRITE_DELAY
            self._log.info("cluster: Redis takes this instance's changes again")

    def _refused(self, failure: Failure) -> None:
        """
        A change did not reach Redis.  Lost with the link: the next rejoin
        rewrites it.  Refused by Redis: a rewrite is scheduled.
        """
        failure.trap(Unreachable)
        if not isinstance(failure.value, RedisRefused):
            return
        why = failure.value.why
        if why != self._refusal:
            self._refusal = why
            self._log.warn(
                "cluster: Redis refuses this instance's changes ({why}); its connections "
                "are served, and its record is rewritten until Redis takes it",
                why=why,
            )
        self._schedule_rewrite()

    def _schedule_rewrite(self) -> None:
        if self._clock is None or (self._rewrite is not None and self._rewrite.active()):
            return
        self._rewrite = self._clock.callLater(self._rewrite_delay, self._rewrite_now)

    def _rewrite_now(self) -> None:
        self._rewrite = None
        if not self._joined:
            return  # the link went: its return rewrites everything anyway
        d = self.rejoin()

        def refused(failure: Failure) -> None:
            failure.trap(RedisRefused)
            self._rewrite_delay = min(REWRITE_DELAY_MAX, self._rewrite_delay * 2)
            self._schedule_rewrite()

        d.addErrback(refused)
        d.addErrback(lambda f: f.trap(Unreachable))
        d.addErrback(self._logged("cluster: rewriting this instance's record failed"))

    def stop_rewriting(self) -> None:
        """No rewrite after a stop."""
        if self._rewrite is not None and self._rewrite.active():
            self._rewrite.cancel()
        self._rewrite = None

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
        # they apply on top of the snapshot just sent; but a run's first
        # join waits for the answer, which may be that the name is taken.
        self._joined = not first
        d.addCallback(self._rejoined, first, live, owed)
        return d

    def _rejoined(
        self, result: list, first: bool, live: list[str], owed: list[str]
    ) -> Deferred[None] | None:
        if result and result[0] == b"taken":
            return self._name_taken(result[1], int(result[2]))
        if first:
            self._other_beats = None
            if live != sorted(self._live) or owed != sorted(self._owed):
                # Connections came or went while the answer was on its way.
                self._first = False
                self._joined = True
                self._claim_leftover(result, first)
                return self.rejoin()
            self._joined = True
        self._claim_leftover(result, first)
        return None

    def _name_taken(self, beats: bytes, pttl: int) -> Deferred[None] | None:
        """
        Another run's heartbeat is alive under this name.  If it beats while
        this run waits, it is a live instance (a copied INI): this one is
        refused, with one line.  If it lapses instead, it was this
        instance's crashed run: the join goes ahead, and recovers its
        notices.
        """
        if self._other_beats is not None and beats != self._other_beats:
            self._taken_by_other(
                f"cluster: another live instance already runs as {self.me} (its heartbeat "
                "in Redis is beating); this one does not start: give each instance its "
                "own externalhostandport"
            )
            return Deferred()  # never joins; the stop cancels it
        if self._other_beats is None:
            self._log.info(
                "cluster: an earlier run of {me} has a heartbeat in Redis for {seconds:.1f}s "
                "more; joining once it lapses (or refusing to start if it beats)",
                me=self.me,
                seconds=pttl / 1000,
            )
        self._other_beats = beats
        assert self._clock is not None, "the first join needs a clock"
        # Look again after a beat, or as soon as it lapses (-1: no
        # time-to-live at all, which only a hand in Redis sets).
        wait = self._heartbeat if pttl < 0 else min(self._heartbeat, max(pttl, 1) / 1000)
        d: Deferred[None] = task.deferLater(self._clock, wait, lambda: None)
        return d.addCallback(lambda _: self.rejoin())

    def _claim_leftover(self, result: list, first: bool) -> None:
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


def _release(waiters: list[Deferred[None]]) -> None:
    for d in waiters:
        d.callback(None)


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
