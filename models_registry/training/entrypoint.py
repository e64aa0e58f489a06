"""The training entry point: SageMaker training-container conventions in, a servable artifact out.

Run as ``python -m models_registry.training.entrypoint`` (the local backend) or as ``train.py``
inside a SageMaker PyTorch training container (the sourcedir shim calls ``main``). It reads

- ``SM_MODEL_DIR`` (default ``/opt/ml/model``): where the artifact goes (SageMaker uploads it
  as ``model.tar.gz``); exactly the files the kind's packaging expects;
- ``SM_OUTPUT_DATA_DIR`` (``/opt/ml/output/data``): ``metrics.json`` is written here;
- ``SM_OUTPUT_DIR`` (``/opt/ml/output``): ``failure`` (the reason, SageMaker's FailureReason);
- ``SM_CHANNEL_TRAIN`` / ``SM_CHANNEL_VALIDATION`` (``/opt/ml/input/data/<channel>``):
  ``train.jsonl`` / ``validation.jsonl`` with ``{"text", "label"[, "group"]}`` rows (or
  ``{"text", "reply"}``: the columns the kind trains on, ``ModelKind.dataset_columns``);
- ``<SM_INPUT_CONFIG_DIR>/hyperparameters.json`` (``/opt/ml/input/config``), over ``SM_HPS``
  and ``SM_HP_<NAME>``: values may be strings (SageMaker sends them so) and are parsed. ``kind``
  is required; the rest are the kind's (``sagemaker_*`` keys the SDK adds are ignored);
- ``TENANTML_BASE_MODEL_CACHE`` (default ``<SM_OUTPUT_DIR>/base_model_cache``): where the base
  encoder's ONNX export is cached.

It prints ``#progress <0-100> <message>`` lines as it goes, then one ``#metric <name>=<float>``
line per numeric metric and ``validation:<name>=<float>;`` lines for SageMaker metric regexes.
Exit status: 0 trained; 1 the data or hyperparameters are wrong (the message says how); 2 an
unexpected error; 143 stopped by SIGTERM. Only the kinds, base model and Triton runtime modules
are imported: Django is not configured here and not installed in the SageMaker container.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

# Before anything imports transformers: no hub access, ever, and no tokenizers thread pools.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from config.errors import DomainError  # noqa: E402
from models_registry.kinds import InvalidHyperparameter, get_kind  # noqa: E402

METRICS_FILE = "metrics.json"
FAILURE_FILE = "failure"
CHANNEL_FILES = {"train": "train.jsonl", "validation": "validation.jsonl"}
EXIT_INVALID = 1
EXIT_ERROR = 2
EXIT_TERMINATED = 128 + signal.SIGTERM
# SageMaker truncates FailureReason at 1,024 characters; keep the useful start.
_FAILURE_CHARS = 1000
# Metrics that are not scores on the validation channel (sizes, timings, training-set figures).
_NOT_VALIDATION = re.compile(
    r"/|^train_|_loss$|_seconds$|_rows$|_groups$|^(labels|epochs|embedding_dim)$"
)


@dataclass(frozen=True)
class TrainingPaths:
    """The directories of one training run, as the SageMaker container names them."""

    model_dir: Path
    output_dir: Path
    output_data_dir: Path
    train_dir: Path
    validation_dir: Path
    config_dir: Path
    base_model_cache: Path

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> TrainingPaths:
        env = dict(os.environ if env is None else env)
        output_dir = Path(env.get("SM_OUTPUT_DIR", "/opt/ml/output"))
        return cls(
            model_dir=Path(env.get("SM_MODEL_DIR", "/opt/ml/model")),
            output_dir=output_dir,
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")),
            train_dir=Path(env.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train")),
            validation_dir=Path(env.get("SM_CHANNEL_VALIDATION", "/opt/ml/input/data/validation")),
            config_dir=Path(env.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config")),
            # Not under output/data: SageMaker uploads that, and the export is 110 MB.
            base_model_cache=Path(
                env.get("TENANTML_BASE_MODEL_CACHE") or output_dir / "base_model_cache"
            ),
        )


class TrainingInputError(DomainError):
    code = "invalid_training_input"


def read_hyperparameters(config_dir: Path, env: dict[str, str] | None = None) -> dict:
    """Hyperparameters from SM_HP_*, then SM_HPS, then hyperparameters.json (later ones win)."""
    env = dict(os.environ if env is None else env)
    merged: dict = {}
    for name, value in sorted(env.items()):
        if name.startswith("SM_HP_"):
            # SageMaker upper-cases the name here; the kinds use lower-case names.
            merged[name[len("SM_HP_") :].lower()] = value
    if env.get("SM_HPS"):
        merged.update(_json_object(env["SM_HPS"], where="SM_HPS"))
    path = Path(config_dir) / "hyperparameters.json"
    if path.is_file():
        merged.update(_json_object(path.read_text(encoding="utf-8"), where=str(path)))
    return {
        name: _decode(value) for name, value in merged.items() if not name.startswith("sagemaker_")
    }


def _json_object(text: str, *, where: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidHyperparameter(f"{where} is not valid JSON: {exc}.") from None
    if not isinstance(value, dict):
        raise InvalidHyperparameter(f"{where} must hold a JSON object of hyperparameters.")
    return value


def _decode(value: object) -> object:
    # The SageMaker SDK JSON-encodes each value into a string ('"intent-classifier"', '300');
    # the console and boto3 send plain strings ('intent-classifier'). Accept both.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def read_channel(
    channel_dir: Path, channel: str, *, columns: tuple[str, ...] = ("text", "label")
) -> list[dict]:
    """The rows of ``<channel_dir>/<channel>.jsonl``; each needs a non-empty text and the
    kind's other ``columns`` (a label, a reply, ...)."""
    path = Path(channel_dir) / CHANNEL_FILES[channel]
    if not path.is_file():
        raise TrainingInputError(
            f"The {channel} channel has no {path.name} (looked in {channel_dir}).", field=channel
        )
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrainingInputError(
                    f"{path.name} line {number} is not JSON: {exc}.", field=channel
                ) from None
            if not isinstance(row, dict) or not str(row.get("text") or "").strip():
                raise TrainingInputError(
                    f"{path.name} line {number} needs a non-empty 'text'.", field=channel
                )
            for column in columns:
                if row.get(column) is None:
                    raise TrainingInputError(
                        f"{path.name} line {number} needs a {column!r}.", field=channel
                    )
            rows.append(row)
    if not rows:
        raise TrainingInputError(f"The {channel} channel ({path.name}) has no rows.", field=channel)
    return rows


def progress(percent: int, message: str) -> None:
    """One ``#progress`` line; the runner parses these (and a log viewer can read them)."""
    message = " ".join(str(message).split())  # one line, whatever the message held
    print(f"#progress {max(0, min(100, int(percent)))} {message}", flush=True)


def report_metrics(metrics: dict) -> None:
    """Print ``#metric`` lines and SageMaker-regex friendly ``validation:<name>=<v>;`` lines."""
    for name, value in sorted(_numeric(metrics).items()):
        print(f"#metric {name}={value:.6g}", flush=True)
    for name, value in sorted(_numeric(metrics).items()):
        if not _NOT_VALIDATION.search(name):
            print(f"validation:{name}={value:.6g};", flush=True)


def _numeric(metrics: dict, prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_numeric(value, prefix=f"{prefix}{name}/"))
        elif (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ):
            flat[f"{prefix}{name}"] = float(value)
    return flat


def write_failure(paths: TrainingPaths, message: str) -> None:
    """Write the reason where SageMaker (and the runner) read it; never raise while failing."""
    try:
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        (paths.output_dir / FAILURE_FILE).write_text(message[:_FAILURE_CHARS] + "\n")
    except OSError as exc:
        print(f"could not write the failure file: {exc}", file=sys.stderr, flush=True)


def train(paths: TrainingPaths, hyperparameters: dict) -> dict:
    """Train the kind named by ``hyperparameters["kind"]``; returns the metrics written."""
    hyperparameters = dict(hyperparameters)
    kind_name = hyperparameters.pop("kind", None)
    if not kind_name:
        raise InvalidHyperparameter(
            "The hyperparameter 'kind' is required (e.g. intent-classifier, embedding).",
            field="kind",
        )
    kind = get_kind(str(kind_name))
    if kind.train is None:
        raise InvalidHyperparameter(f"Kind {kind.name!r} cannot be trained.", field="kind")
    progress(1, f"reading the channels for {kind.name}")
    # A paraphrase group is the embedding kind's to check: a row may lack one in its channel.
    columns = tuple(column for column in kind.dataset_columns if column != "group")
    train_rows = read_channel(paths.train_dir, "train", columns=columns)
    validation_rows = read_channel(paths.validation_dir, "validation", columns=columns)
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    metrics = kind.train(
        train_rows=train_rows,
        validation_rows=validation_rows,
        out_dir=paths.model_dir,
        hyperparameters=hyperparameters,
        cache_dir=paths.base_model_cache,
        progress=progress,
    )
    document = {
        "kind": kind.name,
        "primary_metric": kind.primary_metric,
        "higher_is_better": kind.higher_is_better,
        "metrics": {**metrics, "total_seconds": round(time.perf_counter() - started, 3)},
    }
    paths.output_data_dir.mkdir(parents=True, exist_ok=True)
    (paths.output_data_dir / METRICS_FILE).write_text(
        json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    )
    report_metrics(document["metrics"])
    progress(100, f"done: {kind.primary_metric}={metrics.get(kind.primary_metric)}")
    return document


def main(env: dict[str, str] | None = None) -> int:
    """Run one training job from the environment; returns the process exit status."""
    paths = TrainingPaths.from_env(env)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # SageMaker (StopTrainingJob) and the runner (cancel) send SIGTERM and kill a few
        # seconds later; a torch step or an export would not notice an exception raised into
        # it promptly, so leave at once: the half-written model dir is discarded anyway.
        write_failure(paths, "Training was stopped (SIGTERM).")
        print("#progress 100 stopped by SIGTERM", flush=True)
        sys.stderr.flush()
        os._exit(EXIT_TERMINATED)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        (paths.output_dir / FAILURE_FILE).unlink(missing_ok=True)
        train(paths, read_hyperparameters(paths.config_dir, env))
    except DomainError as exc:
        message = exc.message
        write_failure(paths, message)
        print(f"#failure {message}", file=sys.stderr, flush=True)
        return EXIT_INVALID
    except Exception as exc:  # anything else is ours: keep the traceback in the log
        traceback.print_exc()
        message = f"Training failed: {type(exc).__name__}: {exc}"
        write_failure(paths, message)
        print(f"#failure {message}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
