"""
The bytes a client that stopped reading has not been sent yet.

The transport pauses the connection (its producer) when its write buffer
fills: from then on, what is written waits in memory for the client.  Those
bytes are bounded twice over, per connection (twice ``max_message_size``,
SPEC §4) and over the instance (``max_queued_bytes``, the
:class:`~socketdock.relay.budget.ByteBudget`), so that a client that does not
read is refused further sends (or closed, for pongs) instead of growing
without bound.  The count starts when the transport pauses and ends when it
resumes, having written them all.

Only a paused connection needs one (see
:meth:`~socketdock.ws.flow.FlowControl.pauseProducing`): the protocol
keeps the "paused" flag itself, since every send reads it.
"""

from __future__ import annotations

from socketdock.relay.budget import ByteBudget
from socketdock.relay.registry import BudgetFull, OutboundFull


class Outbound:
    """
    One connection's unsent bytes, against its bound and the instance's budget.

    :param max_message_size: the bound is twice this.
    """

    __slots__ = ("_budget", "_limit", "unsent")

    def __init__(self, budget: ByteBudget, max_message_size: int) -> None:
        self._budget = budget
        self._limit = 2 * max_message_size
        self.unsent = 0

    def no_room(self, nbytes: int) -> OutboundFull | None:
        """Why ``nbytes`` more may not wait for the client, or None."""
        if self.unsent + nbytes > self._limit:
            return OutboundFull()
        if not self._budget.room_for(nbytes):
            return BudgetFull()
        return None

    def count(self, nbytes: int) -> None:
        """``nbytes`` were written and wait for the client."""
        self.unsent += nbytes
        self._budget.take(nbytes)

    def forget(self) -> None:
        """The transport wrote them all (or the connection is gone): give them back."""
        unsent, self.unsent = self.unsent, 0
        if unsent:
            self._budget.give(unsent)
