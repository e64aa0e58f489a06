"""The README's promises: two quick-start commands, CI running the same test command, and a
configuration table that lists every variable the settings read."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quick_start_has_exactly_two_commands():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)
    run, test = commands
    assert "manage.py up" in run and "pip install" in run
    assert "pytest" in test and "'.[dev]'" in test


def test_ci_runs_the_readmes_test_command_verbatim():
    ci = (REPO / ".ci" / "run").read_text()
    assert quick_start_commands()[1] in ci.splitlines()


def test_every_environment_variable_the_settings_read_is_documented():
    settings_source = (REPO / "config" / "settings.py").read_text()
    read = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z_]+)"', settings_source))
    assert {"DATABASE_URL", "CELERY_BROKER_URL", "ARTIFACT_STORE", "SECRET_KEY"} <= read
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.M))
    assert read <= documented, f"undocumented: {sorted(read - documented)}"


def test_linked_documents_exist():
    for target in re.findall(r"\]\(([^)#]+\.md)\)", README):
        assert (REPO / target).exists(), target


def named_paths(text: str) -> set[str]:
    """The repository paths a piece of documentation names in backticks."""
    tops = ("config/", "tenants/", "models_registry/", "deployments/", "tests/", "bench/")
    return {
        name
        for name in re.findall(r"`([\w./*-]+)`", text)
        if name.startswith(tops) or name in ("manage.py", "docker-compose.yml")
    }


def test_every_path_the_layout_table_names_exists():
    table = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    paths = named_paths(table)
    assert "models_registry/services/" in paths
    missing = [path for path in sorted(paths) if not list(REPO.glob(path.rstrip("/")))]
    assert missing == []


def test_every_path_the_training_architecture_names_exists():
    architecture = (REPO / "docs" / "architecture.md").read_text()
    section = architecture.split("## Training", 1)[1].split("\n## ", 1)[0]
    paths = named_paths(section)
    assert "models_registry/training/backends/base.py" in paths
    missing = [path for path in sorted(paths) if not (REPO / path).exists()]
    assert missing == []
