"""A rotated log file gets the first one's mode back."""

import os
import stat
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from socketdock.ops.logmode import KeepLogFileMode, keep_log_file_mode


class KeepLogFileModeTests(SynchronousTestCase):
    def test_mode_put_back_after_a_line(self) -> None:
        path = self.mktemp()
        with open(path, "w"):
            pass
        os.chmod(path, 0o640)
        seen: list[dict] = []
        observer: Any = seen.append  # a plain callable observes as well
        keeper = KeepLogFileMode(observer, path, 0o640)
        os.chmod(path, 0o600)  # what a rotation under umask 077 leaves
        keeper({"n": 1})
        self.assertEqual(seen, [{"n": 1}])
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o640)

    def test_missing_file_is_quiet(self) -> None:
        observer: Any = print
        KeepLogFileMode(observer, self.mktemp(), 0o640).restore()

    def test_no_file_no_wrapper(self) -> None:
        observer: Any = print
        self.assertIs(keep_log_file_mode(observer, self.mktemp()), observer)
