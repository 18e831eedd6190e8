"""
The real daemon (SPEC §1, §6): ``twistd -n socketdock`` as a child process,
started from the README's command, refusing a bad setting, and stopped with
SIGTERM while clients are connected and the backend is healthy, stalled or dead.
"""

import os
import signal
import socket
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.daemon import (
    TREE,
    TWISTD,
    child_environ,
    get,
    listening_port,
    spawn,
    spawn_socketdock,
    started,
    wait_for_exit,
    wait_for_file,
    wait_for_removal,
)
from tests.fakebackend import STALL, Answer, FakeBackend, start_backend, stop_backend
from tests.harness import refused_port
from tests.test_reliability import folded
from tests.wsclient import HandshakeRefused, connect_client


class DaemonCase(TestCase):
    """Starts a FakeBackend and, per test, one twistd child; both are cleaned up."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):  # type: ignore[override]  # trial waits on a Deferred from setUp
        self.backend = FakeBackend(reactor)
        port, self.url = yield start_backend(reactor, self.backend)
        self.addCleanup(stop_backend, port, self.backend)

    @inlineCallbacks
    def daemon(self, *args, wait=True, env=None, bindport=0):
        """
        Start one instance on ``bindport`` (0: the OS picks, and :attr:`port` is
        learned from its log once it listens, with ``wait``).
        """
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        self.pidfile = os.path.join(workdir, "twistd.pid")
        proc = spawn_socketdock(
            self,
            reactor,
            "--bindport",
            str(bindport),
            *args,
            twistd_args=("-n", "--pidfile", self.pidfile),
            path=workdir,
            env=env,
        )
        if wait:
            self.port = yield Deferred.fromCoroutine(started(reactor, proc))
        return proc

    @inlineCallbacks
    def exit_code(self, proc):
        """The exit status; a death by signal fails the test."""
        code, sig = yield proc.exited
        self.assertIsNone(sig, f"killed by signal {sig}")
        return code

    @inlineCallbacks
    def log_line(self, proc, text):
        """The first output line holding ``text``, once it appears."""
        yield proc.wait_for(text)
        return next(line for line in proc.text().splitlines() if text in line)

    def http_daemon(self, *args, messageuri=None, disconnecturi=None):
        return self.daemon(
            "--backend",
            "http",
            "--ping-interval",
            "0",
            "--messageuri",
            messageuri or self.url + "/message",
            "--disconnecturi",
            disconnecturi or self.url + "/disconnect",
            *args,
        )

    @inlineCallbacks
    def client(self):
        client = yield connect_client(reactor, f"ws://127.0.0.1:{self.port}/ws")
        self.addCleanup(client.shutdown)
        return client


class StartTests(DaemonCase):
    @inlineCallbacks
    def test_readme_command_echoes(self):
        """twistd -n socketdock --config etc/socketdock.ini runs the loopback relay, which echoes."""
        proc = yield self.daemon("--config", str(TREE / "etc" / "socketdock.ini"))
        client = yield self.client()
        client.send_text("hello")
        self.assertEqual((yield client.next_message()), (b"hello", False))
        proc.signal("TERM")
        _, code, _ = yield client.closed
        self.assertEqual(code, 1001)
        self.assertEqual((yield self.exit_code(proc)), 0)
        self.assertFalse(os.path.exists(self.pidfile))

    @inlineCallbacks
    def refused(self, *args, bindport=0):
        """The one stderr line of a start-up that must fail; nothing on stdout, exit 1."""
        proc = yield self.daemon(*args, wait=False, bindport=bindport)
        self.assertEqual((yield self.exit_code(proc)), 1)
        self.assertEqual(proc.output, proc.errors, "nothing on stdout")
        lines = proc.errors.decode("utf-8").splitlines()
        self.assertEqual(len(lines), 1, proc.text())
        return lines[0]

    @inlineCallbacks
    def test_bad_setting_is_one_line(self):
        """--bindport abc: exit 1 and exactly the README's line on stderr, no usage, no traceback."""
        line = yield self.refused("--bindport", "abc")
        self.assertEqual(
            line,
            "twistd socketdock: bindport: 'abc' is not a port number; "
            "use an integer from 0 to 65535",
        )

    @inlineCallbacks
    def test_port_clash_is_one_line_naming_bindport(self):
        """A bindport in use: one line naming bindport (the key set), not listen."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = yield self.refused(bindport=port)
        self.assertTrue(
            line.startswith(f"twistd socketdock: bindport: cannot listen on 127.0.0.1:{port} "),
            line,
        )

    @inlineCallbacks
    def test_unknown_option_is_one_line(self):
        """A misspelt option: one line naming it and the closest option."""
        line = yield self.refused("--bind-prot", "1")
        self.assertEqual(
            line, "twistd socketdock: --bind-prot: unknown option; did you mean --bindport?"
        )

    @inlineCallbacks
    def test_unknown_environment_variable_warns_and_starts(self):
        """SOCKETDOCK_BINDPROT is named in one warning line on stderr, and start-up goes on."""
        proc = yield self.daemon(env={"SOCKETDOCK_BINDPROT": "1"})
        warnings = [
            line
            for line in proc.errors.decode("utf-8").splitlines()
            if "SOCKETDOCK_BINDPROT" in line
        ]
        self.assertEqual(
            warnings,
            [
                (
                    "twistd socketdock: warning: SOCKETDOCK_BINDPROT: not a setting, ignored; "
                    "did you mean SOCKETDOCK_BINDPORT (bindport)?"
                )
            ],
        )
        proc.signal("TERM")
        self.assertEqual((yield self.exit_code(proc)), 0)


class DrainTests(DaemonCase):
    @inlineCallbacks
    def test_sigterm_with_healthy_backend_delivers_everything(self):
        """SIGTERM: 1001 to all, readyz and handshakes 503, queued messages and every notice delivered, exit 0."""
        proc = yield self.http_daemon("--shutdown-timeout", "10")
        self.backend.answer_next("message", STALL)
        a = yield self.client()
        a.send_text("a1")
        yield self.backend.wait_for("message", 1)
        a.send_text("a2")
        yield a.ping()  # a2 is queued behind the stalled a1
        others = [(yield self.client()), (yield self.client())]
        for i, client in enumerate(others):
            client.send_text(f"x{i}")
        yield self.backend.wait_for("message", 3)

        proc.signal("TERM")
        closes = yield gatherResults([c.closed for c in [a, *others]])
        self.assertEqual([code for _, code, _ in closes], [1001] * 3)
        code, _, _ = yield self.backend.request("GET", f"http://127.0.0.1:{self.port}/readyz")
        self.assertEqual(code, 503)
        refused = yield self.assertFailure(
            connect_client(reactor, f"ws://127.0.0.1:{self.port}/ws"), HandshakeRefused
        )
        self.assertEqual(refused.status, 503)

        self.backend.release(self.backend.stalled[0], Answer())
        notices = yield self.backend.wait_for("disconnect", 3)
        self.assertEqual((yield self.exit_code(proc)), 0)
        self.assertFalse(os.path.exists(self.pidfile))
        self.assertEqual(
            {(n["meta"]["code"], n["meta"]["initiator"]) for n in notices}, {(1001, "server")}
        )
        by_connection: dict[str, list[Any]] = {}
        for m in self.backend.messages:
            by_connection.setdefault(m["meta"]["connection_id"], []).append(m)
        self.assertEqual(set(by_connection), {n["connection_id"] for n in notices})
        a_id = self.backend.messages[0]["meta"]["connection_id"]
        # Started on port 0, it names the port it bound in its callback URLs.
        self.assertEqual(
            self.backend.messages[0]["meta"]["send"],
            f"http://127.0.0.1:{self.port}/socket/{a_id}/send",
        )
        self.assertEqual(folded(self, by_connection[a_id]), [(1, "a1"), (2, "a2")])
        yield proc.wait_for("every queued message and notice delivered")

    @inlineCallbacks
    def test_sigterm_with_dead_backend_exits_at_the_timeout(self):
        """With the backend gone, a stop exits 0 right after shutdown_timeout and logs the notices lost."""
        dead = f"http://127.0.0.1:{refused_port(self)}"
        proc = yield self.http_daemon(
            "--shutdown-timeout",
            "1.5",
            "--backend-timeout",
            "0.5",
            messageuri=dead + "/message",
            disconnecturi=dead + "/disconnect",
        )
        clients = [(yield self.client()), (yield self.client())]
        stopped_at = reactor.seconds()
        proc.signal("TERM")
        closes = yield gatherResults([c.closed for c in clients])
        self.assertEqual([code for _, code, _ in closes], [1001, 1001])
        self.assertEqual((yield self.exit_code(proc)), 0)
        # It waited for the timeout (a lower bound a busy machine cannot
        # break); that it then stopped waiting, rather than exiting on its own
        # time, is in the log line below (no upper wall-clock bound).
        self.assertGreaterEqual(reactor.seconds() - stopped_at, 1.4)
        self.assertFalse(os.path.exists(self.pidfile))
        line = yield self.log_line(proc, "undelivered")
        self.assertIn("2 disconnect notices", line)

    @inlineCallbacks
    def test_sigterm_with_stalled_backend_exits_at_the_timeout(self):
        """A message the backend never answers holds its notice; the stop still ends at shutdown_timeout."""
        proc = yield self.http_daemon("--shutdown-timeout", "1.5", "--backend-timeout", "30")
        self.backend.answer_next("message", STALL)
        client = yield self.client()
        client.send_text("never answered")
        yield self.backend.wait_for("message", 1)
        stopped_at = reactor.seconds()
        proc.signal("TERM")
        self.assertEqual((yield self.exit_code(proc)), 0)
        # It waited for the timeout (a lower bound a busy machine cannot
        # break); that it then stopped waiting, rather than exiting on its own
        # time, is in the log line below (no upper wall-clock bound).
        self.assertGreaterEqual(reactor.seconds() - stopped_at, 1.4)
        self.assertEqual(self.backend.disconnects, [])
        line = yield self.log_line(proc, "undelivered")
        self.assertIn("1 disconnect notices", line)


#: twistd, with an exit handler registered before twistd runs, so that it runs
#: last: it stands for the interpreter's teardown after the main program, which
#: frees every object one by one (0.5 s after a stop with 8,000 connections).
#: It leaves a mark if the process gets that far.
_TWISTD_MARKING_TEARDOWN = [
    TWISTD[0],
    "-c",
    "import atexit, os\n"
    "def teardown():\n"
    "    with open(os.environ['TEARDOWN_MARK'], 'a') as f:\n"
    "        f.write('%d tore down\\n' % os.getpid())\n"
    "atexit.register(teardown)\n"
    "from twisted.scripts.twistd import run; run()\n",
]


class DaemonizedTests(TestCase):
    """twistd without -n: it forks, writes a pidfile, and must remove it last."""

    timeout = 60

    @inlineCallbacks
    def test_pidfile_goes_only_as_the_process_exits(self):
        """
        After a drained stop the pidfile is removed, and nothing but the exit
        follows: no interpreter teardown runs after it (a supervisor waiting
        on the pidfile would otherwise start a second copy over this one).
        """
        workdir = Path(os.path.abspath(self.mktemp()))
        workdir.mkdir()
        pidfile, logfile, mark = workdir / "twistd.pid", workdir / "twistd.log", workdir / "mark"
        launcher = spawn(
            self,
            reactor,
            "twistd",
            [
                *_TWISTD_MARKING_TEARDOWN,
                "--pidfile",
                str(pidfile),
                "--logfile",
                str(logfile),
                "socketdock",
                "--bindip",
                "127.0.0.1",
                "--bindport",
                "0",
            ],
            env=child_environ({"TEARDOWN_MARK": str(mark)}),
            path=str(workdir),
        )
        # The launcher exits 0 once the daemon wrote its pidfile and started its services.
        self.assertEqual((yield launcher.exited), (0, None))
        pid = int(pidfile.read_text())
        exited = wait_for_exit(reactor, pid)
        self.addCleanup(lambda: exited if _kill(pid) else None)
        yield wait_for_file(self, reactor, logfile, "listen: listening on")
        port = listening_port(logfile.read_text())
        status, _ = yield get(reactor, f"http://127.0.0.1:{port}/healthz")
        self.assertEqual(status, 200)
        client = yield connect_client(reactor, f"ws://127.0.0.1:{port}/ws")
        self.addCleanup(client.shutdown)

        removed = wait_for_removal(self, reactor, pidfile)
        os.kill(pid, signal.SIGTERM)
        yield removed
        # By then the drain is over: the client was closed and its notice sent.
        self.assertIn(b"drained: every queued message and notice delivered", logfile.read_bytes())
        _, code, _ = yield client.closed
        self.assertEqual(code, 1001)
        yield exited
        self.assertFalse(mark.exists(), mark.read_text() if mark.exists() else "")
        self.assertIn(b"Server Shut Down.", logfile.read_bytes())


def _kill(pid: int) -> bool:
    """SIGKILL ``pid`` if it still runs; whether it did."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True
