"""
The package's layers, held by parsing every module's imports (function-local
ones included) with ``ast``.

Lowest first: ``config`` < ``ops`` < ``relay`` < ``cluster`` < {``ws``,
``api``} < the top-level modules (``tap``, ``assembly``, ``service``,
``tuning``), which alone wire layers together.  A module may import its own layer and the layers below it; ``ws``
and ``api`` are peers and do not import each other.  ``socketdock`` itself
(the package's ``__init__``: the version string) is importable from anywhere.

``tuned`` sits beside the stack: it may import only ``config`` and ``ops``
(or nothing of ours), and only the top-level modules may import it, so that
:mod:`socketdock.tuning` is the one seam where tuned pieces are chosen.

``relay`` is the domain: no Autobahn, and from twisted.web only what a treq
client's types need -- ``client``, ``http_headers``, ``iweb``, ``error``, and
from ``twisted.web.http`` the client-side ``PotentialDataLoss`` -- never the
server side (``server``, ``resource``, ``HTTPChannel``, ...).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = Path(__file__).resolve().parents[1] / "socketdock"

#: Rank of each layer; a module imports only lower ranks or its own layer.
RANKS = {"config": 0, "ops": 1, "relay": 2, "cluster": 3, "ws": 4, "api": 4, "top": 5}
#: What tuned/ may import of ours besides itself.
TUNED_MAY_IMPORT = {"config", "ops"}
#: twisted.web modules relay/ may import, and the names it may take from each (None: any).
RELAY_TWISTED_WEB: dict[str, set[str] | None] = {
    "twisted.web.client": None,
    "twisted.web.http_headers": None,
    "twisted.web.iweb": None,
    "twisted.web.error": None,
    "twisted.web.http": {"PotentialDataLoss"},
}


def layer_of(module: str) -> str | None:
    """``socketdock.relay.session`` -> ``relay``; top-level modules -> ``top``;
    the package itself -> None (importable from anywhere)."""
    parts = module.split(".")
    if parts[0] != "socketdock" or len(parts) == 1:
        return None
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "top"


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(
    module: str, source: str, is_package: bool = False
) -> Iterator[tuple[int, str, str | None]]:
    """
    Every ``(line, imported module, name or None)`` in ``source``, anywhere in
    it (functions included), relative imports resolved against ``module``.
    ``from a import b`` yields ``a.b`` when ``b`` is one of our subpackages or
    modules, else ``a`` with name ``b``.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if _is_our_module(candidate) or candidate in RELAY_TWISTED_WEB:
                    yield node.lineno, candidate, None
                else:
                    yield node.lineno, base, alias.name


def _is_our_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] != "socketdock":
        return False
    path = PACKAGE.joinpath(*parts[1:])
    return path.is_dir() or path.with_suffix(".py").is_file()


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """What in ``source`` (the text of ``module``) breaks the layering, one line each."""
    here = layer_of(module)
    found = []
    for line, target, name in imports(module, source, is_package):
        problem = _problem(here, target, name)
        if problem:
            shown = target + (f" ({name})" if name else "")
            found.append(f"{module}:{line} imports {shown}: {problem}")
    return found


def _problem(here: str | None, target: str, name: str | None) -> str | None:
    if here is None:
        return None
    there = layer_of(target)
    if here == "relay":
        if target == "autobahn" or target.startswith("autobahn."):
            return "relay/ never imports Autobahn"
        if target == "twisted.web" or target.startswith("twisted.web."):
            allowed = RELAY_TWISTED_WEB.get(target, set())
            if target not in RELAY_TWISTED_WEB or (allowed is not None and name not in allowed):
                return "relay/ takes from twisted.web only a treq client's types"
    if there is None or there == here:
        return None
    if there == "tuned":
        return None if here == "top" else "only top-level modules import tuned/ (socketdock.tuning)"
    if here == "tuned":
        return None if there in TUNED_MAY_IMPORT else "tuned/ imports only config/ and ops/"
    if RANKS[there] >= RANKS[here]:
        return f"{here}/ is below {there}/ (or its peer)"
    return None


def package_violations() -> list[str]:
    """Every violation in the installed tree's socketdock package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += violations(
            _module_name(path), path.read_text(encoding="utf-8"), path.name == "__init__.py"
        )
    return found


#: Modules whose tests live under another name than ``test_<module>.py`` beside
#: the package's layout: mostly end-to-end through the module above them.
TESTED_UNDER: dict[str, str] = {
    "api/auth.py": "api/test_security.py",
    "api/capped.py": "api/test_body_refusal.py",
    "api/confirm.py": "test_confirm_end_to_end.py",
    "api/listing.py": "test_listing_end_to_end.py",
    "api/resources.py": "api/test_web.py",
    "api/site.py": "api/test_web.py",
    "api/state.py": "test_state_end_to_end.py",
    "cluster/scripts.py": "cluster/test_roster.py",
    "cluster/wiring.py": "cluster/test_cluster.py",
    "config/cluster.py": "cluster/test_settings.py",
    "config/parse.py": "config/test_config.py",
    "config/settings.py": "config/test_config.py",
    "ops/jsonlog.py": "ops/test_logging.py",
    "ops/metrics.py": "api/test_operations.py",
    "ops/timestamps.py": "relay/test_backend.py",
    "relay/budget.py": "test_byte_bounds.py",
    "relay/localreach.py": "relay/test_tags.py",
    "relay/reach.py": "relay/test_tags.py",
    "relay/registry.py": "relay/test_tags.py",
    "relay/session.py": "relay/test_relay.py",
    "service.py": "test_service_exit.py",
    "tap.py": "test_tap_options.py",
    "tuned/autobahn.py": "ws/test_websocket_options.py",
    "tuned/h1client.py": "tuned/test_fastagent.py",
    "tuned/h1message.py": "tuned/test_fastagent.py",
    "tuned/treq.py": "tuned/test_treq_tuning.py",
    "ws/buffers.py": "test_release_on_close.py",
    "ws/factory.py": "ws/test_websocket_options.py",
    "ws/protocol.py": "ws/test_hardening.py",
    "ws/upgrade.py": "ws/test_hardening.py",
}


def untested_modules() -> list[str]:
    """
    Modules with a function or class of their own but neither a test module
    mirroring them (``tests/<layer>/test_<module>.py``) nor an entry in
    :data:`TESTED_UNDER` naming a test module that exists.
    """
    tests = PACKAGE.parent / "tests"
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if not any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in tree.body):
            continue
        mirror = tests / relative.parent / f"test_{relative.name}"
        elsewhere = TESTED_UNDER.get(relative.as_posix())
        if not mirror.is_file() and not (elsewhere and (tests / elsewhere).is_file()):
            missing.append(relative.as_posix())
    return missing


class PackageLayerTests(SynchronousTestCase):
    def test_every_module_with_logic_has_its_tests(self) -> None:
        """Tests mirror the package; the exceptions say where a module's tests are."""
        self.assertEqual(untested_modules(), [])

    def test_no_module_imports_above_its_layer(self) -> None:
        """No module of socketdock imports a higher layer, tuned/ from below the top, or a server module into relay/."""
        self.assertEqual(package_violations(), [])

    def test_every_subpackage_has_a_rank(self) -> None:
        """A new subpackage must be given its place here before it can pass."""
        subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
        self.assertEqual(subpackages, set(RANKS) - {"top"} | {"tuned"})


class CheckerTests(SynchronousTestCase):
    """The checker itself catches what it should, wherever the import is written."""

    def assertCaught(self, module: str, source: str, fragment: str) -> None:
        found = violations(module, source)
        self.assertEqual(len(found), 1, found)
        self.assertIn(fragment, found[0])

    def test_upward_import(self) -> None:
        self.assertCaught(
            "socketdock.config.preflight",
            "from socketdock.relay.journal import check_journal\n",
            "config/ is below relay/",
        )

    def test_function_local_import(self) -> None:
        self.assertCaught(
            "socketdock.relay.session",
            "def f():\n    import socketdock.ws.protocol\n",
            "relay/ is below ws/",
        )

    def test_relative_import(self) -> None:
        self.assertCaught(
            "socketdock.api.site",
            "from ..tuned import fastchannel\n",
            "only top-level modules import tuned/",
        )

    def test_peers(self) -> None:
        self.assertCaught(
            "socketdock.api.site",
            "from socketdock.ws import upgrade\n",
            "api/ is below ws/ (or its peer)",
        )

    def test_tuned_imports_only_config_and_ops(self) -> None:
        self.assertCaught(
            "socketdock.tuned.fastagent",
            "from socketdock.relay import httpclient\n",
            "tuned/ imports only config/ and ops/",
        )
        self.assertEqual(
            violations("socketdock.tuned.collector", "from socketdock.ops import metrics\n"), []
        )

    def test_relay_and_twisted_web(self) -> None:
        self.assertCaught(
            "socketdock.relay.backend",
            "from twisted.web.server import Site\n",
            "a treq client's types",
        )
        self.assertCaught(
            "socketdock.relay.backend",
            "from twisted.web.http import HTTPChannel\n",
            "a treq client's types",
        )
        self.assertCaught(
            "socketdock.relay.backend",
            "from twisted.web import resource\n",
            "a treq client's types",
        )
        self.assertCaught(
            "socketdock.relay.backend",
            "import autobahn.twisted.websocket\n",
            "never imports Autobahn",
        )
        self.assertEqual(
            violations(
                "socketdock.relay.httpclient",
                "from twisted.web.client import ResponseDone\n"
                "from twisted.web.http import PotentialDataLoss\n"
                "from twisted.web import http_headers\n",
            ),
            [],
        )

    def test_top_and_package_root(self) -> None:
        self.assertEqual(
            violations("socketdock.tap", "from socketdock.tuned.collector import tune_collector\n"),
            [],
        )
        self.assertEqual(
            violations("socketdock.relay.httpclient", "from socketdock import __version__\n"), []
        )
