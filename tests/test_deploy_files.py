"""
The deployment files in etc/ stay valid: every sample INI loads, each instance
has its own ports and callback URL, HAProxy accepts its config, and the systemd
unit keeps the settings a relay needs.
"""

import configparser
import shutil
import subprocess
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from socketdock.config.settings import load_config

ETC = Path(__file__).resolve().parent.parent / "etc"
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


class DeployFilesTests(SynchronousTestCase):
    def test_instance_inis_load_and_differ(self):
        """Each etc/instance-*.ini loads and has its own listen, api_listen, externalhostandport and journal."""
        configs = [load_config({}, {}, str(p)) for p in sorted(ETC.glob("instance-*.ini"))]
        self.assertGreaterEqual(len(configs), 3)
        for key in ("listen", "api_listen", "externalhostandport", "journal"):
            values = [getattr(c, key) for c in configs]
            self.assertEqual(len(set(values)), len(values), key)
        for config in configs:
            self.assertEqual(config.backend, "http")
            self.assertIn(config.listen.split(":")[1], (ETC / "haproxy.cfg").read_text())

    def test_haproxy_config_is_valid(self):
        """haproxy -c accepts etc/haproxy.cfg, which health-checks /readyz and sets a tunnel timeout."""
        if HAPROXY is None:
            raise self.skipTest("haproxy is not installed (apt-get install haproxy)")
        text = (ETC / "haproxy.cfg").read_text()
        self.assertIn("option httpchk GET /readyz", text)
        self.assertIn("timeout tunnel", text)
        result = subprocess.run([HAPROXY, "-c", "-f", str(ETC / "haproxy.cfg")],
                                capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_systemd_unit(self):
        """The unit runs twistd in the foreground per %i INI, restarts on failure and outwaits the drain."""
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str
        unit.read(ETC / "socketdock@.service")
        service = unit["Service"]
        self.assertIn(" -n ", service["ExecStart"])
        self.assertIn("/etc/socketdock/%i.ini", service["ExecStart"])
        self.assertEqual(service["Restart"], "on-failure")
        self.assertEqual(service["KillSignal"], "SIGTERM")
        self.assertGreaterEqual(int(service["LimitNOFILE"]), 65536)
        longest_drain = max(load_config({}, {}, str(p)).shutdown_timeout
                            for p in ETC.glob("instance-*.ini"))
        self.assertGreater(int(service["TimeoutStopSec"]), longest_drain)
