"""One training "instance" of the stand-in: the ``/opt/ml`` a SageMaker training container sees,
the environment the sagemaker-training toolkit gives the script, and the script's process.

Each host (``algo-1`` ... ``algo-N``) is a directory laid out as ``/opt/ml`` (``code/``,
``input/config/{hyperparameters,inputdataconfig,resourceconfig}.json``, ``input/data/<channel>/``,
``model/``, ``output/data/``, ``output/failure``) and one process: ``sagemaker_program`` run from
the unpacked ``sagemaker_submit_directory`` with the command line and ``SM_*`` variables the
toolkit (aws/sagemaker-training-toolkit, ``environment.py`` and ``mapping.py``) builds, in its
own process group, so stopping the host ends everything the script started, as the end of a
container does. The stand-in's own Python stands in for the training image's: it is the
project's, so the platform's sourcedir finds what its ``requirements.txt`` names without an
install. Pure of moto and HTTP: the job runner feeds it files and reads back what it left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "HostLayout",
    "HostProcess",
    "UnsupportedProgram",
    "container_environment",
    "decode_hyperparameters",
    "final_metrics",
    "host_names",
    "input_data_config",
    "log_tail",
    "pack_directories",
    "resource_config",
    "script_failure_reason",
    "user_args",
]

NETWORK_INTERFACE = "eth0"
INSTANCE_GROUP = "homogeneousCluster"
SAGEMAKER_PREFIX = "sagemaker_"
# SageMaker returns the first 1,024 characters of the failure file as FailureReason.
FAILURE_REASON_CHARS = 1024
# The few variables a container's environment shares with the machine it runs on; everything
# else (the stand-in's own settings, credentials, Django) stays out, as it would in a container.
_PASSED_THROUGH = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
_ERROR_LINES = 5


class UnsupportedProgram(Exception):
    """The entry point is not one the stand-in can run (the message says why)."""


def host_names(count: int) -> list[str]:
    """``algo-1`` ... ``algo-N`` sorted as strings, as ``resourceconfig.json`` lists them."""
    return sorted(f"algo-{index}" for index in range(1, count + 1))


@dataclass(frozen=True)
class HostLayout:
    """Where one host's ``/opt/ml`` lives on this machine."""

    root: Path

    @property
    def code_dir(self) -> Path:
        return self.root / "code"

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    @property
    def data_dir(self) -> Path:
        return self.root / "input" / "data"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.root / "output" / "data"

    @property
    def intermediate_dir(self) -> Path:
        return self.root / "output" / "intermediate"

    @property
    def failure_path(self) -> Path:
        return self.root / "output" / "failure"

    def channel_dir(self, channel: str) -> Path:
        return self.data_dir / channel

    def create(self) -> HostLayout:
        for directory in (
            self.code_dir,
            self.config_dir,
            self.data_dir,
            self.model_dir,
            self.output_data_dir,
            self.intermediate_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        return self

    def write_config(
        self,
        *,
        hyperparameters: dict[str, str],
        input_data: dict[str, dict[str, str]],
        resources: dict[str, Any],
    ) -> None:
        """The three files SageMaker puts in ``/opt/ml/input/config`` before the container runs."""
        for name, document in (
            ("hyperparameters.json", hyperparameters),
            ("inputdataconfig.json", input_data),
            ("resourceconfig.json", resources),
        ):
            (self.config_dir / name).write_text(json.dumps(document, indent=2) + "\n")


def decode_hyperparameters(hyperparameters: dict[str, str]) -> dict[str, Any]:
    """Each value JSON-decoded where it parses, else kept as sent (the toolkit's reading)."""
    decoded: dict[str, Any] = {}
    for name, value in hyperparameters.items():
        try:
            decoded[name] = json.loads(value)
        except (TypeError, ValueError):
            decoded[name] = value
    return decoded


def _split(decoded: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the script's hyperparameters, the ``sagemaker_*`` ones the toolkit keeps for itself)."""
    user = {k: v for k, v in decoded.items() if not k.startswith(SAGEMAKER_PREFIX)}
    framework = {k: v for k, v in decoded.items() if k.startswith(SAGEMAKER_PREFIX)}
    return user, framework


def resource_config(*, current_host: str, hosts: list[str], instance_type: str) -> dict[str, Any]:
    """``resourceconfig.json`` for one host of a homogeneous cluster."""
    return {
        "current_host": current_host,
        "current_instance_type": instance_type,
        "current_group_name": INSTANCE_GROUP,
        "hosts": list(hosts),
        "instance_groups": [
            {
                "instance_group_name": INSTANCE_GROUP,
                "instance_type": instance_type,
                "hosts": list(hosts),
            }
        ],
        "network_interface_name": NETWORK_INTERFACE,
    }


def input_data_config(channels: list[dict[str, Any]], *, input_mode: str) -> dict[str, Any]:
    """``inputdataconfig.json``: per channel, how its data arrives."""
    document: dict[str, Any] = {}
    for channel in channels:
        source = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        entry = {
            "TrainingInputMode": channel.get("InputMode") or input_mode,
            "S3DistributionType": source.get("S3DataDistributionType") or "FullyReplicated",
            "RecordWrapperType": channel.get("RecordWrapperType") or "None",
        }
        if channel.get("ContentType"):
            entry["ContentType"] = channel["ContentType"]
        document[channel["ChannelName"]] = entry
    return document


def _env_value(value: Any) -> str:
    # mapping.to_env_vars: strings as they are, everything else compact sorted JSON.
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _arg_value(value: Any) -> str:
    # mapping.to_cmd_args: maps become k=v pairs, everything else its str().
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return "" if value is None else str(value)


def user_args(hyperparameters: dict[str, str]) -> list[str]:
    """The script's command line: ``--name value`` per non-``sagemaker_`` hyperparameter."""
    user, _ = _split(decode_hyperparameters(hyperparameters))
    args: list[str] = []
    for name in sorted(user):
        args += [f"--{name}" if len(name) > 1 else f"-{name}", _arg_value(user[name])]
    return args


def container_environment(
    *,
    layout: HostLayout,
    job_name: str,
    job_arn: str,
    region: str,
    current_host: str,
    hosts: list[str],
    instance_type: str,
    hyperparameters: dict[str, str],
    channels: list[dict[str, Any]],
    input_mode: str,
    program: str,
    extra: dict[str, str],
) -> dict[str, str]:
    """The environment the script runs in: the toolkit's ``SM_*`` variables, the container's
    job variables and ``extra`` (S3 endpoint and credentials, the request's Environment)."""
    user, framework = _split(decode_hyperparameters(hyperparameters))
    channel_names = sorted(channel["ChannelName"] for channel in channels)
    channel_dirs = {name: str(layout.channel_dir(name)) for name in channel_names}
    resources = resource_config(current_host=current_host, hosts=hosts, instance_type=instance_type)
    input_data = input_data_config(channels, input_mode=input_mode)
    module_name = program[: -len(".py")] if program.endswith(".py") else program
    training_env: dict[str, Any] = {
        "additional_framework_parameters": {
            k: v for k, v in framework.items() if k not in ("sagemaker_program",)
        },
        "channel_input_dirs": channel_dirs,
        "current_host": current_host,
        "current_instance_group": INSTANCE_GROUP,
        "current_instance_group_hosts": list(hosts),
        "current_instance_type": instance_type,
        "distribution_hosts": [],
        "distribution_instance_groups": [],
        "framework_module": None,
        "hosts": list(hosts),
        "hyperparameters": user,
        "input_config_dir": str(layout.config_dir),
        "input_data_config": input_data,
        "input_dir": str(layout.input_dir),
        "instance_groups": [INSTANCE_GROUP],
        "instance_groups_dict": {
            INSTANCE_GROUP: {
                "instance_group_name": INSTANCE_GROUP,
                "instance_type": instance_type,
                "hosts": list(hosts),
            }
        },
        "is_hetero": False,
        "is_master": current_host == hosts[0],
        "is_modelparallel_enabled": None,
        "is_smddpmprun_installed": False,
        "is_smddprun_installed": False,
        "job_name": job_name,
        "log_level": 20,
        "master_hostname": hosts[0],
        "model_dir": str(layout.model_dir),
        "module_dir": str(framework.get("sagemaker_submit_directory") or layout.code_dir),
        "module_name": module_name,
        "network_interface_name": NETWORK_INTERFACE,
        "num_cpus": os.cpu_count() or 1,
        "num_gpus": 0,
        "num_neurons": 0,
        "output_data_dir": str(layout.output_data_dir),
        "output_dir": str(layout.output_dir),
        "output_intermediate_dir": str(layout.intermediate_dir),
        "resource_config": resources,
        "user_entry_point": program,
    }
    variables: dict[str, Any] = {
        "hosts": list(hosts),
        "network_interface_name": NETWORK_INTERFACE,
        "hps": user,
        "user_entry_point": program,
        "framework_params": training_env["additional_framework_parameters"],
        "resource_config": resources,
        "input_data_config": input_data,
        "output_data_dir": str(layout.output_data_dir),
        "channels": channel_names,
        "current_host": current_host,
        "current_instance_type": instance_type,
        "current_instance_group": INSTANCE_GROUP,
        "current_instance_group_hosts": list(hosts),
        "instance_groups": [INSTANCE_GROUP],
        "instance_groups_dict": training_env["instance_groups_dict"],
        "distribution_instance_groups": [],
        "is_hetero": False,
        "module_name": module_name,
        "log_level": 20,
        "framework_module": None,
        "input_dir": str(layout.input_dir),
        "input_config_dir": str(layout.config_dir),
        "output_dir": str(layout.output_dir),
        "num_cpus": training_env["num_cpus"],
        "num_gpus": 0,
        "num_neurons": 0,
        "model_dir": str(layout.model_dir),
        "module_dir": training_env["module_dir"],
        "training_env": training_env,
        "user_args": user_args(hyperparameters),
        "output_intermediate_dir": str(layout.intermediate_dir),
    }
    for name, path in channel_dirs.items():
        variables[f"channel_{name}"] = path
    for name, value in user.items():
        variables[f"hp_{name}"] = value
    env = {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
    env.update({f"SM_{name.upper()}": _env_value(value) for name, value in variables.items()})
    env.update(
        {
            # What SageMaker itself sets in a training container, and the toolkit after it.
            "TRAINING_JOB_NAME": job_name,
            "TRAINING_JOB_ARN": job_arn,
            "CURRENT_HOST": current_host,
            "SAGEMAKER_JOB_NAME": job_name,
            "SAGEMAKER_REGION": region,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            # Logs reach CloudWatch as they are printed in a container; here, the host's log.
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@dataclass
class HostProcess:
    """The script's process on one host, in its own process group."""

    name: str
    layout: HostLayout
    log_path: Path
    command: list[str]
    process: subprocess.Popen | None = None

    @classmethod
    def command_for(cls, layout: HostLayout, program: str, args: list[str]) -> list[str]:
        """How the toolkit runs ``program``: a Python script with this Python, a shell script
        with sh; the path must stay inside the code directory."""
        script = (layout.code_dir / program).resolve()
        if layout.code_dir.resolve() not in script.parents or not script.is_file():
            raise UnsupportedProgram(
                f"The entry point {program!r} is not a file in sagemaker_submit_directory."
            )
        if program.endswith(".py"):
            return [sys.executable, str(script), *args]
        if program.endswith(".sh"):
            return ["/bin/sh", str(script), *args]
        raise UnsupportedProgram(
            f"The entry point {program!r} is neither a Python nor a shell script."
        )

    def start(self, env: dict[str, str]) -> int:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.layout.code_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own group: stopping the host reaches whatever the script started.
                start_new_session=True,
            )
        return self.process.pid

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def exit_code(self) -> int | None:
        """The script's exit status once it ended (``-N`` for signal N), else None."""
        return self.process.poll() if self.process is not None else None

    def signal_group(self, signum: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                # The session leader's pid is its group's id, even after the leader exited.
                os.killpg(self.process.pid, signum)

    def end_container(self) -> None:
        """What the end of a container does: nothing the script started outlives it."""
        self.signal_group(signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)


def script_failure_reason(host: HostProcess) -> str:
    """Why a host failed: its failure file, else the toolkit's ExecuteUserScriptError text."""
    with contextlib.suppress(OSError):
        written = host.layout.failure_path.read_text(encoding="utf-8", errors="replace").strip()
        if written:
            return written
    code = host.exit_code()
    if code is not None and code < 0:
        code = 128 - code  # a container reports a signal as 128 + N (137 for SIGKILL)
    lines = [line for line in log_tail(host.log_path).splitlines() if line.strip()]
    message = "\n".join(lines[-_ERROR_LINES:])
    return (
        f'ExecuteUserScriptError:\nExitCode {code}\nErrorMessage "{message}"\n'
        f'Command "{" ".join(host.command)}"'
    )


def log_tail(path: Path, size: int = 4096) -> str:
    """The last ``size`` bytes of a host's log, as text."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def final_metrics(definitions: list[dict[str, str]], logs: list[Path]) -> dict[str, float]:
    """Each metric's last value in the first host's log that prints it (the regex's first group)."""
    found: dict[str, float] = {}
    for definition in definitions:
        try:
            pattern = re.compile(definition["Regex"])
        except (KeyError, re.error):
            continue
        for path in logs:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            values = []
            for match in pattern.finditer(text):
                with contextlib.suppress(IndexError, TypeError, ValueError):
                    values.append(float(match.group(1)))
            if values:
                found[definition["Name"]] = values[-1]
                break
    return found


def pack_directories(directories: list[tuple[str, Path]], archive: Path) -> list[str]:
    """Tar and gzip the files of every host's directory into one archive, paths relative to
    each directory; returns the paths more than one host wrote (the later host's file is kept)."""
    members: dict[str, tuple[str, Path]] = {}
    clashes: list[str] = []
    for host, directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*")):
            if not path.is_file():
                continue
            name = path.relative_to(directory).as_posix()
            if name in members and members[name][0] != host:
                clashes.append(name)
            members[name] = (host, path)
    archive.parent.mkdir(parents=True, exist_ok=True)
    # Fast compression: models are mostly incompressible weights, and the job waits on this.
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for name in sorted(members):
            tar.add(members[name][1], arcname=name)
    return clashes
