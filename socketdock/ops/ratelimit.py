"""
Say a repeated thing once per source and window.

A caller with a wrong token may retry many times a second; a warn line for
each would bury the log and cost as much as the request.  The first one is
logged, the rest within the window only counted, and the next line after the
window says how many were held back.
"""

from __future__ import annotations

from collections.abc import Hashable

from twisted.internet.interfaces import IReactorTime

__all__ = ["OncePerWindow"]


class OncePerWindow:
    """
    Decides which occurrences of a repeated event get a log line.

    :param clock: where the time comes from (the reactor).
    :param window: seconds during which a source is logged once.
    :param sources: most sources remembered at once; past that the oldest is
        forgotten (so a flood from many addresses costs bounded memory and
        at worst logs one line too many).
    """

    def __init__(self, clock: IReactorTime, window: float = 60.0, sources: int = 4096) -> None:
        self._clock = clock
        self._window = window
        self._max = sources
        # source -> [window start, occurrences held back]; in order of window
        # start, as a source whose window restarts is moved to the end.
        self._seen: dict[Hashable, list] = {}
        # source -> occurrences held back in a window that has ended, until
        # the source is next seen (bounded like the windows).
        self._held: dict[Hashable, int] = {}

    def occurred(self, source: Hashable) -> int | None:
        """
        One occurrence from ``source``.

        :returns: None when it is to be held back; otherwise it is to be
            logged, and the number is how many were held back since the last
            line about this source.
        """
        now = self._clock.seconds()
        self._forget_before(now - self._window)
        entry = self._seen.get(source)
        if entry is not None:
            entry[1] += 1
            return None
        held = self._held.pop(source, 0)
        self._seen[source] = [now, 0]
        if len(self._seen) > self._max:
            oldest = next(iter(self._seen))
            del self._seen[oldest]
        return held

    def _forget_before(self, cutoff: float) -> None:
        while self._seen:
            source, (start, held) = next(iter(self._seen.items()))
            if start > cutoff:
                return
            del self._seen[source]
            if held:
                self._held[source] = held
                if len(self._held) > self._max:
                    del self._held[next(iter(self._held))]
