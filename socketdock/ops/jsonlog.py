"""
JSON lines for log shippers, as a twistd ``--logger`` factory::

    twistd --logger socketdock.ops.jsonlog.json_observer \\
        --logfile /var/log/socketdock/a.log socketdock --config a.ini

twistd calls the factory with no arguments, so it cannot hand over its own
``--logfile``; :func:`json_observer` reads twistd's options from the command
line the same way twistd does (getopt up to the subcommand) and then picks the
destination twistd would pick for its text log: ``--logfile -`` or ``-n``
without ``--logfile`` is stdout, otherwise the named file (``twistd.log`` when
daemonised without one), rotated at 1 MB and on ``SIGUSR1`` exactly as twistd
rotates its text log.

Each line is one JSON object: ``time`` (RFC 3339 UTC), ``level``,
``namespace``, ``text`` (the rendered message), every named field of the
event that is not private to twisted.logger, and ``failure`` (a traceback)
when there is one.
"""

from __future__ import annotations

import getopt
import json
import signal
import sys
from collections.abc import Sequence
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogBeginner,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
)
from twisted.python.logfile import LogFile

from socketdock.ops.chatter import DemoteChatter
from socketdock.ops.logmode import keep_log_file_mode
from socketdock.ops.timestamps import rfc3339

__all__ = ["event_as_json_line", "json_file_observer", "json_observer", "log_from_level"]

#: Keys of events from twisted.python.log, repeated in ``text`` or ``time``.
_LEGACY = frozenset({"format", "message", "isError", "system", "time", "failure"})


def event_as_json_line(event: dict) -> str | None:
    """One event as one JSON line (``None`` drops it, as FileLogObserver wants)."""
    log_time = event.get("log_time")
    record: dict[str, Any] = {
        "time": None if log_time is None else rfc3339(log_time),
        "level": getattr(event.get("log_level"), "name", None),
        "namespace": event.get("log_namespace"),
        "text": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in record or key in _LEGACY:
            continue
        record[key] = value if _plain(value) else repr(value)
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False, default=repr) + "\n"


def json_file_observer(out: IO[Any]) -> ILogObserver:
    """An observer writing JSON lines to ``out`` (a text file or a LogFile)."""
    return FileLogObserver(out, event_as_json_line)


def json_observer(argv: Sequence[str] | None = None) -> ILogObserver:
    """
    The ``--logger`` factory: JSON lines where twistd would put its text log.

    :param argv: twistd's arguments (default ``sys.argv[1:]``); for tests.
    """
    nodaemon, logfile = _twistd_log_options(sys.argv[1:] if argv is None else argv)
    if logfile == "-" or (nodaemon and not logfile):
        return json_file_observer(sys.stdout)
    path = logfile or "twistd.log"
    # Made now, before twistd sets its umask: LogFile gives the files a
    # rotation makes the mode of an existing one, so later files get this
    # one's mode rather than 0600.
    open(path, "a").close()
    log_file = LogFile.fromFullPath(path)
    _rotate_on_sigusr1(log_file)
    return json_file_observer(log_file)


def log_from_level(level: str, beginner: LogBeginner, argv: Sequence[str] | None = None) -> None:
    """
    Drop events below ``level`` (a ``LogLevel`` name) from whatever log
    twistd is about to start: text, syslog or a ``--logger`` factory's.

    twistd has no log level of its own and writes debug events too.
    Library chatter (:mod:`socketdock.ops.chatter`) counts as debug.  twistd
    starts logging after ``makeService``, through ``beginner`` (the global
    ``LogBeginner``), so each observer it hands over is wrapped in a level
    filter on the way in; events buffered before that are filtered as they
    are replayed.

    :param argv: twistd's arguments; given, twistd's own text ``--logfile``
        keeps the mode of its first file across rotations.
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    begin = beginner.beginLoggingTo
    text_log = _text_log_file(argv) if argv is not None else None

    def begin_filtered(observers, *args, **kwargs):
        if text_log is not None:
            # twistd opened it just now; rotations keep its mode (ops.logmode).
            observers = [keep_log_file_mode(observer, text_log) for observer in observers]
        # Library chatter is demoted to debug first (socketdock.ops.chatter).
        filtered = [
            DemoteChatter(FilteringLogObserver(observer, [predicate])) for observer in observers
        ]
        return begin(filtered, *args, **kwargs)

    beginner.beginLoggingTo = begin_filtered  # type: ignore[method-assign]


def _text_log_file(argv: Sequence[str]) -> str | None:
    """The file twistd writes its own text log to, or None (stdout, syslog, --logger)."""
    nodaemon, logfile = _twistd_log_options(argv)
    if logfile == "-" or (nodaemon and not logfile) or _has_option(argv, "--logger", "--syslog"):
        return None
    return logfile or "twistd.log"


def _has_option(argv: Sequence[str], *names: str) -> bool:
    from twisted.scripts.twistd import ServerOptions

    spec = ServerOptions()
    try:
        opts, _ = getopt.getopt(list(argv), spec.shortOpt, spec.longOpt)
    except getopt.GetoptError:
        return False
    return any(name in names for name, _ in opts)


def _twistd_log_options(argv: Sequence[str]) -> tuple[bool, str | None]:
    """``(--nodaemon given, --logfile value)`` parsed as twistd parses them."""
    from twisted.scripts.twistd import ServerOptions

    spec = ServerOptions()
    try:
        # Plain getopt stops at the first non-option, the subcommand, as
        # usage.Options does; its options are not ours to read.
        opts, _ = getopt.getopt(list(argv), spec.shortOpt, spec.longOpt)
    except getopt.GetoptError:
        return False, None
    nodaemon, logfile = False, None
    for name, value in opts:
        if name in ("-n", "--nodaemon"):
            nodaemon = True
        elif name in ("-l", "--logfile"):
            logfile = value
    return nodaemon, logfile


def _rotate_on_sigusr1(log_file: LogFile) -> None:
    """What twistd does for its own log file, which it skips under --logger."""

    def rotate(signum: int, frame: Any) -> None:
        from twisted.internet import reactor

        reactor.callFromThread(log_file.rotate)  # type: ignore[attr-defined]

    if not signal.getsignal(signal.SIGUSR1):
        signal.signal(signal.SIGUSR1, rotate)


def _plain(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))
