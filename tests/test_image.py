"""
The container image (``Containerfile``) works as built: its entrypoint, run
as the image's user with the image's environment and settings file, echoes
over a WebSocket, answers its own ``HEALTHCHECK``, drains on its
``STOPSIGNAL`` and exits 0.

Containers cannot run on these machines (the runtime refuses their cgroup
setup), so the test mounts the built image read-only (``podman image
mount``) and runs the entrypoint under ``chroot`` on loopback, as the
image's user: the same files, user, environment and command a runtime
would use, in this machine's network namespace.  ``.ci/image`` builds the
image (in the background in CI, which this test waits for) and says in
``.image/state`` which tag to test or why there is none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from socketdock.config.settings import load_config
from tests.daemon import TREE, Process, spawn, started, wait_for_exit
from tests.wsclient import connect_client

PODMAN = shutil.which("podman")
CHROOT = shutil.which("chroot") or shutil.which("chroot", path="/usr/sbin:/sbin")
IMAGE_DIR = TREE / ".image"
#: The settings file the entrypoint names, inside the image.
IMAGE_INI = "/etc/socketdock/socketdock.ini"


async def built_image(testcase: TestCase) -> str:
    """
    The tag ``.ci/image`` built, once it has finished (waiting for a run
    still under way); skips the test, saying why, when there is none.
    """
    if PODMAN is None:
        raise testcase.skipTest("podman is not installed (apt-get install podman buildah)")
    if os.geteuid() != 0:
        raise testcase.skipTest("mounting an image and chroot need root")
    building = IMAGE_DIR / "building"
    try:
        pid: int | None = int(building.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    if pid is not None:
        # .ci/image ends within its time limit (420 s), with a state or a crash.
        await wait_for_exit(reactor, pid)
    try:
        state = (IMAGE_DIR / "state").read_text().strip()
    except OSError:
        if pid is not None:
            raise AssertionError(
                f".ci/image (pid {pid}) ended without saying how; see .image/logs/"
            ) from None
        raise testcase.skipTest(
            "no image built: run 'bash .ci/image' (needs podman, buildah and debootstrap)"
        ) from None
    if not state.startswith("ok "):
        raise testcase.skipTest(f".ci/image: {state}")
    tag = state.split()[1]
    if _podman("image", "exists", tag, check=False).returncode != 0:
        raise testcase.skipTest(f"{tag} is gone from podman's storage; run 'bash .ci/image'")
    return tag


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert PODMAN is not None
    return subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=120, check=check)


def inspect(tag: str) -> dict[str, Any]:
    """``podman image inspect``: ``Config`` plus the docker-format ``Healthcheck``."""
    info = json.loads(_podman("image", "inspect", tag).stdout)[0]
    config = dict(info["Config"])
    config["Healthcheck"] = info.get("Healthcheck")
    return config


def mount(testcase: TestCase, tag: str) -> Path:
    """The image's files, read-only, until the test ends."""
    root = Path(_podman("image", "mount", tag).stdout.strip())
    testcase.addCleanup(_podman, "image", "unmount", tag, check=False)
    return root


def user_ids(config: dict[str, Any]) -> tuple[int, int]:
    """The image's ``USER`` as numbers (the Containerfile gives them so)."""
    user, _, group = config["User"].partition(":")
    return int(user), int(group or user)


def environ(config: dict[str, Any], **extra: str) -> dict[str, str]:
    """The image's ``ENV``, plus ``extra`` as a runtime's ``-e`` would add."""
    env = dict(line.split("=", 1) for line in config.get("Env") or [])
    env.update(extra)
    return env


def run_in(
    testcase: TestCase,
    root: Path,
    config: dict[str, Any],
    name: str,
    argv: list[str],
    env: dict[str, str],
) -> Process:
    """``argv`` in the image's files, as its user, from its working directory."""
    assert CHROOT is not None
    uid, gid = user_ids(config)
    workdir = config.get("WorkingDir") or "/"
    # chroot, then the working directory, then the command (exec'd: same pid).
    shell = 'cd "$1" && shift && exec "$@"'
    command = [CHROOT, f"--userspec={uid}:{gid}", "--groups=", str(root)]
    command += ["/bin/sh", "-c", shell, "sh", workdir, *argv]
    return spawn(testcase, reactor, name, command, env)


def process_uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uid of a running process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(n) for n in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


class ImageTests(TestCase):
    #: CI builds the image while the suite runs; the first test may wait for it
    #: (.ci/image's own limit is 420 s).
    timeout = 600

    async def _image(self) -> tuple[str, dict[str, Any]]:
        tag = await built_image(self)
        return tag, inspect(tag)

    def test_image_settings(self) -> Deferred[None]:
        """
        The image runs as a user other than root, stops by SIGTERM, checks its
        health with its own Python, starts twistd in the foreground on the
        shipped settings file, and drains in less than a runtime's 10 s.
        """

        async def run() -> None:
            tag, config = await self._image()
            uid, gid = user_ids(config)
            self.assertNotEqual(uid, 0)
            self.assertNotEqual(gid, 0)
            self.assertEqual(config.get("StopSignal"), "SIGTERM")
            health = config["Healthcheck"]["Test"]
            self.assertEqual(health[0], "CMD")
            self.assertIn("/healthz", health[-1])
            entry = config["Entrypoint"] + (config.get("Cmd") or [])
            self.assertEqual(entry[1:3], ["-n", "--pidfile="])
            self.assertIn("socketdock", entry)
            self.assertEqual(entry[-2:], ["--config", IMAGE_INI])
            root = mount(self, tag)
            # It loads as shipped: a wildcard bind with an explicit base URL.
            settings = load_config({}, {}, str(root / IMAGE_INI.lstrip("/")))
            self.assertEqual(settings.listen, "tcp:8765:interface=0.0.0.0")
            self.assertIsNotNone(settings.externalhostandport)
            self.assertLess(settings.shutdown_timeout, 10)

        return Deferred.fromCoroutine(run())

    def test_smoke(self) -> Deferred[None]:
        """
        The entrypoint, as the image's user with its environment (on loopback,
        port 0, by SOCKETDOCK_* as an operator overrides): the echo works, the
        HEALTHCHECK command passes, the process is not root, and SIGTERM closes
        the client with 1001 and exits 0 after the drain.
        """

        async def run() -> None:
            tag, config = await self._image()
            root = mount(self, tag)
            overrides = {"SOCKETDOCK_BINDIP": "127.0.0.1", "SOCKETDOCK_BINDPORT": "0"}
            entry = config["Entrypoint"] + (config.get("Cmd") or [])
            instance = run_in(self, root, config, "image", entry, environ(config, **overrides))
            port = await started(reactor, instance)
            assert instance.pid is not None
            uid, _ = user_ids(config)
            uids = process_uids(instance.pid)
            self.assertNotIn(0, uids, "the instance runs as root")
            self.assertEqual(uids, [uid] * 4)

            client = await connect_client(reactor, f"ws://127.0.0.1:{port}/ws")
            client.send_text("hello from the image")
            payload, is_binary = await client.next_message()
            self.assertEqual((payload, is_binary), (b"hello from the image", False))

            # The HEALTHCHECK command, as a runtime runs it: in the container,
            # with its environment (the port given as an operator would).
            check = config["Healthcheck"]["Test"][1:]
            env = environ(config, SOCKETDOCK_BINDPORT=str(port))
            probe = run_in(self, root, config, "healthcheck", check, env)
            self.assertEqual(await probe.exited, (0, None), probe.text())

            closing = client.closed
            instance.signal(config["StopSignal"].removeprefix("SIG"))
            _, code, _ = await closing
            self.assertEqual(code, 1001)
            self.assertEqual(await instance.exited, (0, None), instance.text())
            self.assertIn("drained", instance.text())

        return Deferred.fromCoroutine(run())

    def test_healthcheck_fails_without_a_listener(self) -> Deferred[None]:
        """The HEALTHCHECK command exits non-zero when nothing answers on the port."""

        async def run() -> None:
            import socket

            tag, config = await self._image()
            root = mount(self, tag)
            # A port bound here but not listening: nothing can answer on it.
            holder = socket.socket()
            self.addCleanup(holder.close)
            holder.bind(("127.0.0.1", 0))
            port = holder.getsockname()[1]
            check = config["Healthcheck"]["Test"][1:]
            env = environ(config, SOCKETDOCK_BINDPORT=str(port))
            probe = run_in(self, root, config, "healthcheck", check, env)
            code, _ = await probe.exited
            self.assertEqual(code, 1, probe.text())

        return Deferred.fromCoroutine(run())
