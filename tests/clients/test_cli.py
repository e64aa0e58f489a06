"""The ``tenantml`` command: train, deploy, invoke, jobs and status against a running platform,
with a tenant's own token; results on stdout, progress and errors on stderr, and exit codes a
script can test."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tomllib

import pytest
from tenantml_client import Client
from tenantml_client.cli import main

from tests.clients.live_platform import CLIENT_SOURCE, REPO


@pytest.fixture(scope="session")
def team_token(live_platform) -> str:
    """A tenant token of a new tenant, as the product team would hold it."""
    with Client(live_platform.url, live_platform.platform_token) as client:
        client.create_tenant("cli-team", "CLI team")
        return client.issue_token("cli-team", "product team").token


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_deploy_and_invoke_from_the_command_line(
    live_platform, team_token, tickets_csv, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("TENANTML_URL", live_platform.url)
    monkeypatch.setenv("TENANTML_TOKEN", team_token)
    model = ["--tenant", "cli-team", "--model", "intents"]

    code, out, err = run_cli(capsys, "train", *model, "--dataset", str(tickets_csv), "--wait")
    assert code == 0, err
    assert "created model cli-team/intents (intent-classifier)" in err
    assert "uploaded dataset tickets.csv" in err and "120 rows, 8 labels" in err
    assert "succeeded 100%" in err  # the progress, off a terminal a line per change
    assert out.startswith("training job ") and "succeeded 100%, version v1 (promoted)" in out

    code, out, err = run_cli(capsys, "deploy", *model, "--wait")
    assert code == 0, err
    assert out.strip() == "deployment cli-team/intents: live, serving v1 on local-intent-classifier"

    texts = ["Where is my order TL-376158? It has not moved in a week.", "Cancel order TL-870706."]
    code, out, err = run_cli(capsys, "invoke", *model, *texts)
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split("\t")[1] for line in lines] == texts
    assert all(" (0." in line.split("\t")[0] or " (1.00)" in line for line in lines)
    assert "2 outputs from version 1" in err

    inputs = tmp_path / "texts.txt"
    inputs.write_text("Where is my refund?\n\nMy dress arrived torn.\nCan I swap the size?\n")
    code, out, err = run_cli(capsys, "invoke", *model, "--file", str(inputs), "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert len(answer["outputs"]) == 3 and answer["model_version"] == 1

    code, out, err = run_cli(capsys, "jobs", *model)
    assert code == 0, err
    assert len(out.splitlines()) == 1 and " succeeded " in out and "v1 (promoted)" in out

    code, out, err = run_cli(capsys, "--json", "status", *model)
    assert code == 0, err
    status = json.loads(out)
    assert status["model"]["active_version"] == 1
    assert status["deployment"]["status"] == "live"
    assert status["latest_training_job"]["status"] == "succeeded"


def test_a_refusal_exits_1_with_the_platforms_message(live_platform, team_token, capsys):
    code, out, err = run_cli(
        capsys,
        "status",
        "--url",
        live_platform.url,
        "--token",
        team_token,
        "--tenant",
        "cli-team",
        "--model",
        "missing",
    )
    assert code == 1 and out == ""
    assert err.strip() == "tenantml: error: 404 not_found: No model 'missing' for tenant cli-team."


def test_without_a_token_the_command_exits_2_saying_how_to_give_one(capsys, monkeypatch):
    monkeypatch.setenv("TENANTML_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("TENANTML_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["jobs", "--tenant", "acme", "--model", "intents"])
    assert exited.value.code == 2
    assert "no API token: pass --token or set TENANTML_TOKEN" in capsys.readouterr().err


def test_a_missing_dataset_file_exits_2_before_any_request(capsys, tmp_path):
    # Port 9 (discard) has nothing listening: a request would fail with exit 1, not 2.
    code, out, err = run_cli(
        capsys,
        "train",
        "--url",
        "http://127.0.0.1:9",
        "--token",
        "tml_x",
        "--tenant",
        "acme",
        "--model",
        "intents",
        "--dataset",
        str(tmp_path / "missing.csv"),
    )
    assert code == 2 and out == ""
    assert "missing.csv: no such file" in err


def test_the_tenantml_command_is_the_packages_console_script():
    project = tomllib.loads((REPO / "clients" / "python" / "pyproject.toml").read_text())
    module, function = project["project"]["scripts"]["tenantml"].split(":")
    assert getattr(importlib.import_module(module), function) is main
    run = subprocess.run(
        [sys.executable, "-m", "tenantml_client", "--version"],
        env=os.environ | {"PYTHONPATH": str(CLIENT_SOURCE)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and run.stdout.strip() == "tenantml 0.1.0"
