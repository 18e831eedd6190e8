"""Library chatter goes to debug; everything else passes as it was."""

from typing import Any

from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from socketdock.ops.chatter import DemoteChatter


class DemoteChatterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.seen: list[dict] = []
        observer: Any = self.seen.append  # a plain callable observes as well
        self.observer = DemoteChatter(observer)

    def test_factory_lines_demoted(self) -> None:
        event = {"log_level": LogLevel.info, "log_format": "Starting factory {factory!r}"}
        self.observer(event)
        self.assertEqual(self.seen[0]["log_level"], LogLevel.debug)
        self.assertEqual(event["log_level"], LogLevel.info)  # the original is not changed

    def test_others_and_warnings_untouched(self) -> None:
        ours = {"log_level": LogLevel.info, "log_format": "cluster: linked"}
        loud = {"log_level": LogLevel.warn, "log_format": "Starting factory {factory!r}"}
        self.observer(ours)
        self.observer(loud)
        self.assertEqual(self.seen, [ours, loud])
