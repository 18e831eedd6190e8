"""
A log file rotated by twistd keeps the mode of the first one.

twistd creates ``--logfile``, when it does not exist yet, before it sets its
umask (``077`` when it daemonises); Twisted's ``LogFile`` gives later files
the first one's mode only when that one existed before, so every file a
rotation makes -- at 1 MB, or on ``SIGUSR1`` -- is ``0600``, and a log shipper
running as another user loses it.  twistd's ``LogFile`` is its own, so the
mode is put back from outside: right after a ``SIGUSR1`` rotation, and after
any line that finds the file changed (a rotation at 1 MB happens while a
line is written).
"""

from __future__ import annotations

import os
import signal
import stat
from typing import Any

from twisted.logger import ILogObserver
from zope.interface import implementer

__all__ = ["KeepLogFileMode", "keep_log_file_mode"]


@implementer(ILogObserver)
class KeepLogFileMode:
    """
    Passes events on to ``observer``, then gives ``path`` back ``mode`` if a
    rotation replaced it with a file of another mode.
    """

    def __init__(self, observer: ILogObserver, path: str, mode: int) -> None:
        self._observer = observer
        self._path = path
        self._mode = mode

    def __call__(self, event: dict) -> None:
        self._observer(event)
        self.restore()

    def restore(self) -> None:
        """Put the mode back if it changed (a new file); quietly, if it cannot."""
        try:
            if stat.S_IMODE(os.stat(self._path).st_mode) != self._mode:
                os.chmod(self._path, self._mode)
        except OSError:
            pass


def keep_log_file_mode(observer: ILogObserver, path: str) -> ILogObserver:
    """
    ``observer`` wrapped so that ``path`` (twistd's open log file) keeps its
    mode across rotations; ``observer`` itself when there is no such file.
    Also restores it right after a ``SIGUSR1`` rotation, after the handler
    twistd installed.
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return observer
    keeper = KeepLogFileMode(observer, os.path.abspath(path), mode)
    rotate = signal.getsignal(signal.SIGUSR1)
    if callable(rotate):

        def rotate_then_restore(signum: int, frame: Any) -> None:
            from twisted.internet import reactor

            rotate(signum, frame)  # twistd's: schedules the rotation on the reactor
            reactor.callFromThread(keeper.restore)  # type: ignore[attr-defined]  # runs after it

        signal.signal(signal.SIGUSR1, rotate_then_restore)
    return keeper
