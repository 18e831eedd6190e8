"""Tests for socketdock.relay.retry: backoff, verdicts and cancellation, on a Clock."""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socketdock.relay.retry import (
    MAX_RETRY_AFTER,
    Again,
    Backoff,
    Done,
    Final,
    RetriesExhausted,
    retrying,
)


def judge(outcome):
    if isinstance(outcome, Failure):
        return Again("error")
    if outcome == "ok":
        return Done("value")
    if outcome == "no":
        return Final(ValueError("refused"))
    if outcome.startswith("after:"):
        return Again("busy", float(outcome.split(":")[1]))
    return Again(outcome)


class Script:
    """Answers attempts from a list, recording when each was made."""

    def __init__(self, clock, answers):
        self.clock = clock
        self.answers = list(answers)
        self.times = []

    def __call__(self):
        self.times.append(self.clock.seconds())
        answer = self.answers.pop(0)
        if isinstance(answer, Deferred):
            return answer
        return fail(ConnectionRefusedError()) if answer == "refused" else succeed(answer)


class BackoffTests(SynchronousTestCase):
    def test_delays_double_and_cap(self) -> None:
        """Without jitter the delays are 0.1, 0.2, 0.4 … capped at 5 s."""
        b = Backoff(retries=10)
        delays = [b.delay(n, rnd=lambda: 1.0) for n in range(1, 10)]
        self.assertEqual(delays[:4], [0.1, 0.2, 0.4, 0.8])
        self.assertEqual(delays[-1], 5.0)

    def test_jitter_stays_between_half_and_full(self) -> None:
        """Jitter picks a delay in [half, full] of the exponential one."""
        b = Backoff(retries=3)
        self.assertEqual(b.delay(3, rnd=lambda: 0.0), 0.2)
        self.assertEqual(b.delay(3, rnd=lambda: 1.0), 0.4)

    def test_forever_allows_any_retry(self) -> None:
        """A notice backoff never runs out; a message backoff does."""
        self.assertTrue(Backoff(2, forever=True).allows(10_000))
        self.assertFalse(Backoff(2).allows(3))


class RetryingTests(SynchronousTestCase):
    def run_script(self, answers, retries=5):
        clock = Clock()
        script = Script(clock, answers)
        d = retrying(clock, Backoff(retries), script, judge, rnd=lambda: 1.0)
        return clock, script, d

    def test_success_first_time_makes_one_attempt(self) -> None:
        """A good first answer is the result; nothing is scheduled."""
        clock, _script, d = self.run_script(["ok"])
        self.assertEqual(self.successResultOf(d), "value")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_retries_with_backoff_until_success(self) -> None:
        """Failures are retried after 0.1, 0.2 s … and the eventual success wins."""
        clock, script, d = self.run_script(["refused", "HTTP 503", "ok"])
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertNoResult(d)
        clock.advance(0.2)
        self.assertEqual(self.successResultOf(d), "value")
        self.assertEqual(script.times, [0.0, 0.1, 0.30000000000000004])

    def test_final_is_not_retried(self) -> None:
        """A final verdict fails at once with its error."""
        _clock, script, d = self.run_script(["no", "ok"])
        self.failureResultOf(d, ValueError)
        self.assertEqual(len(script.times), 1)

    def test_exhausted_after_retries(self) -> None:
        """With 2 retries, the third failure gives up with RetriesExhausted."""
        clock, _script, d = self.run_script(["refused"] * 3, retries=2)
        clock.pump([1] * 5)
        failure = self.failureResultOf(d, RetriesExhausted)
        self.assertEqual(failure.value.attempts, 3)
        self.assertEqual(failure.value.why, "error")

    def test_retry_after_is_honoured_and_capped(self) -> None:
        """Retry-After lengthens the wait, but never past the cap."""
        clock, script, d = self.run_script(["after:3", "after:100000", "ok"])
        clock.advance(2.9)
        self.assertEqual(len(script.times), 1)
        clock.advance(0.1)
        self.assertEqual(len(script.times), 2)
        clock.advance(MAX_RETRY_AFTER - 0.01)
        self.assertEqual(len(script.times), 2)
        clock.advance(0.01)
        self.assertEqual(self.successResultOf(d), "value")

    def test_cancel_stops_the_wait(self) -> None:
        """Cancelling during a backoff wait leaves nothing scheduled."""
        clock, _script, d = self.run_script(["refused", "ok"])
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel_cancels_the_attempt_in_flight(self) -> None:
        """Cancelling during an attempt cancels that attempt's Deferred."""
        cancelled: list[object] = []
        inflight: Deferred = Deferred(cancelled.append)
        _clock, script, d = self.run_script([inflight])
        d.cancel()
        self.assertEqual(cancelled, [inflight])
        self.failureResultOf(d)
        self.assertEqual(len(script.times), 1)
