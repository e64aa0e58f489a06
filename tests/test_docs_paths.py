"""Every file, folder and module the README and the docs name exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "platform" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
TOP_LEVEL = (
    "config",
    "tenants",
    "models_registry",
    "deployments",
    "templates",
    "tests",
    "bench",
    "docs",
    "platform",
    "static",
)
# Named to say it is not there: ``platform/`` is deliberately not a Python package.
ABSENT_ON_PURPOSE = {"platform/__init__.py"}
# File names that look like dotted module names.
NOT_MODULES = {"config.pbtxt"}
PATH = re.compile(r"`((?:" + "|".join(TOP_LEVEL) + r")/[\w./-]*)`")
MODULE = re.compile(r"`((?:config|tenants|models_registry|deployments)(?:\.\w+)+)`")


def _named(pattern: re.Pattern) -> dict[str, list[str]]:
    named: dict[str, list[str]] = {}
    for document in DOCUMENTS:
        for match in pattern.finditer(document.read_text()):
            named.setdefault(match.group(1), []).append(document.name)
    return named


def _module_or_attribute_exists(dotted: str) -> bool:
    parts = dotted.split(".")
    if len(parts) == 2 and parts[1][:1].isupper():  # a model as Django names it: app.Model
        from django.apps import apps

        try:
            apps.get_model(dotted)
        except LookupError:
            return False
        return True
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            if cut == len(parts):
                return True
            target = importlib.import_module(module)
            for attribute in parts[cut:]:
                if not hasattr(target, attribute):
                    return False
                target = getattr(target, attribute)
            return True
    return False


def test_every_path_the_docs_name_exists():
    missing = {
        path: where
        for path, where in _named(PATH).items()
        if path not in ABSENT_ON_PURPOSE and not (ROOT / path.rstrip("/")).exists()
    }
    assert missing == {}


def test_every_module_the_docs_name_exists():
    missing = {
        name: where
        for name, where in _named(MODULE).items()
        if name not in NOT_MODULES
        and not name.endswith(".py")  # a file named in a package's row, not a module path
        and not _module_or_attribute_exists(name)
    }
    assert missing == {}


def test_the_path_check_notices_a_missing_path():
    assert PATH.search("see `deployments/no_such_module.py`")
    assert not (ROOT / "deployments/no_such_module.py").exists()
    assert not _module_or_attribute_exists("deployments.no_such_module")
    assert _module_or_attribute_exists("deployments.backends.backend_for")
