"""The package's shape, checked: the ledger's order (no cycle, no import inside a function), the hub process
loads nothing of the service, and every refusal the code raises has an HTTP status in the web layer."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import aifhub
from aifhub.service import statuses

PACKAGE = Path(aifhub.__file__).parent
# bottom to top: a module may import only those before it
LEDGER_ORDER = [
    "units",
    "windows",
    "models",
    "sessions",
    "balances",
    "allocations",
    "limits",
    "metering",
    "admission",
    "reports",
]


def _imports(path):
    """``(ledger modules imported at the top, imports made inside functions or classes)``."""
    tree = ast.parse(path.read_text())
    top = {
        node.module.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
    }
    nested = [
        ast.unparse(node)
        for outer in tree.body
        if not isinstance(outer, (ast.Import, ast.ImportFrom))
        for node in ast.walk(outer)
        if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    return top, nested


@pytest.mark.parametrize("name", [n for n in LEDGER_ORDER if (PACKAGE / "ledger" / f"{n}.py").exists()])
def test_the_ledger_builds_upwards(name):
    top, nested = _imports(PACKAGE / "ledger" / f"{name}.py")
    assert not nested, f"ledger/{name}.py imports inside a function: {nested}"
    below = set(LEDGER_ORDER[: LEDGER_ORDER.index(name)])
    assert top <= below, f"ledger/{name}.py imports {sorted(top - below)}, which sit above it"


def test_the_hub_process_loads_nothing_of_the_service():
    code = (
        "import sys, aifhub.hubside.local, aifhub.hubside.kube, aifhub.hubside.embedded, aifhub.hubside.z2jh\n"
        "import aifhub.hubside.slurm, aifhub.hubside.slurm.settings\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('aifhub', 'sqlalchemy', 'nbgrader'))))"
    )
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    # (JupyterHub itself uses SQLAlchemy for its own database)
    forbidden = {
        m
        for m in loaded
        if m.startswith(("aifhub.service", "aifhub.ledger", "aifhub.state", "aifhub.grading", "nbgrader"))
    }
    assert not forbidden, sorted(forbidden)


def _raised_reasons():
    """Every reason a ``Refusal("reason", ...)`` in aifhub's code names."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        found |= set(re.findall(r'Refusal\(\s*"([a-z0-9-]+)"', path.read_text()))
    return found


def test_every_refusal_reason_has_an_http_status():
    known = statuses.BAD_REQUEST | statuses.FORBIDDEN | statuses.NOT_FOUND | statuses.CONFLICT | set(statuses.OTHER)
    # access decisions and allocation states pass their reasons on as variables
    reasons = _raised_reasons() | {
        "not-enrolled",
        "not-started",
        "ended",
        "allocation-closed",
        "allocation-not-started",
        "allocation-expired",
    }
    assert len(reasons) > 20 and reasons <= known, sorted(reasons - known)


@pytest.mark.parametrize(
    "reason, status",
    [
        ("bad-hours", 400),
        ("quota", 403),
        ("not-enrolled", 403),
        ("unknown-course", 404),
        ("gpu-busy", 409),
        ("no-gpu", 503),
        ("something-new", 409),
    ],
)
def test_reasons_map_to_statuses_in_the_web_layer(reason, status):
    assert statuses.status_of(reason) == status


@pytest.mark.parametrize(
    "old, new, name",
    [
        ("aifhub.hubconfig", "aifhub.hubside.embedded", "configure"),
        ("aifhub.deploy.hubside", "aifhub.hubside.z2jh", "configure_z2jh"),
        ("aifhub.sandbox.local", "aifhub.hubside.local", "LocalSandboxSpawner"),
        ("aifhub.sandbox.kube", "aifhub.hubside.kube", "KubeSandboxSpawner"),
    ],
)
def test_old_spellings_users_have_in_their_configs_still_work(old, new, name):
    import importlib

    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)
