"""
Tests for socketdock.ws.outbound: a slow reader's unsent bytes against its
own bound (twice max_message_size) and the instance's budget.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from socketdock.relay.budget import ByteBudget
from socketdock.relay.registry import BudgetFull, OutboundFull
from socketdock.ws.outbound import Outbound


class OutboundTests(SynchronousTestCase):
    def test_own_bound_is_twice_max_message_size(self) -> None:
        """Up to twice max_message_size may wait; one byte more is refused as OutboundFull."""
        outbound = Outbound(ByteBudget(), 100)
        self.assertIsNone(outbound.no_room(200))
        outbound.count(150)
        self.assertIsNone(outbound.no_room(50))
        refusal = outbound.no_room(51)
        self.assertIsInstance(refusal, OutboundFull)
        self.assertNotIsInstance(refusal, BudgetFull)

    def test_instance_budget(self) -> None:
        """Past the instance's budget the refusal is BudgetFull, whatever the connection's own room."""
        budget = ByteBudget(limit=100)
        first, second = Outbound(budget, 1000), Outbound(budget, 1000)
        first.count(80)
        self.assertEqual(budget.used, 80)
        self.assertIsNone(second.no_room(20))
        self.assertIsInstance(second.no_room(21), BudgetFull)

    def test_forget_gives_every_byte_back_once(self) -> None:
        """Once written, the bytes go back to the budget and the connection's count starts again."""
        budget = ByteBudget(limit=100)
        woken = []
        budget.when_room(lambda: woken.append(1))
        outbound = Outbound(budget, 1000)
        outbound.count(60)
        outbound.count(40)
        outbound.forget()
        outbound.forget()
        self.assertEqual((budget.used, outbound.unsent, woken), (0, 0, [1]))
        self.assertIsNone(outbound.no_room(100))
