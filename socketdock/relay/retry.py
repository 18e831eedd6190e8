"""
Retrying a request to the backend: exponential backoff with jitter (SPEC §5).

The loop is generic: an ``attempt`` makes one request, a ``judge`` says what
its outcome means.  It uses only the injected clock, so tests drive it with
``task.Clock``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

T = TypeVar("T")

#: Longest wait a ``Retry-After`` header may impose: a backend that asks for an
#: hour would otherwise stall a client's whole queue for that long.
MAX_RETRY_AFTER = 60.0


@attrs.frozen
class Backoff:
    """
    How long to wait before retry number ``n`` (1-based).

    :param retries: further attempts after the first one.
    :param base: the first delay; each later one doubles, up to ``cap``.
    :param forever: after ``retries`` go on retrying at ``cap`` (notices).
    """

    retries: int
    base: float = 0.1
    cap: float = 5.0
    forever: bool = False

    def delay(self, n: int, rnd: Callable[[], float] = random.random) -> float:
        """Equal jitter: between half and all of the exponential delay."""
        full = min(self.cap, self.base * (2 ** min(n - 1, 32)))
        return full * (0.5 + 0.5 * rnd())

    def allows(self, n: int) -> bool:
        """Whether retry number ``n`` may be made."""
        return self.forever or n <= self.retries


@attrs.frozen
class Done(Generic[T]):
    """The outcome is final and good: ``value`` is the result."""

    value: T


@attrs.frozen
class Final:
    """The outcome is final and bad: do not retry."""

    error: Exception


@attrs.frozen
class Again:
    """
    Worth retrying.

    :param why: a short description for logs (never a body).
    :param after: a delay the server asked for (``Retry-After``), if any.
    """

    why: str
    after: float | None = None


Verdict = Done[Any] | Final | Again


class RetriesExhausted(Exception):
    """Every allowed attempt failed; ``why`` says how the last one did."""

    def __init__(self, why: str, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempts: {why}")
        self.why = why
        self.attempts = attempts


def retrying(
    clock: IReactorTime,
    backoff: Backoff,
    attempt: Callable[[], Deferred[Any]],
    judge: Callable[[Any | Failure], Verdict],
    on_retry: Callable[[int, str, float], None] = lambda n, why, delay: None,
    rnd: Callable[[], float] = random.random,
) -> Deferred[Any]:
    """
    Run ``attempt`` until ``judge`` says it is done, retries run out, or the
    returned Deferred is cancelled (which also cancels the attempt in flight
    or the pending wait).

    :param on_retry: called with the retry number, why, and the delay chosen.
    """
    return _Retrying(clock, backoff, attempt, judge, on_retry, rnd).result


class _Retrying:
    def __init__(self, clock, backoff, attempt, judge, on_retry, rnd) -> None:
        self._clock = clock
        self._backoff = backoff
        self._attempt = attempt
        self._judge = judge
        self._on_retry = on_retry
        self._rnd = rnd
        self._tries = 0
        self._inflight: Deferred[Any] | None = None
        self._wait: IDelayedCall | None = None
        self._cancelled = False
        self.result: Deferred[Any] = Deferred(self._cancel)
        self._go()

    def _go(self) -> None:
        self._wait = None
        self._tries += 1
        d = self._inflight = self._attempt()
        d.addBoth(self._judged)

    def _judged(self, outcome: Any) -> None:
        self._inflight = None
        if self.result.called:
            return
        if isinstance(outcome, Failure) and outcome.check(CancelledError) and self._cancelled:
            return
        verdict = self._judge(outcome)
        if isinstance(verdict, Done):
            self.result.callback(verdict.value)
        elif isinstance(verdict, Final):
            self.result.errback(verdict.error)
        elif not self._backoff.allows(self._tries):
            self.result.errback(RetriesExhausted(verdict.why, self._tries))
        else:
            delay = self._backoff.delay(self._tries, self._rnd)
            if verdict.after is not None:
                delay = max(delay, min(verdict.after, MAX_RETRY_AFTER))
            self._on_retry(self._tries, verdict.why, delay)
            self._wait = self._clock.callLater(delay, self._go)

    def _cancel(self, _: Deferred[Any]) -> None:
        self._cancelled = True
        if self._wait is not None and self._wait.active():
            self._wait.cancel()
        if self._inflight is not None:
            self._inflight.cancel()
