"""Packaging for SocketDock: the package plus its twistd plugin."""

import re
from pathlib import Path

from setuptools import find_packages, setup

_HERE = Path(__file__).parent
_VERSION = re.search(
    r'^__version__ = "([^"]+)"', (_HERE / "socketdock" / "__init__.py").read_text(), re.M
).group(1)

setup(
    name="socketdock",
    version=_VERSION,
    description="A WebSocket relay for HTTP-only backends (Twisted/Autobahn)",
    long_description=(_HERE / "README.rst").read_text(),
    long_description_content_type="text/x-rst",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["socketdock", "socketdock.*"]) + ["twisted.plugins"],
    package_data={"twisted": ["plugins/socketdock_plugin.py"]},
    install_requires=[
        # Lower bounds are the versions .ci/oldest tests (socketdock/tuning.py's
        # TESTED starts there too).  Site(parsePOSTFormSubmission=) needs
        # Twisted 25.5, and twistd exits 0 after a usage error before 26.10;
        # HttpRequestParser.set_dangerous_leniencies needs httptools 0.6.3.
        "twisted[tls]>=26.10.0",
        "autobahn>=23.1.2",
        "treq>=23.11.0",
        "service-identity>=24.2.0",
        "attrs>=22.2.0",
        "prometheus-client>=0.17.0",
        "httptools>=0.6.3",
    ],
    extras_require={
        "test": ["hypothesis>=6.80", "cryptography>=41", "websockets>=13", "txredisapi>=1.6"],
        # Cluster mode (the cluster setting): a Twisted-native Redis client.
        "cluster": ["txredisapi>=1.6"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        # CI runs the suite on 3.10 (the oldest admitted), 3.11 and 3.13.
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP",
    ],
)
