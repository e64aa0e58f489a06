"""What CreateTrainingJob (and the other training operations) accept, as AWS says it.

``validation_errors`` checks a request against botocore's model of the operation (required
members, types, lengths, ranges, patterns, enums) and words each violation as AWS does ("Value
'x' at 'resourceConfig.instanceType' failed to satisfy constraint: Member must ...");
``stand_in_violations`` adds what a training job needs that the model leaves optional and what
the stand-in cannot run (marketplace algorithms, Pipe mode, manifest or file-system channels,
heterogeneous clusters), and the account's default warm-pool quota; ``refuse`` raises AWS's
``ValidationException`` ("N validation errors detected: ...") for them.
"""

from __future__ import annotations

import re
from typing import Any

from moto.core.utils import get_service_model

from deployments.sagemaker_standin.errors import ValidationException

__all__ = ["MAX_KEEP_ALIVE_S", "refuse", "stand_in_violations", "validation_errors"]

# AWS's default quota for KeepAlivePeriodInSeconds (the API model allows more on request).
MAX_KEEP_ALIVE_S = 3600
_MAX_VALIDATION_MESSAGES = 10


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _join(path: str, name: str) -> str:
    return f"{path}.{_camel(name)}" if path else _camel(name)


def _constraint(value: Any, path: str, rule: str) -> str:
    shown = "null" if value is None else f"'{value}'"
    return f"Value {shown} at '{path}' failed to satisfy constraint: Member must {rule}"


def _violations(shape: Any, value: Any, path: str) -> list[str]:
    """What AWS would say about ``value`` against botocore's ``shape`` (its own checks only)."""
    kind = shape.type_name
    meta = shape.metadata
    found: list[str] = []
    if kind == "structure":
        if not isinstance(value, dict):
            return [_constraint(value, path, "be a structure")]
        for name in shape.required_members:
            if value.get(name) is None:
                found.append(_constraint(None, _join(path, name), "not be null"))
        for name, item in value.items():
            member = shape.members.get(name)
            if member is not None and item is not None:
                found += _violations(member, item, _join(path, name))
        return found
    if kind == "list":
        if not isinstance(value, list):
            return [_constraint(value, path, "be a list")]
        found += _length(value, path, meta)
        for index, item in enumerate(value, 1):
            found += _violations(shape.member, item, f"{path}.{index}.member")
        return found
    if kind == "map":
        if not isinstance(value, dict):
            return [_constraint(value, path, "be a map")]
        found += _length(value, path, meta)
        for key, item in value.items():
            found += _violations(shape.key, key, f"{path}.key")
            found += _violations(shape.value, item, f"{path}.{key}")
        return found
    if kind == "string":
        if not isinstance(value, str):
            return [_constraint(value, path, "be a string")]
        if "enum" in meta and value not in meta["enum"]:
            found.append(
                _constraint(value, path, f"satisfy enum value set: [{', '.join(meta['enum'])}]")
            )
        found += _length(value, path, meta)
        pattern = meta.get("pattern")
        if pattern and not _full_match(pattern, value):
            found.append(_constraint(value, path, f"satisfy regular expression pattern: {pattern}"))
        return found
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            return [_constraint(value, path, "be an integer")]
        return _range(value, path, meta)
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [_constraint(value, path, "be a number")]
        return _range(value, path, meta)
    if kind == "boolean" and not isinstance(value, bool):
        return [_constraint(value, path, "be a boolean")]
    return found


def _length(value: Any, path: str, meta: dict[str, Any]) -> list[str]:
    found = []
    shown = value if isinstance(value, str) else None
    if "min" in meta and len(value) < meta["min"]:
        found.append(
            _constraint(shown, path, f"have length greater than or equal to {meta['min']}")
        )
    if "max" in meta and len(value) > meta["max"]:
        found.append(_constraint(shown, path, f"have length less than or equal to {meta['max']}"))
    return found


def _range(value: float, path: str, meta: dict[str, Any]) -> list[str]:
    found = []
    if "min" in meta and value < meta["min"]:
        found.append(_constraint(value, path, f"have value greater than or equal to {meta['min']}"))
    if "max" in meta and value > meta["max"]:
        found.append(_constraint(value, path, f"have value less than or equal to {meta['max']}"))
    return found


def _full_match(pattern: str, value: str) -> bool:
    try:
        return re.fullmatch(pattern, value) is not None
    except re.error:
        return True  # a pattern Python's re cannot read is AWS's to enforce, not ours


def validation_errors(operation: str, params: dict[str, Any]) -> list[str]:
    """The constraint violations AWS reports for ``params`` of ``operation``."""
    shape = get_service_model("sagemaker").operation_model(operation).input_shape
    return _violations(shape, params, "")


def refuse(errors: list[str]) -> None:
    if errors:
        count = len(errors)
        shown = "; ".join(errors[:_MAX_VALIDATION_MESSAGES])
        raise ValidationException(
            f"{count} validation error{'s' if count > 1 else ''} detected: {shown}"
        )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def stand_in_violations(params: dict[str, Any]) -> list[str]:
    """What a training job needs that the model leaves optional, and what the stand-in
    cannot run; each names the field. Mistyped values are the model's to report."""
    found = []
    for name in ("AlgorithmSpecification", "ResourceConfig", "StoppingCondition"):
        if params.get(name) is None:
            found.append(_constraint(None, _camel(name), "not be null"))
    algorithm = _mapping(params.get("AlgorithmSpecification"))
    if algorithm and not algorithm.get("TrainingImage"):
        found.append(
            "algorithmSpecification.trainingImage is required: the stand-in runs training "
            "images, not AlgorithmName (marketplace algorithms)."
        )
    if algorithm.get("TrainingInputMode") == "Pipe":
        found.append("algorithmSpecification.trainingInputMode Pipe is not supported (use File).")
    resources = _mapping(params.get("ResourceConfig"))
    if resources:
        if resources.get("InstanceGroups"):
            found.append("resourceConfig.instanceGroups (heterogeneous clusters) is not supported.")
        for name in ("InstanceType", "InstanceCount", "VolumeSizeInGB"):
            if resources.get(name) is None:
                found.append(_constraint(None, f"resourceConfig.{_camel(name)}", "not be null"))
        count = resources.get("InstanceCount")
        if isinstance(count, int) and count < 1:
            found.append(
                _constraint(
                    count, "resourceConfig.instanceCount", "have value greater than or equal to 1"
                )
            )
        keep_alive = resources.get("KeepAlivePeriodInSeconds")
        if isinstance(keep_alive, int) and keep_alive > MAX_KEEP_ALIVE_S:
            found.append(
                _constraint(
                    keep_alive,
                    "resourceConfig.keepAlivePeriodInSeconds",
                    f"have value less than or equal to {MAX_KEEP_ALIVE_S}",
                )
            )
    stopping = _mapping(params.get("StoppingCondition"))
    if stopping and stopping.get("MaxRuntimeInSeconds") is None:
        found.append(_constraint(None, "stoppingCondition.maxRuntimeInSeconds", "not be null"))
    if not _mapping(params.get("OutputDataConfig")).get("S3OutputPath"):
        found.append(_constraint(None, "outputDataConfig.s3OutputPath", "not be null"))
    channels = [_mapping(c) for c in params.get("InputDataConfig") or []]
    names = [channel.get("ChannelName") for channel in channels]
    if len(names) != len(set(map(str, names))):
        found.append(f"inputDataConfig: channel names must be unique, got {names}.")
    for index, channel in enumerate(channels, 1):
        where = f"inputDataConfig.{index}.member"
        source = _mapping(_mapping(channel.get("DataSource")).get("S3DataSource"))
        if not source:
            found.append(f"{where}.dataSource: only S3DataSource channels are supported.")
        elif source.get("S3DataType") != "S3Prefix":
            found.append(f"{where}.dataSource.s3DataSource.s3DataType: only S3Prefix is supported.")
        if channel.get("InputMode") == "Pipe":
            found.append(f"{where}.inputMode: Pipe is not supported (use File).")
    return found
