"""Parsing of the environment into settings values, kept pure so it can be tested directly.

Two profiles exist. ``embedded`` (the default) runs everything on one machine with no servers to
install: a SQLite file, kombu's file-system broker and a local artifact directory, all under the
var directory, and a secret key generated once into it. ``production`` refuses to start without an
explicit ``SECRET_KEY`` and ``ALLOWED_HOSTS`` and turns every transport-security setting on.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import environ

PROFILES = ("embedded", "production")
SECRET_KEY_FILE = "secret_key"
SUPPORTED_DATABASE_ENGINES = {
    "django.db.backends.sqlite3",
    "django.db.backends.postgresql",
}


class ConfigurationError(Exception):
    """Raised when the environment cannot produce a working configuration."""


def parse_profile(value: str) -> str:
    """Return the validated deployment profile name."""
    profile = (value or "embedded").strip().lower()
    if profile not in PROFILES:
        raise ConfigurationError(
            f"TENANTML_PROFILE must be one of {', '.join(PROFILES)}; got {value!r}."
        )
    return profile


def database_config(url: str | None, *, var_dir: Path) -> dict:
    """Django DATABASES['default'] from DATABASE_URL, or the embedded SQLite file."""
    if not url:
        url = f"sqlite:///{var_dir / 'tenantml.sqlite3'}"
    try:
        config = environ.Env.db_url_config(url)
    except Exception as exc:  # environ raises bare exceptions for unknown schemes
        raise ConfigurationError(f"DATABASE_URL is not a database URL: {exc}") from exc
    engine = config.get("ENGINE", "")
    if engine not in SUPPORTED_DATABASE_ENGINES:
        raise ConfigurationError(
            f"DATABASE_URL must be a postgres:// or sqlite:/// URL; got engine {engine!r}."
        )
    if engine == "django.db.backends.sqlite3":
        # WAL lets the web server read while a worker writes; IMMEDIATE transactions take the
        # write lock up front so two writers wait for each other instead of failing mid-way.
        config["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
        # Tests get a file too, not Django's shared-cache in-memory database: that one locks
        # whole tables and fails concurrent readers at once instead of waiting, unlike the file
        # the embedded platform really runs on.
        config["TEST"] = {"NAME": str(var_dir / "test-tenantml.sqlite3")}
    elif engine.startswith("django.db.backends.postgresql"):
        config.setdefault("CONN_MAX_AGE", 60)
        config["CONN_HEALTH_CHECKS"] = True
        # PostgreSQL compiles a query whose plan looks costly (the fleet's aggregates over 100k
        # placements) with LLVM first: a second of compiling for a 200 ms query. The platform's
        # queries are never long enough to win that back, so JIT is off for its connections
        # (a DATABASE_URL that sets jit itself keeps its choice).
        options = config.setdefault("OPTIONS", {})
        server_options = options.get("options", "")
        if "jit" not in server_options:
            options["options"] = f"{server_options} -c jit=off".strip()
    return config


@dataclass(frozen=True)
class BrokerConfig:
    url: str
    transport_options: dict


def broker_config(url: str | None, *, var_dir: Path) -> BrokerConfig:
    """Celery broker URL and transport options; the embedded default is kombu's file-system one."""
    if not url or url.strip() in {"filesystem://", "filesystem:///"}:
        folder = var_dir / "broker"
        return BrokerConfig(
            # kombu ignores the host for this transport but warns when none is given.
            url="filesystem://localhost/",
            transport_options={
                "data_folder_in": str(folder / "queue"),
                "data_folder_out": str(folder / "queue"),
                "processed_folder": str(folder / "processed"),
                # Broadcast (remote control) messages; kombu's default is ./control in the cwd.
                "control_folder": str(folder / "control"),
                "store_processed": False,
            },
        )
    scheme = urlparse(url).scheme
    if scheme not in {"redis", "rediss", "amqp", "amqps", "pyamqp", "sqs", "memory"}:
        raise ConfigurationError(
            f"CELERY_BROKER_URL scheme {scheme!r} is not supported; use redis://, amqp:// or "
            "leave it unset for the embedded file-system broker."
        )
    # A task that is re-delivered after a worker dies must be visible again well before a human
    # notices; one hour is longer than any single task step we run.
    options = {"visibility_timeout": 3600} if scheme.startswith("redis") else {}
    return BrokerConfig(url=url, transport_options=options)


@dataclass(frozen=True)
class ArtifactStore:
    kind: str  # "local" or "s3"
    root: str  # a directory for local, "bucket/prefix" for s3

    @property
    def uri(self) -> str:
        return self.root if self.kind == "local" else f"s3://{self.root}"


def artifact_store(value: str | None, *, var_dir: Path) -> ArtifactStore:
    """Where artifacts live: a local directory (default var/artifacts) or ``s3://bucket/prefix``."""
    if not value:
        return ArtifactStore(kind="local", root=str(var_dir / "artifacts"))
    if value.startswith("s3://"):
        parsed = urlparse(value)
        if not parsed.netloc:
            raise ConfigurationError("ARTIFACT_STORE s3:// URI must name a bucket.")
        prefix = parsed.path.strip("/")
        return ArtifactStore(kind="s3", root=f"{parsed.netloc}/{prefix}".rstrip("/"))
    if "://" in value and not value.startswith("file://"):
        raise ConfigurationError(
            f"ARTIFACT_STORE must be a directory or an s3:// URI; got {value!r}."
        )
    path = Path(value.removeprefix("file://")).expanduser()
    return ArtifactStore(kind="local", root=str(path.resolve()))


def secret_key(value: str | None, *, profile: str, var_dir: Path) -> str:
    """The SECRET_KEY: required in production, generated once into var/ in embedded mode."""
    if value:
        return value
    if profile == "production":
        raise ConfigurationError("SECRET_KEY must be set when TENANTML_PROFILE=production.")
    path = var_dir / SECRET_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    # Create exclusively so two processes starting together agree on one key.
    try:
        with open(path, "x") as handle:
            handle.write(key)
        path.chmod(0o600)
    except FileExistsError:
        return path.read_text().strip()
    return key


def allowed_hosts(value: list[str], *, profile: str) -> list[str]:
    """ALLOWED_HOSTS; production must name its hosts explicitly."""
    if value:
        return value
    if profile == "production":
        raise ConfigurationError("ALLOWED_HOSTS must be set when TENANTML_PROFILE=production.")
    return ["localhost", "127.0.0.1", "[::1]", "testserver"]
