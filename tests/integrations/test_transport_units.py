"""
The two transports' own unit tests, run with the rest of the suite:

- integrations/acapy's pure wire helpers (plain unittest, no ACA-Py needed),
  imported here from ``socketdock_acapy.test.test_wire``; its ACA-Py-bound
  tests (``socketdock_acapy.test.test_transport``, which skip where ACA-Py is
  not importable, as here) run in ACA-Py's own Python (.agents/acapy) as a
  child process;
- integrations/credo's wire helpers with Node's own test runner
  (``node --test integrations/credo/test/``), as a child process.
"""

import re
import sys

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.integrations.support import (
    ACAPY,
    ACAPY_INTEGRATION,
    CREDO_INTEGRATION,
    HERE,
    NODE,
    WatchedProcess,
    acapy_missing,
    within,
)

if str(ACAPY_INTEGRATION) not in sys.path:
    sys.path.insert(0, str(ACAPY_INTEGRATION))

# On sys.path only at run time (above), so mypy cannot follow it.
from socketdock_acapy.test.test_config import (  # type: ignore[import-not-found]  # noqa: F401
    ReadSettingsTests,
)
from socketdock_acapy.test.test_wire import (  # type: ignore[import-not-found]  # noqa: F401
    NoticeTests,
    OutcomeTests,
    SeqFilterTests,
    SignatureTests,
)


class CredoTransportUnitTests(TestCase):
    """``node --test`` over integrations/credo/test passes."""

    skip = None if NODE else "node is not installed"

    def test_node_test_runner(self):
        assert NODE is not None  # skipped otherwise
        process = WatchedProcess("node --test")
        argv = [NODE, "--test", str(CREDO_INTEGRATION / "test")]
        reactor.spawnProcess(
            process, NODE, argv, env={"PATH": "/usr/bin:/bin"}, path=str(CREDO_INTEGRATION)
        )
        self.addCleanup(process.stop)

        def check(ended):
            code, sig = ended
            self.assertEqual((code, sig), (0, None), process.text())
            self.assertIn("# fail 0", process.text())

        return within(reactor, 60, process.exited, "node --test", process).addCallback(check)


class CredoReadmeTests(TestCase):
    """integrations/credo/README.rst shows the block tests/integrations/agents.js runs."""

    def test_readme_block_is_what_the_tests_run(self):
        script = (HERE / "agents.js").read_text()
        found = re.search(r"  // README: begin[^\n]*\n(.*?)  // README: end\n", script, re.DOTALL)
        assert found is not None
        run = [line[2:] for line in found.group(1).rstrip("\n").split("\n")]
        readme = (CREDO_INTEGRATION / "README.rst").read_text()
        shown = readme.split("which a test holds to this block)::\n\n", 1)[1]
        lines = []
        for line in shown.split("\n"):
            if line and not line.startswith("    "):
                break
            lines.append(line[4:])
        self.assertEqual("\n".join(lines).strip("\n"), "\n".join(run).strip("\n"))


class ACApyTransportUnitTests(TestCase):
    """``socketdock_acapy.test.test_transport`` passes in ACA-Py's own Python."""

    skip = acapy_missing()

    def test_in_acapy_python(self):
        python = str(ACAPY.parent / "python")
        process = WatchedProcess("acapy unit tests")
        argv = [python, "-m", "unittest", "-v", "socketdock_acapy.test.test_transport"]
        reactor.spawnProcess(
            process,
            python,
            argv,
            env={"PYTHONPATH": str(ACAPY_INTEGRATION)},
            path=str(ACAPY_INTEGRATION),
        )
        self.addCleanup(process.stop)

        def check(ended):
            self.assertEqual(ended, (0, None), process.text())
            self.assertIn("\nOK", process.text())
            self.assertNotIn("skipped", process.text())

        return within(
            reactor, 60, process.exited, "the ACA-Py transport's unit tests", process
        ).addCallback(check)
