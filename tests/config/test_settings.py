"""Settings parsing: the embedded defaults, production's demands, and ``check --deploy``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import env as parse

REPO = Path(__file__).resolve().parents[2]


def run_manage(*args: str, env: dict[str, str], timeout: int = 60) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_embedded_database_is_a_sqlite_file_under_var(tmp_path):
    config = parse.database_config("", var_dir=tmp_path)
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == str(tmp_path / "tenantml.sqlite3")
    assert "journal_mode=WAL" in config["OPTIONS"]["init_command"]


def test_postgres_url_is_parsed_with_persistent_connections(tmp_path):
    config = parse.database_config("postgres://ml:pw@db.internal:5433/tenantml", var_dir=tmp_path)
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("db.internal", 5433, "tenantml")
    assert config["USER"] == "ml" and config["PASSWORD"] == "pw"
    assert config["CONN_HEALTH_CHECKS"] is True


def test_postgres_connections_turn_jit_off_unless_the_url_chooses(tmp_path):
    plain = parse.database_config("postgres://ml@db:5432/tenantml", var_dir=tmp_path)
    chosen = parse.database_config(
        "postgres://ml@db:5432/tenantml?options=-c%20jit%3Don", var_dir=tmp_path
    )

    assert plain["OPTIONS"]["options"] == "-c jit=off"
    assert chosen["OPTIONS"]["options"] == "-c jit=on"


def test_unknown_database_scheme_is_a_configuration_error(tmp_path):
    with pytest.raises(parse.ConfigurationError, match="DATABASE_URL"):
        parse.database_config("mongodb://x/y", var_dir=tmp_path)


def test_embedded_broker_is_the_file_system_transport_under_var(tmp_path):
    broker = parse.broker_config(None, var_dir=tmp_path)
    assert broker.url.startswith("filesystem://")
    assert broker.transport_options["data_folder_in"] == str(tmp_path / "broker" / "queue")
    assert broker.transport_options["data_folder_out"] == broker.transport_options["data_folder_in"]


def test_redis_broker_gets_a_visibility_timeout(tmp_path):
    broker = parse.broker_config("redis://127.0.0.1:6379/3", var_dir=tmp_path)
    assert broker.url == "redis://127.0.0.1:6379/3"
    assert broker.transport_options["visibility_timeout"] >= 600


def test_unsupported_broker_scheme_names_the_variable(tmp_path):
    with pytest.raises(parse.ConfigurationError, match="CELERY_BROKER_URL"):
        parse.broker_config("kafka://x", var_dir=tmp_path)


def test_artifact_store_default_and_s3(tmp_path):
    local = parse.artifact_store("", var_dir=tmp_path)
    assert (local.kind, local.root) == ("local", str(tmp_path / "artifacts"))
    s3 = parse.artifact_store("s3://models-bucket/tenantml/prod/", var_dir=tmp_path)
    assert (s3.kind, s3.root, s3.uri) == (
        "s3",
        "models-bucket/tenantml/prod",
        "s3://models-bucket/tenantml/prod",
    )
    with pytest.raises(parse.ConfigurationError, match="bucket"):
        parse.artifact_store("s3:///nobucket", var_dir=tmp_path)
    with pytest.raises(parse.ConfigurationError, match="ARTIFACT_STORE"):
        parse.artifact_store("gs://elsewhere", var_dir=tmp_path)


def test_secret_key_is_generated_once_and_reused(tmp_path):
    first = parse.secret_key("", profile="embedded", var_dir=tmp_path)
    second = parse.secret_key("", profile="embedded", var_dir=tmp_path)
    assert first == second and len(first) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert parse.secret_key("given", profile="embedded", var_dir=tmp_path) == "given"


def test_production_requires_secret_key_and_allowed_hosts(tmp_path):
    with pytest.raises(parse.ConfigurationError, match="SECRET_KEY"):
        parse.secret_key("", profile="production", var_dir=tmp_path)
    with pytest.raises(parse.ConfigurationError, match="ALLOWED_HOSTS"):
        parse.allowed_hosts([], profile="production")
    assert not (tmp_path / "secret_key").exists()


def test_unknown_profile_is_rejected():
    with pytest.raises(parse.ConfigurationError, match="TENANTML_PROFILE"):
        parse.parse_profile("staging")


PRODUCTION_ENV = {
    "TENANTML_PROFILE": "production",
    "SECRET_KEY": "x7!Qm2#pLr9$Vb4&Nz8*Kd3^Wf6@Jh1%Ts5(Gy0)Uc-Ea_Oi+Rl=Pq",
    "ALLOWED_HOSTS": "tenantml.example.com",
    "DATABASE_URL": "postgres://tenantml@127.0.0.1:5432/tenantml",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
}


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env=PRODUCTION_ENV | {"TENANTML_VAR_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_without_secret_key_refuses_to_start(tmp_path):
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    result = run_manage("check", env=env | {"TENANTML_VAR_DIR": str(tmp_path), "SECRET_KEY": ""})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_debug_is_off_unless_asked(tmp_path):
    code = "from django.conf import settings; print(settings.DEBUG)"
    off = run_manage("shell", "-c", code, env={"TENANTML_VAR_DIR": str(tmp_path)})
    on = run_manage("shell", "-c", code, env={"TENANTML_VAR_DIR": str(tmp_path), "DEBUG": "1"})
    assert off.stdout.strip().splitlines()[-1] == "False"
    assert on.stdout.strip().splitlines()[-1] == "True"


def test_migrations_are_complete():
    result = run_manage("makemigrations", "--check", "--dry-run", env={})
    assert result.returncode == 0, result.stdout + result.stderr
