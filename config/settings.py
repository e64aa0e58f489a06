"""TenantML settings: one module, every value from the environment (see the README's table)."""

from __future__ import annotations

from pathlib import Path

import environ
from kombu import Exchange, Queue

from config import env as parse
from config.logs import LOG_FORMATS, logging_config
from config.openapi_tags import API_TAGS
from config.throttling import parse_rate

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

TENANTML_PROFILE = parse.parse_profile(env.str("TENANTML_PROFILE", default="embedded"))
PRODUCTION = TENANTML_PROFILE == "production"
VAR_DIR = Path(env.str("TENANTML_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = parse.secret_key(
    env.str("SECRET_KEY", default=""), profile=TENANTML_PROFILE, var_dir=VAR_DIR
)
ALLOWED_HOSTS = parse.allowed_hosts(env.list("ALLOWED_HOSTS", default=[]), profile=TENANTML_PROFILE)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_celery_beat",
    "tenants",
    "webhooks",
    "models_registry",
    "deployments",
]

MIDDLEWARE = [
    # First, so every later middleware's log lines carry the request's id.
    "config.request_id.request_id_middleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # The dashboard's filters live with the dashboard, not in an app's templatetags/.
            "libraries": {"dashboard_tags": "deployments.dashboard.templatetags"},
        },
    },
]

DATABASES = {"default": parse.database_config(env.str("DATABASE_URL", default=""), var_dir=VAR_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
# The embedded profile serves static files straight from the apps, with no collectstatic step.
WHITENOISE_USE_FINDERS = not PRODUCTION
MEDIA_ROOT = VAR_DIR / "media"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

# --- Security: on by default in production, each overridable for a TLS-terminating proxy ---
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https")
    if env.bool("TRUST_X_FORWARDED_PROTO", default=False)
    else None
)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=PRODUCTION)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# --- Uploads: the API enforces its own per-field limits; this bounds what Django buffers ---
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=10 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- Artifacts ---
ARTIFACT_STORE = parse.artifact_store(env.str("ARTIFACT_STORE", default=""), var_dir=VAR_DIR)

# --- Celery ---
_broker = parse.broker_config(env.str("CELERY_BROKER_URL", default=""), var_dir=VAR_DIR)
CELERY_BROKER_URL = _broker.url
CELERY_BROKER_TRANSPORT_OPTIONS = _broker.transport_options
# kombu's file-system transport expects its folders to exist; so does whitenoise's static root.
for _folder in (
    *(
        CELERY_BROKER_TRANSPORT_OPTIONS.get(key)
        for key in ("data_folder_in", "processed_folder", "control_folder")
    ),
    STATIC_ROOT if not PRODUCTION else None,
):
    if _folder:
        Path(_folder).mkdir(parents=True, exist_ok=True)
# Tasks write their outcome to the database (jobs, placements, events); Celery results are unused.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# Acknowledge after the task finishes so a killed worker's task is delivered again; every task is
# written to be idempotent for that reason.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Two queues: training and packaging (minutes to an hour each) on their own, with their own
# worker, so that a long training never holds up the minute passes and rollouts on the default
# queue. `manage.py up`, the Procfile and docker-compose.yml start one worker per queue; a worker
# started without -Q consumes both.
TENANTML_DEFAULT_QUEUE = "celery"
TENANTML_TRAINING_QUEUE = "training"
CELERY_TASK_DEFAULT_QUEUE = TENANTML_DEFAULT_QUEUE
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name), routing_key=name)
    for name in (TENANTML_DEFAULT_QUEUE, TENANTML_TRAINING_QUEUE)
]
TENANTML_TRAINING_TASKS = ("models_registry.tasks.run_training_job",)
TENANTML_PACKAGING_TASKS = (
    "models_registry.tasks.package_version",
    "models_registry.tasks.package_trained_version",
)
CELERY_TASK_ROUTES = {
    name: {"queue": TENANTML_TRAINING_QUEUE}
    for name in (*TENANTML_TRAINING_TASKS, *TENANTML_PACKAGING_TASKS)
}
# Tasks the training worker runs at once: each local training is a process that uses the cores
# it finds, so more than one at a time mostly makes each slower.
TENANTML_TRAINING_WORKER_CONCURRENCY = env.int("TRAINING_WORKER_CONCURRENCY", default=1)

# Periodic work, written into django-celery-beat's tables on migrate (operators then edit the
# schedule in the admin; a later migrate never overwrites an operator's change). A pass that no
# worker has started within expire_seconds, below its interval, is dropped: the next one is due,
# and a backlog left by an outage must not run stale passes one after another.
TENANTML_PERIODIC_TASKS = [
    {
        "name": "Sample fleet utilization",
        "task": "deployments.tasks.sample_fleet_utilization",
        "every_seconds": 60,
        "expire_seconds": 50,
    },
    {
        "name": "Reconcile training jobs",
        "task": "models_registry.tasks.reconcile_training_jobs",
        "every_seconds": 60,
        "expire_seconds": 50,
    },
    {
        "name": "Reconcile deployments",
        "task": "deployments.tasks.reconcile_fleet",
        "every_seconds": 60,
        "expire_seconds": 50,
    },
    {
        "name": "Warm up placed models",
        "task": "deployments.tasks.warm_up_fleet",
        "every_seconds": 3600,
        "expire_seconds": 3000,
    },
    {
        "name": "Follow SageMaker training jobs",
        "task": "models_registry.tasks.follow_sagemaker_jobs",
        "every_seconds": 60,
        "expire_seconds": 50,
    },
    {
        "name": "Read CloudWatch metrics",
        "task": "deployments.tasks.read_cloud_metrics",
        "every_seconds": 60,
        "expire_seconds": 50,
    },
    {
        "name": "Decide canary and shadow rollouts",
        "task": "deployments.tasks.evaluate_candidates",
        "every_seconds": 60,
        "expire_seconds": 50,
    },
    {
        # Applies only where REBALANCE_MIN_SAVING_USD_MONTH is set and the saving reaches it.
        "name": "Rebalance the local fleet when it saves enough",
        "task": "deployments.tasks.rebalance_if_worth_it",
        "every_seconds": 3600,
        "expire_seconds": 3000,
    },
    {
        "name": "Delete captured requests past their retention",
        "task": "deployments.tasks.delete_expired_capture",
        "every_seconds": 3600,
        "expire_seconds": 3000,
    },
    {
        "name": "Sweep webhook deliveries",
        "task": "webhooks.tasks.sweep_webhook_deliveries",
        "every_seconds": 60,
        "expire_seconds": 50,
    },
]

# --- Webhooks (docs/webhooks.md) ---
# A delivery is attempted at most WEBHOOK_MAX_ATTEMPTS times, and never later than
# WEBHOOK_RETRY_WINDOW_S after its event (or its redelivery); the wait before attempt n is
# WEBHOOK_RETRY_BASE_S x 2^(n-2), at most WEBHOOK_RETRY_MAX_DELAY_S, of which a random 50-100 %.
TENANTML_WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=10)
TENANTML_WEBHOOK_RETRY_WINDOW_S = env.float("WEBHOOK_RETRY_WINDOW_S", default=86400.0)
TENANTML_WEBHOOK_RETRY_BASE_S = env.float("WEBHOOK_RETRY_BASE_S", default=30.0)
TENANTML_WEBHOOK_RETRY_MAX_DELAY_S = env.float("WEBHOOK_RETRY_MAX_DELAY_S", default=3600.0)
# Seconds one POST may take before it counts as unanswered.
TENANTML_WEBHOOK_TIMEOUT_S = env.float("WEBHOOK_TIMEOUT_S", default=10.0)
# A delivery due this long that no worker took (its message lost with a worker) is queued again
# by the sweep.
TENANTML_WEBHOOK_SWEEP_GRACE_S = env.float("WEBHOOK_SWEEP_GRACE_S", default=60.0)
# Finished deliveries (succeeded or failed) older than this are deleted by the sweep.
TENANTML_WEBHOOK_RETENTION_DAYS = env.int("WEBHOOK_RETENTION_DAYS", default=30)
# Plain http:// webhooks to localhost / 127.0.0.1 (development and tests); https:// otherwise.
TENANTML_WEBHOOK_ALLOW_HTTP_LOCALHOST = env.bool("WEBHOOK_ALLOW_HTTP_LOCALHOST", default=False)
for _name, _count in {
    "WEBHOOK_MAX_ATTEMPTS": TENANTML_WEBHOOK_MAX_ATTEMPTS,
    "WEBHOOK_RETENTION_DAYS": TENANTML_WEBHOOK_RETENTION_DAYS,
}.items():
    if _count < 1:
        raise parse.ConfigurationError(f"{_name} must be at least 1, not {_count}.")
for _name, _seconds in {
    "WEBHOOK_RETRY_WINDOW_S": TENANTML_WEBHOOK_RETRY_WINDOW_S,
    "WEBHOOK_RETRY_BASE_S": TENANTML_WEBHOOK_RETRY_BASE_S,
    "WEBHOOK_RETRY_MAX_DELAY_S": TENANTML_WEBHOOK_RETRY_MAX_DELAY_S,
    "WEBHOOK_TIMEOUT_S": TENANTML_WEBHOOK_TIMEOUT_S,
    "WEBHOOK_SWEEP_GRACE_S": TENANTML_WEBHOOK_SWEEP_GRACE_S,
}.items():
    if not _seconds > 0:
        raise parse.ConfigurationError(f"{_name} must be more than 0 seconds, not {_seconds}.")

# --- Datasets ---
# What an upload with the same text under two labels gets (after case and whitespace folding):
# "refuse" (a 400 naming the rows) or "keep" (stored, with a warning naming them). An upload may
# choose otherwise with its conflicting_labels field. Repeats under the same label are always
# dropped with a warning.
TENANTML_DATASET_CONFLICTING_LABELS = env.str("DATASET_CONFLICTING_LABELS", default="refuse")
if TENANTML_DATASET_CONFLICTING_LABELS not in ("refuse", "keep"):
    raise parse.ConfigurationError(
        "DATASET_CONFLICTING_LABELS must be refuse or keep, not "
        f"{TENANTML_DATASET_CONFLICTING_LABELS!r}."
    )

# --- Training ---
# How much worse (absolute, in the kind's primary metric) a new version may score than the active
# one and still be promoted automatically.
TENANTML_QUALITY_GATE_TOLERANCE = env.float("QUALITY_GATE_TOLERANCE", default=0.01)
# A local training process running longer than this is stopped and the job failed.
TENANTML_TRAINING_TIMEOUT_S = env.int("TRAINING_TIMEOUT_S", default=1800)
# SageMaker training jobs: the execution role they run as (none: SageMaker training is off), the
# region, and the instance type. Their inputs and outputs live in the s3:// ARTIFACT_STORE.
TENANTML_SAGEMAKER_ROLE_ARN = env.str("SAGEMAKER_ROLE_ARN", default="")
TENANTML_AWS_REGION = env.str("AWS_REGION", default="us-east-1")
TENANTML_SAGEMAKER_TRAINING_INSTANCE_TYPE = env.str(
    "SAGEMAKER_TRAINING_INSTANCE_TYPE", default="ml.m5.xlarge"
)
# SageMaker managed warm pools: seconds a training job's instances stay provisioned after it ends
# (ResourceConfig.KeepAlivePeriodInSeconds) so the next matching launch starts on them; billed
# while kept. 0 turns warm pools off; AWS allows at most 3600.
TENANTML_SAGEMAKER_TRAINING_WARM_POOL_S = env.int("SAGEMAKER_TRAINING_WARM_POOL_SECONDS", default=0)
if not 0 <= TENANTML_SAGEMAKER_TRAINING_WARM_POOL_S <= 3600:
    raise parse.ConfigurationError(
        "SAGEMAKER_TRAINING_WARM_POOL_SECONDS must be 0 (off) to 3600, not "
        f"{TENANTML_SAGEMAKER_TRAINING_WARM_POOL_S}."
    )
# Batch training (docs/operations.md "Batch training"): when a SageMaker launch finds at least
# TRAINING_BATCH_MIN_JOBS queued jobs of its kind and hyperparameters (0 turns batching off), they
# train together in one multi-instance training job: N jobs on N / TRAINING_BATCH_TASKS_PER_INSTANCE
# instances (rounded up, at most TRAINING_BATCH_MAX_INSTANCES), each training its share in turn.
TENANTML_TRAINING_BATCH_MIN_JOBS = env.int("TRAINING_BATCH_MIN_JOBS", default=4)
TENANTML_TRAINING_BATCH_MAX_INSTANCES = env.int("TRAINING_BATCH_MAX_INSTANCES", default=4)
TENANTML_TRAINING_BATCH_TASKS_PER_INSTANCE = env.int("TRAINING_BATCH_TASKS_PER_INSTANCE", default=4)
if TENANTML_TRAINING_BATCH_MIN_JOBS == 1 or TENANTML_TRAINING_BATCH_MIN_JOBS < 0:
    raise parse.ConfigurationError(
        "TRAINING_BATCH_MIN_JOBS must be 0 (off) or at least 2, not "
        f"{TENANTML_TRAINING_BATCH_MIN_JOBS}."
    )
for _name, _value in {
    "TRAINING_BATCH_MAX_INSTANCES": TENANTML_TRAINING_BATCH_MAX_INSTANCES,
    "TRAINING_BATCH_TASKS_PER_INSTANCE": TENANTML_TRAINING_BATCH_TASKS_PER_INSTANCE,
}.items():
    if _value < 1:
        raise parse.ConfigurationError(f"{_name} must be at least 1, not {_value}.")

# --- Task time limits (seconds) ---
# At a task's soft limit the task is interrupted and records why (a training job fails with the
# limit in its reason, its process stopped); TASK_TIME_LIMIT_GRACE_S later the hard limit kills
# whatever did not stop. A local training task trains (stopped by TRAINING_TIMEOUT_S on its own),
# then packages its version and puts it to the quality gate; by default it gets half an hour more
# than the training itself.
TENANTML_TASK_TIME_LIMIT_GRACE_S = env.int("TASK_TIME_LIMIT_GRACE_S", default=60)
TENANTML_TRAINING_TASK_TIME_LIMIT_S = env.int(
    "TRAINING_TASK_TIME_LIMIT_S", default=TENANTML_TRAINING_TIMEOUT_S + 1800
)
TENANTML_PACKAGING_TASK_TIME_LIMIT_S = env.int("PACKAGING_TASK_TIME_LIMIT_S", default=900)
# The minute passes (sampler, reconcilers, SageMaker follower) and the hourly warm-up.
TENANTML_PERIODIC_TASK_TIME_LIMIT_S = env.int("PERIODIC_TASK_TIME_LIMIT_S", default=300)
TENANTML_WARMUP_TASK_TIME_LIMIT_S = env.int("WARMUP_TASK_TIME_LIMIT_S", default=1800)
# Every other task (rollouts, retirements, SageMaker launches).
TENANTML_TASK_TIME_LIMIT_S = env.int("TASK_TIME_LIMIT_S", default=900)
for _name, _limit in {
    "TASK_TIME_LIMIT_GRACE_S": TENANTML_TASK_TIME_LIMIT_GRACE_S,
    "TRAINING_TASK_TIME_LIMIT_S": TENANTML_TRAINING_TASK_TIME_LIMIT_S,
    "PACKAGING_TASK_TIME_LIMIT_S": TENANTML_PACKAGING_TASK_TIME_LIMIT_S,
    "PERIODIC_TASK_TIME_LIMIT_S": TENANTML_PERIODIC_TASK_TIME_LIMIT_S,
    "WARMUP_TASK_TIME_LIMIT_S": TENANTML_WARMUP_TASK_TIME_LIMIT_S,
    "TASK_TIME_LIMIT_S": TENANTML_TASK_TIME_LIMIT_S,
}.items():
    if _limit < 1:
        raise parse.ConfigurationError(f"{_name} must be at least 1 second, not {_limit}.")
_soft_time_limits = {
    **dict.fromkeys(TENANTML_TRAINING_TASKS, TENANTML_TRAINING_TASK_TIME_LIMIT_S),
    **dict.fromkeys(TENANTML_PACKAGING_TASKS, TENANTML_PACKAGING_TASK_TIME_LIMIT_S),
    **{
        spec["task"]: (
            TENANTML_WARMUP_TASK_TIME_LIMIT_S
            if spec["task"] == "deployments.tasks.warm_up_fleet"
            else TENANTML_PERIODIC_TASK_TIME_LIMIT_S
        )
        for spec in TENANTML_PERIODIC_TASKS
    },
}
CELERY_TASK_SOFT_TIME_LIMIT = TENANTML_TASK_TIME_LIMIT_S
CELERY_TASK_TIME_LIMIT = TENANTML_TASK_TIME_LIMIT_S + TENANTML_TASK_TIME_LIMIT_GRACE_S
CELERY_TASK_ANNOTATIONS = {
    name: {"soft_time_limit": soft, "time_limit": soft + TENANTML_TASK_TIME_LIMIT_GRACE_S}
    for name, soft in _soft_time_limits.items()
}

# --- Deployments ---
# Where deployments go unless a request says otherwise: "local" (Triton processes on this
# machine) or "sagemaker" (needs SAGEMAKER_ROLE_ARN and an s3:// ARTIFACT_STORE).
TENANTML_DEPLOY_BACKEND = env.str("DEPLOY_BACKEND", default="local")
# The Triton image SageMaker endpoints run (empty: AWS's sagemaker-tritonserver image of
# SAGEMAKER_TRITON_VERSION for the region) and the Python version of that image's python
# backend: packages for SageMaker vendor what the kind's model imports beyond numpy, built for
# this Python (24.09 images run Python 3.10; the local stand-in prints its own).
TENANTML_SAGEMAKER_TRITON_VERSION = env.str("SAGEMAKER_TRITON_VERSION", default="24.09")
TENANTML_SAGEMAKER_TRITON_IMAGE = env.str("SAGEMAKER_TRITON_IMAGE", default="")
TENANTML_SAGEMAKER_IMAGE_PYTHON = env.str("SAGEMAKER_IMAGE_PYTHON", default="3.10")
# What happens to a shared SageMaker endpoint (MME or inference components) left with no model:
# "delete" it with its configs, models, scaling targets and S3 prefix (nothing bills), or
# "keep" it at its minimum instances for a faster next deploy.
TENANTML_SAGEMAKER_EMPTY_ENDPOINT_POLICY = env.str(
    "SAGEMAKER_EMPTY_ENDPOINT_POLICY", default="delete"
)
if TENANTML_SAGEMAKER_EMPTY_ENDPOINT_POLICY not in ("delete", "keep"):
    raise parse.ConfigurationError(
        "SAGEMAKER_EMPTY_ENDPOINT_POLICY must be delete or keep, not "
        f"{TENANTML_SAGEMAKER_EMPTY_ENDPOINT_POLICY!r}."
    )
# How long after a switch the version kept for rollback keeps its SageMaker resources (its MME
# archive, IC model or dedicated endpoint): rolling back within it is a probe and a row update,
# after it a redeploy. 0 retires them at the reconciler's next pass.
TENANTML_SAGEMAKER_ROLLBACK_WINDOW_MINUTES = env.int(
    "SAGEMAKER_ROLLBACK_WINDOW_MINUTES", default=30
)
# Whether the reconciler deletes SageMaker resources named tml-* (and S3 objects under the
# platform's endpoints/ prefix) that the database does not know; off, it reports them as events.
TENANTML_SAGEMAKER_DELETE_ORPHANS = env.bool("SAGEMAKER_DELETE_ORPHANS", default=False)
# Whether inference-component endpoints may release their last instance when every component on
# them is at zero copies (managed instance scaling's MinInstanceCount 0). Off by default: the
# instances are shared by every tenant model of the kind, and bringing one back takes minutes on
# AWS (a copy on a kept instance starts in about a minute), so an operator opts into that wait
# for the instance's price. Copies of unpinned models scale to zero either way. Applies to
# endpoints created after it is set.
TENANTML_SAGEMAKER_SCALE_INSTANCES_TO_ZERO = env.bool(
    "SAGEMAKER_SCALE_INSTANCES_TO_ZERO", default=False
)
# The share of a copy's measured peak rate its invocations-per-copy target tracks (SageMaker's
# load-testing guide starts at 0.5: room for bursts while another copy starts).
TENANTML_SAGEMAKER_COPY_SAFETY_FACTOR = env.float("SAGEMAKER_COPY_SAFETY_FACTOR", default=0.5)
if not 0 < TENANTML_SAGEMAKER_COPY_SAFETY_FACTOR <= 1:
    raise parse.ConfigurationError(
        "SAGEMAKER_COPY_SAFETY_FACTOR must be in (0, 1], not "
        f"{TENANTML_SAGEMAKER_COPY_SAFETY_FACTOR!r}."
    )
# How long a copy is expected to take to start from zero before any start of that component was
# measured and SageMaker gave no estimate: the Retry-After a caller of a scaled-to-zero model
# gets then (measured starts replace it).
TENANTML_SAGEMAKER_SCALE_FROM_ZERO_WAIT_S = env.float(
    "SAGEMAKER_SCALE_FROM_ZERO_WAIT_S", default=60.0
)
# The hourly warm-up skips models invoked within this many seconds (they are warm already).
TENANTML_WARMUP_SKIP_RECENT_S = env.int("WARMUP_SKIP_RECENT_S", default=1800)
# What the hourly warm-up pass does (deployments.placement.warmup_plan): "predictive" loads the
# models likely to be called in the coming hour, from their usage by hour of the week, and
# leaves the unlikely ones to go cold; "hourly-skip-recent" warms every placed model not used
# within WARMUP_SKIP_RECENT_S, "hourly-all" every placed model.
TENANTML_WARMUP_POLICY = env.str("WARMUP_POLICY", default="predictive")
if TENANTML_WARMUP_POLICY not in ("predictive", "hourly-skip-recent", "hourly-all"):
    raise parse.ConfigurationError(
        "WARMUP_POLICY must be predictive, hourly-skip-recent or hourly-all, not "
        f"{TENANTML_WARMUP_POLICY!r}."
    )
# A predictive pass loads a cold model when its chance of a request in the coming hour is at
# least this (bench/warmup.py compares 0.3, 0.5 and 0.7).
TENANTML_WARMUP_MIN_PROBABILITY = env.float("WARMUP_MIN_PROBABILITY", default=0.5)
if not 0 < TENANTML_WARMUP_MIN_PROBABILITY <= 1:
    raise parse.ConfigurationError(
        f"WARMUP_MIN_PROBABILITY must be above 0 and at most 1, not "
        f"{TENANTML_WARMUP_MIN_PROBABILITY}."
    )
# A rebalance of the local fleet (packing its copies afresh onto fewer instances) runs by itself
# when it would save at least this many USD a month; unset, only when asked (API, admin,
# dashboard).
TENANTML_REBALANCE_MIN_SAVING_USD_MONTH = env.float("REBALANCE_MIN_SAVING_USD_MONTH", default=None)
if (
    TENANTML_REBALANCE_MIN_SAVING_USD_MONTH is not None
    and TENANTML_REBALANCE_MIN_SAVING_USD_MONTH < 0
):
    raise parse.ConfigurationError(
        "REBALANCE_MIN_SAVING_USD_MONTH must be 0 or more, not "
        f"{TENANTML_REBALANCE_MIN_SAVING_USD_MONTH}."
    )
# The reconciler reloads an unpinned model after an instance restart if it was invoked within
# this many seconds ("hot").
TENANTML_HOT_MODEL_WINDOW_S = env.int("HOT_MODEL_WINDOW_S", default=3600)
# The memory the tenants' heads may hold on one shared-base instance, in MB (0: the instance's
# budget less its shared encoder's measured memory); heads beyond it are evicted, least valuable
# first, as models are.
TENANTML_SHARED_BASE_HEAD_BUDGET_MB = env.float("SHARED_BASE_HEAD_BUDGET_MB", default=0.0)
if TENANTML_SHARED_BASE_HEAD_BUDGET_MB < 0:
    raise parse.ConfigurationError(
        "SHARED_BASE_HEAD_BUDGET_MB must be 0 or more MB, not "
        f"{TENANTML_SHARED_BASE_HEAD_BUDGET_MB}."
    )
# How many instances a reconciler pass asks at once whether they live and what they hold, and
# how many instances (or SageMaker endpoints) a warm-up pass sends requests to at once (one
# request at a time each). The database work of both stays in the pass's own thread.
TENANTML_RECONCILE_CONCURRENCY = env.int("RECONCILE_CONCURRENCY", default=16)
TENANTML_WARMUP_CONCURRENCY = env.int("WARMUP_CONCURRENCY", default=16)

# Which loaded model makes room for a cold one: "frequency" (requests per MB, decayed; keeps
# popular tenants' models through bursts of rare ones) or "lru" (least recently used, as
# SageMaker multi-model endpoints do).
TENANTML_EVICTION_POLICY = env.str("EVICTION_POLICY", default="frequency")
if TENANTML_EVICTION_POLICY not in ("frequency", "lru"):
    raise parse.ConfigurationError(
        f"EVICTION_POLICY must be frequency or lru, not {TENANTML_EVICTION_POLICY!r}."
    )
# Memory budgets of local instances (docs/operations.md, "Memory budgets of local instances"):
# the running local instances share the memory the platform may use (cgroup limit or total),
# less what its own processes hold (measured, at least LOCAL_MEMORY_RESERVE_MB, plus each Triton's
# baseline). LOCAL_MEMORY_BUDGET_MB replaces that total for all of them (0: from the machine), and
# is capped at what the machine has. LOCAL_MACHINE_ROOT is where /proc and /sys are read.
TENANTML_LOCAL_MEMORY_BUDGET_MB = env.int("LOCAL_MEMORY_BUDGET_MB", default=0)
TENANTML_LOCAL_MEMORY_RESERVE_MB = env.int("LOCAL_MEMORY_RESERVE_MB", default=2048)
TENANTML_LOCAL_MACHINE_ROOT = env.str("LOCAL_MACHINE_ROOT", default="/")
for _name, _value in {
    "LOCAL_MEMORY_BUDGET_MB": TENANTML_LOCAL_MEMORY_BUDGET_MB,
    "LOCAL_MEMORY_RESERVE_MB": TENANTML_LOCAL_MEMORY_RESERVE_MB,
}.items():
    if _value < 0:
        raise parse.ConfigurationError(f"{_name} must be 0 or more MB, not {_value}.")
# Headroom on local instances: once the models resident on an instance (loads in flight
# included) cross EVICTION_HIGH_WATERMARK of its memory budget, or leave less room than its
# largest model takes, a background evictor in the serving process unloads the least valuable
# ones down to EVICTION_LOW_WATERMARK, so a cold load finds room instead of waiting for an unload.
# A high watermark of 1 turns the background evictor off (loads then make room themselves).
TENANTML_EVICTION_HIGH_WATERMARK = env.float("EVICTION_HIGH_WATERMARK", default=0.9)
TENANTML_EVICTION_LOW_WATERMARK = env.float("EVICTION_LOW_WATERMARK", default=0.75)
if not 0 < TENANTML_EVICTION_LOW_WATERMARK <= TENANTML_EVICTION_HIGH_WATERMARK <= 1:
    raise parse.ConfigurationError(
        "EVICTION_LOW_WATERMARK and EVICTION_HIGH_WATERMARK must satisfy 0 < low <= high <= 1, "
        f"not low {TENANTML_EVICTION_LOW_WATERMARK!r} and high "
        f"{TENANTML_EVICTION_HIGH_WATERMARK!r}."
    )
# Serving processes add their in-memory request counters to the minute time series this often
# (seconds; 0 = only on demand).
TENANTML_USAGE_FLUSH_INTERVAL_S = env.int("USAGE_FLUSH_INTERVAL_S", default=15)
# Request capture (docs/deployments.md): a serving process buffers up to CAPTURE_BUFFER_RECORDS
# sampled requests (beyond, they are dropped and counted); its writer thread stores them every
# CAPTURE_FLUSH_INTERVAL_S seconds (0: only on demand); a model's capture settings are re-read
# every CAPTURE_SETTINGS_TTL_S seconds.
TENANTML_CAPTURE_BUFFER_RECORDS = env.int("CAPTURE_BUFFER_RECORDS", default=10000)
TENANTML_CAPTURE_FLUSH_INTERVAL_S = env.float("CAPTURE_FLUSH_INTERVAL_S", default=1.0)
TENANTML_CAPTURE_SETTINGS_TTL_S = env.float("CAPTURE_SETTINGS_TTL_S", default=10.0)
# The CloudWatch pass (every minute) reads each SageMaker endpoint's last minutes of CloudWatch
# figures: this many minutes back (or back to the last pass after an outage, at most three
# hours), so datapoints CloudWatch publishes late are caught; a minute read again is
# overwritten. Its rows older than CLOUD_METRICS_RETENTION_DAYS are deleted.
TENANTML_CLOUD_METRICS_LOOKBACK_MINUTES = env.int("CLOUD_METRICS_LOOKBACK_MINUTES", default=10)
TENANTML_CLOUD_METRICS_RETENTION_DAYS = env.int("CLOUD_METRICS_RETENTION_DAYS", default=7)
for _name, _value in {
    "CLOUD_METRICS_LOOKBACK_MINUTES": TENANTML_CLOUD_METRICS_LOOKBACK_MINUTES,
    "CLOUD_METRICS_RETENTION_DAYS": TENANTML_CLOUD_METRICS_RETENTION_DAYS,
}.items():
    if _value < 1:
        raise parse.ConfigurationError(f"{_name} must be at least 1, not {_value}.")

# --- Model packages ---
# Unpacking a model.tar.gz (Triton packages, training artifacts) stops with "invalid package"
# (422) beyond this many bytes written or this many members: a small archive can expand to
# gigabytes (a decompression bomb). Checked from the headers first, then enforced while writing.
TENANTML_PACKAGE_MAX_UNPACKED_BYTES = env.int("PACKAGE_MAX_UNPACKED_BYTES", default=4 * 1024**3)
TENANTML_PACKAGE_MAX_MEMBERS = env.int("PACKAGE_MAX_MEMBERS", default=10_000)

# --- Inference proxy ---
# Largest request body the proxy accepts (413 above), in bytes.
TENANTML_PROXY_MAX_BODY_BYTES = env.int("PROXY_MAX_BODY_BYTES", default=4 * 1024 * 1024)
# Per-tenant request rate (per web process) and burst; 0 turns the limit off.
TENANTML_PROXY_RATE_LIMIT_RPS = env.float("PROXY_RATE_LIMIT_RPS", default=200.0)
TENANTML_PROXY_RATE_LIMIT_BURST = env.float("PROXY_RATE_LIMIT_BURST", default=400.0)
# Requests in flight per copy before the proxy answers 503 (overload) instead of queueing.
TENANTML_PROXY_MAX_OUTSTANDING_PER_COPY = env.int("PROXY_MAX_OUTSTANDING_PER_COPY", default=64)
# Canary and shadow rollouts (docs/deployments.md): copies of live requests a serving process
# sends a new version at once (beyond, a copy is dropped and counted), the share of a canary's
# live-version requests also copied to the canary to compare answers, and the live gate: it
# decides once the new version has CANARY_MIN_REQUESTS requests, or CANARY_MIN_MINUTES have
# passed with at least one; it promotes when the error rate is at most CANARY_MAX_ERROR_RATE,
# the p99 latency at most CANARY_MAX_P99_RATIO times the live version's (or CANARY_MAX_P99_MS,
# whichever is larger) and the agreement with the live answers at least CANARY_MIN_AGREEMENT.
TENANTML_SHADOW_MAX_IN_FLIGHT = env.int("SHADOW_MAX_IN_FLIGHT", default=32)
TENANTML_CANARY_MIRROR_SHARE = env.float("CANARY_MIRROR_SHARE", default=0.05)
TENANTML_CANARY_MIN_REQUESTS = env.int("CANARY_MIN_REQUESTS", default=200)
TENANTML_CANARY_MIN_MINUTES = env.float("CANARY_MIN_MINUTES", default=30.0)
TENANTML_CANARY_MAX_ERROR_RATE = env.float("CANARY_MAX_ERROR_RATE", default=0.01)
TENANTML_CANARY_MAX_P99_RATIO = env.float("CANARY_MAX_P99_RATIO", default=2.0)
TENANTML_CANARY_MAX_P99_MS = env.float("CANARY_MAX_P99_MS", default=50.0)
TENANTML_CANARY_MIN_AGREEMENT = env.float("CANARY_MIN_AGREEMENT", default=0.9)
# How long a route and a token stay cached without a change notice, in seconds.
TENANTML_PROXY_ROUTE_TTL_S = env.float("PROXY_ROUTE_TTL_S", default=30.0)
TENANTML_PROXY_AUTH_TTL_S = env.float("PROXY_AUTH_TTL_S", default=10.0)
# While the database cannot be reached, routes and tokens this process knew are used this long
# past their TTL, so traffic is answered through a database restart or failover.
TENANTML_PROXY_STALE_WHILE_DATABASE_DOWN_S = env.float(
    "PROXY_STALE_WHILE_DATABASE_DOWN_S", default=300.0
)
TENANTML_PROXY_UPSTREAM_TIMEOUT_S = env.float("PROXY_UPSTREAM_TIMEOUT_S", default=60.0)
# Most connections a web process keeps open to one serving instance (requests beyond wait).
TENANTML_PROXY_UPSTREAM_CONNECTIONS = env.int("PROXY_UPSTREAM_CONNECTIONS", default=256)
# Most inputs (rows) one inference request may carry, on every protocol; the proxy splits them
# at the model's batch size (32) and answers them in order.
TENANTML_INVOKE_MAX_INPUTS = env.int("INVOKE_MAX_INPUTS", default=1024)
# Versions that get their own label on /metrics; the rest are summed as "other".
TENANTML_PROXY_METRICS_MAX_VERSIONS = env.int("PROXY_METRICS_MAX_VERSIONS", default=200)

# --- REST API ---
# Requests each caller may send to the management API (not invoke: the proxy limits that), per
# web process: "N/second|minute|hour|day", 0 for no limit; beyond it 429 with Retry-After.
TENANTML_API_THROTTLE_TENANT_RATE = parse_rate(
    env.str("API_THROTTLE_TENANT_RATE", default="1200/minute"), name="API_THROTTLE_TENANT_RATE"
)
TENANTML_API_THROTTLE_PLATFORM_RATE = parse_rate(
    env.str("API_THROTTLE_PLATFORM_RATE", default="6000/minute"),
    name="API_THROTTLE_PLATFORM_RATE",
)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # drf-spectacular's, plus the error answers each operation can give (config/openapi.py).
    "DEFAULT_SCHEMA_CLASS": "config.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["tenants.api.throttling.ManagementApiThrottle"],
    "DEFAULT_METADATA_CLASS": "config.metadata.ApiMetadata",
    "EXCEPTION_HANDLER": "config.exceptions.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Every list: ?limit= (default 100, at most 1000) and ?offset=, in one envelope.
    "DEFAULT_PAGINATION_CLASS": "config.pagination.LimitOffsetPagination",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "TenantML API",
    "DESCRIPTION": "Per-tenant model training, deployment and inference.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Request bodies as their own components, with what validation requires of them (a
    # non-blank name, a slug's pattern), so a request the schema allows is one the API accepts.
    "COMPONENT_SPLIT_REQUEST": True,
    # One tag per resource, each described; every operation names its own.
    "TAGS": API_TAGS,
    # Path parameters as the URL resolver accepts them (and database keys fit).
    "PATH_CONVERTER_OVERRIDES": {
        "slug": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
        "int": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    },
    # Training jobs and deployments both have a "backend" (local or SageMaker) with their own
    # labels; name the two enums instead of letting the schema generator guess.
    "ENUM_NAME_OVERRIDES": {
        "TrainingBackendEnum": "models_registry.models.TrainingJob.Backend",
        "QualityGateOutcomeEnum": "models_registry.models.TrainingJob.GateOutcome",
        "ServingBackendEnum": "deployments.models.Endpoint.Backend",
    },
}

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
# "json": one object per line (time, level, logger, message, request_id, exception), what a log
# pipeline reads; "plain": text for a terminal. The web server, the worker and beat all log so.
LOG_FORMAT = env.str("LOG_FORMAT", default="json" if PRODUCTION else "plain").strip().lower()
if LOG_FORMAT not in LOG_FORMATS:
    raise parse.ConfigurationError(f"LOG_FORMAT must be json or plain, not {LOG_FORMAT!r}.")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
LOGGING_CONFIG = "config.logs.configure_logging"
