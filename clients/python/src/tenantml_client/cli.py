"""``tenantml``: train, deploy and invoke a tenant's model from a shell.

Configured by ``--url``/``--token`` or ``TENANTML_URL``/``TENANTML_TOKEN``. Results go to stdout
(``--json`` for the API's own answers), progress and errors to stderr. Exit codes: 0 done,
1 the platform refused or could not be reached, 2 a usage error, 3 a training job or deployment
that was waited for failed, 4 a wait that timed out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from tenantml_client.client import Client, __version__
from tenantml_client.errors import (
    DeploymentFailed,
    NotFound,
    TenantMLError,
    TrainingFailed,
    WaitTimeout,
)
from tenantml_client.types import Deployment, TrainingJob

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2, 3, 4
DEFAULT_KIND = "intent-classifier"


class UsageError(Exception):
    """A command line that cannot be run as given."""


def connection_options(*, defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes. They are accepted before and after the command
    (``tenantml --json jobs`` and ``tenantml jobs --json``): the command's own copies default to
    "not given", so they never undo what was given before it."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--url", default=default(None), help="platform URL (TENANTML_URL)")
    options.add_argument("--token", default=default(None), help="API token (TENANTML_TOKEN)")
    options.add_argument(
        "--json", action="store_true", default=default(False), help="print the API's JSON"
    )
    options.add_argument(
        "--timeout",
        type=float,
        default=default(3600.0),
        help="longest a --wait waits, in seconds (default: 3600)",
    )
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tenantml",
        description="Train, deploy and invoke per-tenant models on a TenantML platform.",
        parents=[connection_options(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"tenantml {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[connection_options(defaults=False)],
        )
        sub.add_argument("--tenant", required=True, help="the tenant's slug")
        sub.add_argument("--model", required=True, help="the model's name")
        return sub

    train = command("train", "Upload a dataset and train the model on it.")
    train.add_argument("--dataset", required=True, metavar="FILE", help="CSV or JSON Lines")
    train.add_argument(
        "--kind",
        help=f"the model's kind, used when the model is created (default {DEFAULT_KIND})",
    )
    train.add_argument("--dataset-name", help="the dataset's name (default: the file's name)")
    train.add_argument("--hyperparameters", metavar="JSON", help="e.g. '{\"epochs\": 200}'")
    train.add_argument("--idempotency-key", help="repeat a run without a second job")
    train.add_argument("--wait", action="store_true", help="wait for the job, with progress")

    deploy = command("deploy", "Deploy the model's active version (or --version).")
    deploy.add_argument("--version", type=int, help="the version number to deploy")
    deploy.add_argument("--mode", help="mme, inference-component or dedicated")
    deploy.add_argument("--replicas", type=int)
    deploy.add_argument("--wait", action="store_true", help="wait until it serves")

    invoke = command("invoke", "Run the model on texts (arguments, or --file).")
    invoke.add_argument("texts", nargs="*", metavar="TEXT")
    invoke.add_argument("--file", help="one input per line ('-': standard input)")

    jobs = command("jobs", "List the model's training jobs, newest first.")
    jobs.add_argument("--status", help="only jobs in this status")
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")

    command("status", "Show the model, its deployment and its latest training job.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tenantml`` command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        client = _client(args)
    except UsageError as exc:
        parser.error(str(exc))  # exits 2 with the usage line
    try:
        with client:
            return COMMANDS[args.command](client, args)
    except UsageError as exc:
        print(f"tenantml: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TrainingFailed, DeploymentFailed) as exc:
        _fail(exc)
        return EXIT_FAILED
    except WaitTimeout as exc:
        _fail(exc)
        return EXIT_TIMEOUT
    except TenantMLError as exc:
        _fail(exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("tenantml: interrupted", file=sys.stderr)
        return 130


def _client(args: argparse.Namespace) -> Client:
    url = args.url or os.environ.get("TENANTML_URL")
    token = args.token or os.environ.get("TENANTML_TOKEN")
    if not url:
        raise UsageError("no platform URL: pass --url or set TENANTML_URL.")
    if not token:
        raise UsageError("no API token: pass --token or set TENANTML_TOKEN.")
    return Client(url, token)


def _fail(exc: TenantMLError) -> None:
    print(f"tenantml: error: {exc}", file=sys.stderr)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# --- Commands --------------------------------------------------------------------------------


def train(client: Client, args: argparse.Namespace) -> int:
    hyperparameters = None
    if args.hyperparameters:
        try:
            hyperparameters = json.loads(args.hyperparameters)
        except ValueError as exc:
            raise UsageError(f"--hyperparameters is not JSON: {exc}") from exc
    if not os.path.isfile(args.dataset):
        raise UsageError(f"--dataset {args.dataset}: no such file.")
    try:
        model = client.get_model(args.tenant, args.model)
    except NotFound:
        model = client.create_model(args.tenant, args.model, args.kind or DEFAULT_KIND)
        _say(f"created model {args.tenant}/{model.name} ({model.kind})")
    else:
        if args.kind and args.kind != model.kind:
            raise UsageError(
                f"{args.tenant}/{model.name} is a {model.kind} model, not {args.kind}."
            )
    dataset = client.upload_dataset(args.tenant, args.dataset, name=args.dataset_name)
    labels = len(dataset.labels or [])
    _say(f"uploaded dataset {dataset.name} (id {dataset.id}, {dataset.rows} rows, {labels} labels)")
    job = client.start_training(
        args.tenant,
        args.model,
        dataset.id,
        hyperparameters=hyperparameters,
        idempotency_key=args.idempotency_key,
    )
    _say(f"started training job {job.id} ({job.status})")
    if args.wait:
        job = client.wait_for_training(job, progress=True, timeout_s=args.timeout)
    if args.json:
        _print_json(job.raw)
    else:
        print(_describe_job(job))
    return EXIT_OK


def deploy(client: Client, args: argparse.Namespace) -> int:
    deployment = client.deploy(
        args.tenant, args.model, version=args.version, mode=args.mode, replicas=args.replicas
    )
    if args.wait:
        _say(
            f"deploying {args.tenant}/{args.model}: {deployment.status_reason or deployment.status}"
        )
        deployment = client.wait_for_deployment(
            args.tenant, args.model, version=args.version, progress=True, timeout_s=args.timeout
        )
    if args.json:
        _print_json(deployment.raw)
    else:
        print(_describe_deployment(deployment))
    return EXIT_OK


def invoke(client: Client, args: argparse.Namespace) -> int:
    texts = list(args.texts)
    if args.file:
        if args.file == "-":
            lines = sys.stdin.read().splitlines()
        else:
            try:
                with open(args.file, encoding="utf-8") as handle:
                    lines = handle.read().splitlines()
            except OSError as exc:
                raise UsageError(f"--file {args.file}: {exc.strerror}.") from exc
        texts += [line for line in lines if line.strip()]
    if not texts:
        raise UsageError("nothing to invoke: give TEXT arguments or --file.")
    answer = client.invoke(args.tenant, args.model, texts)
    if args.json:
        _print_json(answer.raw)
        return EXIT_OK
    for text, output in zip(texts, answer.outputs, strict=False):
        print(f"{_describe_output(output)}\t{text}")
    cold = ", cold start" if answer.cold_start else ""
    _say(f"{len(answer.outputs)} outputs from version {answer.model_version}{cold}")
    return EXIT_OK


def jobs(client: Client, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be 1 or more.")
    found: list[TrainingJob] = []
    for job in client.list_training_jobs(
        args.tenant, args.model, status=args.status, page_size=min(args.limit, 100)
    ):
        found.append(job)
        if len(found) >= args.limit:
            break
    if args.json:
        _print_json([job.raw for job in found])
        return EXIT_OK
    if not found:
        print("no training jobs")
    for job in found:
        created = job.created_at.strftime("%Y-%m-%d %H:%M") if job.created_at else "-"
        print(
            f"{job.id:>6}  {job.status:<10} {job.progress_pct:>3}%  {created}  {_version_of(job)}"
        )
    return EXIT_OK


def status(client: Client, args: argparse.Namespace) -> int:
    model = client.get_model(args.tenant, args.model)
    try:
        deployment: Deployment | None = client.get_deployment(args.tenant, args.model)
    except NotFound:
        deployment = None
    latest = next(iter(client.list_training_jobs(args.tenant, args.model, page_size=1)), None)
    if args.json:
        _print_json(
            {
                "model": model.raw,
                "deployment": deployment.raw if deployment else None,
                "latest_training_job": latest.raw if latest else None,
            }
        )
        return EXIT_OK
    active = f"v{model.active_version}" if model.active_version else "none"
    print(f"model {args.tenant}/{model.name} ({model.kind}), active version {active}")
    print(_describe_deployment(deployment) if deployment else "not deployed")
    print(_describe_job(latest) if latest else "never trained")
    return EXIT_OK


COMMANDS = {"train": train, "deploy": deploy, "invoke": invoke, "jobs": jobs, "status": status}


# --- Human-readable lines --------------------------------------------------------------------


def _say(line: str) -> None:
    """A line about what the command is doing: stderr, so stdout is only the result."""
    print(line, file=sys.stderr)


def _version_of(job: TrainingJob) -> str:
    if job.version is None:
        return ""
    gate = job.gate or {}
    outcome = gate.get("outcome")
    return f"v{job.version}" + (f" ({outcome})" if outcome else "")


def _describe_job(job: TrainingJob) -> str:
    line = f"training job {job.id}: {job.status} {job.progress_pct}%"
    if job.version is not None:
        line += f", version {_version_of(job)}"
    metrics = ", ".join(
        f"{name} {value:.3f}"
        for name, value in sorted(job.metrics.items())
        if isinstance(value, int | float) and not isinstance(value, bool)
    )
    if metrics:
        line += f"; {metrics}"
    gate = job.gate or {}
    if gate.get("outcome") == "held" and gate.get("reason"):
        line += f"; held: {gate['reason']}"
    if job.failure_reason:
        line += f"; {job.failure_reason}"
    return line


def _describe_deployment(deployment: Deployment) -> str:
    line = f"deployment {deployment.tenant}/{deployment.model}: {deployment.status}"
    if deployment.live_version is not None:
        line += f", serving v{deployment.live_version}"
    if deployment.target_version is not None:
        line += f", rolling out v{deployment.target_version}"
    if deployment.endpoint:
        line += f" on {deployment.endpoint}"
    if deployment.status_reason:
        line += f" ({deployment.status_reason})"
    return line


def _describe_output(output: Any) -> str:
    if isinstance(output, dict) and "label" in output:
        scores = output.get("scores")
        score = scores.get(output["label"]) if isinstance(scores, dict) else None
        return (
            f"{output['label']} ({score:.2f})" if isinstance(score, float) else str(output["label"])
        )
    text = json.dumps(output)
    return text if len(text) <= 80 else text[:77] + "..."
