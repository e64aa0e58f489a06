"""Where models run: instance types, endpoints, their instances, placements, events, usage."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from models_registry.models import ModelVersion, TenantModel
from tenants.models import Tenant

# Request capture's defaults and bounds (docs/deployments.md, "Request capture").
CAPTURE_DEFAULT_SAMPLE_PERCENT = 10.0
CAPTURE_DEFAULT_RETENTION_DAYS = 30
CAPTURE_MAX_RETENTION_DAYS = 3650


class InstanceType(models.Model):
    """One row of the instance catalog; operators edit prices and sizes in the admin."""

    name = models.CharField(max_length=64, unique=True)
    gpu_count = models.PositiveSmallIntegerField(default=0)
    gpu_name = models.CharField(max_length=32, blank=True)
    memory_per_gpu_mb = models.PositiveIntegerField(default=0)
    host_memory_mb = models.PositiveIntegerField()
    vcpus = models.PositiveSmallIntegerField()
    usd_per_hour = models.DecimalField(max_digits=10, decimal_places=4)
    is_local = models.BooleanField(default=False, help_text="Runs on this machine (local backend).")
    available = models.BooleanField(default=True, help_text="Offered to the placement solver.")
    notes = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["usd_per_hour", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(usd_per_hour__gte=0), name="instancetype_price_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(host_memory_mb__gt=0), name="instancetype_host_memory_positive"
            ),
            models.CheckConstraint(condition=Q(vcpus__gt=0), name="instancetype_vcpus_positive"),
            models.CheckConstraint(
                condition=Q(gpu_count=0, memory_per_gpu_mb=0)
                | Q(gpu_count__gt=0, memory_per_gpu_mb__gt=0),
                name="instancetype_gpu_memory_matches_count",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def gpu_memory_mb(self) -> int:
        """Total GPU memory across the instance's GPUs."""
        return self.gpu_count * self.memory_per_gpu_mb


class Endpoint(models.Model):
    class Backend(models.TextChoices):
        LOCAL = "local", "Local Triton"
        SAGEMAKER = "sagemaker", "Amazon SageMaker"

    class Mode(models.TextChoices):
        MME = "mme", "Multi-model endpoint"
        INFERENCE_COMPONENT = "inference-component", "Inference components"
        DEDICATED = "dedicated", "Dedicated (one model)"
        # One loaded base encoder per instance answers every tenant's head (kinds whose registry
        # entry has ``shared_base``); a head is a few KB, loaded and evicted in milliseconds.
        SHARED_BASE = "shared-base", "Shared base (one encoder, many tenant heads)"

    class Status(models.TextChoices):
        CREATING = "creating", "Creating"
        IN_SERVICE = "in_service", "In service"
        UPDATING = "updating", "Updating"
        FAILED = "failed", "Failed"
        RETIRING = "retiring", "Retiring"
        RETIRED = "retired", "Retired"

    name = models.CharField(max_length=63, unique=True)
    backend = models.CharField(max_length=16, choices=Backend.choices, default=Backend.LOCAL)
    mode = models.CharField(max_length=24, choices=Mode.choices, default=Mode.MME)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATING)
    instance_type = models.ForeignKey(
        InstanceType, on_delete=models.PROTECT, related_name="endpoints"
    )
    # One model kind per endpoint keeps the container and memory profile homogeneous.
    model_kind = models.CharField(max_length=50, blank=True)
    min_instances = models.PositiveSmallIntegerField(default=1)
    max_instances = models.PositiveSmallIntegerField(default=1)
    target_memory_utilization = models.DecimalField(
        max_digits=3,
        decimal_places=2,
        default=Decimal("0.80"),
        validators=[MinValueValidator(Decimal("0.05")), MaxValueValidator(Decimal("1.00"))],
    )
    region = models.CharField(max_length=32, blank=True)
    # SageMaker endpoint ARN (empty for local endpoints).
    external_arn = models.CharField(max_length=512, blank=True)
    status_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(min_instances__lte=F("max_instances")),
                name="endpoint_min_le_max_instances",
            ),
            models.CheckConstraint(
                condition=Q(max_instances__gte=1), name="endpoint_max_instances_positive"
            ),
            models.CheckConstraint(
                condition=Q(target_memory_utilization__gt=0) & Q(target_memory_utilization__lte=1),
                name="endpoint_target_utilization_fraction",
            ),
            models.CheckConstraint(
                condition=Q(backend__in=["local", "sagemaker"]), name="endpoint_backend_valid"
            ),
            models.CheckConstraint(
                condition=Q(mode__in=["mme", "inference-component", "dedicated", "shared-base"]),
                name="endpoint_mode_valid",
            ),
        ]
        indexes = [models.Index(fields=["status"], name="endpoint_status")]

    def __str__(self) -> str:
        return self.name


class Instance(models.Model):
    """One machine behind an endpoint: a Triton process locally, an EC2 host on SageMaker."""

    class Status(models.TextChoices):
        STARTING = "starting", "Starting"
        HEALTHY = "healthy", "Healthy"
        UNHEALTHY = "unhealthy", "Unhealthy"
        DRAINING = "draining", "Draining"
        STOPPED = "stopped", "Stopped"

    # Instances that take requests: a starting one answers as soon as its server is up.
    ROUTABLE_STATES = (Status.HEALTHY, Status.STARTING)

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="instances")
    ordinal = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTING)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    metrics_port = models.PositiveIntegerField(null=True, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    external_id = models.CharField(max_length=255, blank=True)
    # The memory models may use on this instance (target utilization × the type's memory, or an
    # operator's override); loads never exceed it.
    memory_budget_mb = models.PositiveIntegerField()
    # The memory the shared base encoder holds on a shared-base endpoint's instance (measured at
    # its load; counted once, whatever the number of tenant heads); null elsewhere or unloaded.
    shared_base_memory_mb = models.FloatField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    # Restarts tried since the instance last answered; the reconciler gives up after a few.
    failed_restarts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    last_health_at = models.DateTimeField(null=True, blank=True)
    status_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["endpoint__name", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "ordinal"], name="instance_unique_ordinal"),
            models.UniqueConstraint(
                fields=["host", "port"],
                condition=Q(port__isnull=False) & ~Q(status="stopped"),
                name="instance_unique_live_port",
            ),
            models.CheckConstraint(
                condition=Q(memory_budget_mb__gt=0), name="instance_budget_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint.name}/{self.ordinal}"


class PlacementQuerySet(models.QuerySet):
    def reachable(self, *, instance_states: tuple[str, ...] = Instance.ROUTABLE_STATES):
        """Wanted copies a request can reach: on an instance in one of ``instance_states`` that
        has an address, or held by the endpoint itself (a backend that places copies on its own
        machines) while that endpoint is in service; never on a retiring endpoint."""
        on_instance = Q(instance__status__in=instance_states, instance__port__isnull=False)
        on_endpoint = Q(instance__isnull=True, endpoint__status=Endpoint.Status.IN_SERVICE)
        return (
            self.filter(on_instance | on_endpoint)
            .exclude(desired_state=Placement.DesiredState.UNLOADED)
            .exclude(endpoint__status__in=[Endpoint.Status.RETIRING, Endpoint.Status.RETIRED])
        )

    def mark_unwanted(self) -> int:
        """Record that nobody wants these copies any more (their backend then unloads them)."""
        return self.update(desired_state=Placement.DesiredState.UNLOADED, updated_at=timezone.now())


class Placement(models.Model):
    """A model version assigned to an endpoint (and, where the platform chooses, an instance)."""

    class DesiredState(models.TextChoices):
        LOADED = "loaded", "Loaded (evictable)"
        PINNED = "pinned", "Pinned (never evicted)"
        UNLOADED = "unloaded", "Unloaded"

    class ActualState(models.TextChoices):
        PENDING = "pending", "Pending"
        LOADING = "loading", "Loading"
        LOADED = "loaded", "Loaded"
        # Chosen to make room and being unloaded: still in memory, no longer evictable.
        EVICTING = "evicting", "Evicting"
        UNLOADED = "unloaded", "Unloaded"
        EVICTED = "evicted", "Evicted"
        FAILED = "failed", "Failed"

    # The states of a copy that holds (or is taking) memory on its instance.
    RESIDENT_STATES = (ActualState.LOADED, ActualState.LOADING, ActualState.EVICTING)

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="placements")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="placements")
    # Null where the backend picks the instance (SageMaker MME) or for inference components.
    instance = models.ForeignKey(
        Instance, null=True, blank=True, on_delete=models.SET_NULL, related_name="placements"
    )
    desired_state = models.CharField(
        max_length=16, choices=DesiredState.choices, default=DesiredState.LOADED
    )
    actual_state = models.CharField(
        max_length=16, choices=ActualState.choices, default=ActualState.PENDING
    )
    copies = models.PositiveSmallIntegerField(default=1)
    min_copies = models.PositiveSmallIntegerField(default=0)
    # Memory measured for this copy on this instance (the version holds the canonical figure).
    host_memory_mb = models.FloatField(null=True, blank=True)
    gpu_memory_mb = models.FloatField(null=True, blank=True)
    load_time_ms = models.FloatField(null=True, blank=True)
    last_warmed_at = models.DateTimeField(null=True, blank=True)
    warmup_latency_ms = models.FloatField(null=True, blank=True)
    last_invoked_at = models.DateTimeField(null=True, blank=True)
    loaded_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    retries = models.PositiveSmallIntegerField(default=0)
    # "host:pid" of the process loading (or evicting) it, so another process can tell a load in
    # progress from one whose process died mid-way (and take it over at once instead of waiting).
    loading_by = models.CharField(max_length=64, blank=True)
    # SageMaker inference-component name, or the MME target-model key.
    external_name = models.CharField(max_length=512, blank=True)
    # On a shared-base endpoint: the digest of the version's head files (``head_digest``),
    # recorded when the head was placed; every load of the head is verified against it.
    head_sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PlacementQuerySet.as_manager()

    class Meta:
        ordering = ["endpoint__name", "-last_invoked_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "instance"],
                condition=Q(instance__isnull=False),
                name="placement_once_per_instance",
            ),
            models.UniqueConstraint(
                fields=["version", "endpoint"],
                condition=Q(instance__isnull=True),
                name="placement_once_per_endpoint_without_instance",
            ),
            models.CheckConstraint(
                condition=Q(min_copies__lte=F("copies")), name="placement_min_le_copies"
            ),
            models.CheckConstraint(
                condition=Q(desired_state__in=["loaded", "pinned", "unloaded"]),
                name="placement_desired_state_valid",
            ),
            models.CheckConstraint(
                condition=Q(
                    actual_state__in=[
                        "pending",
                        "loading",
                        "loaded",
                        "evicting",
                        "unloaded",
                        "evicted",
                        "failed",
                    ]
                ),
                name="placement_actual_state_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["endpoint", "actual_state"], name="placement_endpoint_state"),
            models.Index(fields=["instance", "actual_state"], name="placement_instance_state"),
            models.Index(fields=["version", "actual_state"], name="placement_version_state"),
        ]

    def __str__(self) -> str:
        return f"{self.version} on {self.instance or self.endpoint}"

    @property
    def is_pinned(self) -> bool:
        return self.desired_state == self.DesiredState.PINNED

    @classmethod
    def desired_state_for(cls, *, version: ModelVersion, dedicated: bool = False) -> str:
        """Pinned for a premium tenant's model or a dedicated endpoint's, else evictable."""
        if dedicated or version.model.tenant.models_pinned:
            return cls.DesiredState.PINNED
        return cls.DesiredState.LOADED


class Event(models.Model):
    """Something the platform did and why (reconciler, warm-ups, deploys, training, operators)."""

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=64, help_text='Dotted name, e.g. "placement.evicted".')
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.INFO)
    actor = models.CharField(
        max_length=64, help_text='Who acted: "reconciler", "api", "admin:alice"...'
    )
    message = models.TextField()
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    endpoint = models.ForeignKey(
        Endpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    instance = models.ForeignKey(
        Instance, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["kind", "-created_at"], name="event_kind_recent"),
            models.Index(fields=["tenant", "-created_at"], name="event_tenant_recent"),
            models.Index(fields=["endpoint", "-created_at"], name="event_endpoint_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"


class InstanceUsageMinute(models.Model):
    """One minute of one instance: memory in use and traffic, for utilization and cost charts."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="usage")
    minute = models.DateTimeField()
    host_memory_used_mb = models.FloatField(default=0)
    gpu_memory_used_mb = models.FloatField(default=0)
    models_loaded = models.PositiveIntegerField(default=0)
    invocations = models.PositiveIntegerField(default=0)
    cold_starts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["instance", "minute"], name="instanceusage_one_row_per_minute"
            ),
        ]
        indexes = [models.Index(fields=["minute"], name="instanceusage_minute")]

    def __str__(self) -> str:
        return f"{self.instance} @ {self.minute:%Y-%m-%d %H:%M}"


class TrafficMinute(models.Model):
    """One minute of traffic: what the usage flush adds to (``deployments.usage``)."""

    minute = models.DateTimeField()
    invocations = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    cold_starts = models.PositiveIntegerField(default=0)
    cache_hits = models.PositiveIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0)
    latency_ms_max = models.FloatField(default=0)
    # Requests to generating models that produced a first token, the sum of their times to it,
    # the tokens they generated and the time from first token to last (tokens a second).
    generations = models.PositiveIntegerField(default=0)
    time_to_first_token_ms_sum = models.FloatField(default=0)
    generated_tokens = models.PositiveBigIntegerField(default=0)
    generation_ms_sum = models.FloatField(default=0)
    # Canary and shadow rollouts: requests a new version got as a copy of a live request (its
    # answer discarded), copies dropped because too many were in flight, outputs compared with
    # the live version's answer and the sum of their agreement (1 for the same label, the
    # cosine similarity of embeddings): the comparison a live gate decides on.
    mirrored = models.PositiveIntegerField(default=0)
    mirror_dropped = models.PositiveIntegerField(default=0)
    compared = models.PositiveIntegerField(default=0)
    agreement_sum = models.FloatField(default=0)
    # Counts per latency bucket upper bound in ms, so p50/p99 survive aggregation.
    latency_histogram = models.JSONField(default=dict, blank=True)

    class Meta:
        abstract = True


class VersionUsageMinute(TrafficMinute):
    """One minute of one model version on one endpoint: traffic, latency and cache behaviour."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="usage")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="version_usage")
    # Denormalised so per-tenant cost and traffic need no join through versions and models.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage")

    class Meta:
        ordering = ["-minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "endpoint", "minute"], name="versionusage_one_row_per_minute"
            ),
        ]
        indexes = [
            models.Index(fields=["minute"], name="versionusage_minute"),
            models.Index(fields=["tenant", "minute"], name="versionusage_tenant_minute"),
        ]

    def __str__(self) -> str:
        return f"{self.version} on {self.endpoint} @ {self.minute:%Y-%m-%d %H:%M}"


class Deployment(models.Model):
    """How one tenant model is served: its mode, the version routing sends its traffic to, the
    version kept loaded for a one-call rollback, and the rollout in progress.

    Routing reads ``live_version`` only; a rollout loads and probes ``target_version`` first and
    moves it to ``live_version`` in one row update, so requests never see a version that is not
    loaded and answering.
    """

    class Status(models.TextChoices):
        ROLLING_OUT = "rolling_out", "Rolling out"
        LIVE = "live", "Live"
        FAILED = "failed", "Failed"
        RETIRED = "retired", "Retired"

    class Strategy(models.TextChoices):
        CANARY = "canary", "Canary"
        SHADOW = "shadow", "Shadow"

    class RolloutStrategy(models.TextChoices):
        IMMEDIATE = "immediate", "Immediate"
        CANARY = "canary", "Canary"
        SHADOW = "shadow", "Shadow"

    model = models.OneToOneField(
        "models_registry.TenantModel", on_delete=models.CASCADE, related_name="deployment"
    )
    mode = models.CharField(max_length=24, choices=Endpoint.Mode.choices, default=Endpoint.Mode.MME)
    backend = models.CharField(
        max_length=16, choices=Endpoint.Backend.choices, default=Endpoint.Backend.LOCAL
    )
    # The endpoint of the latest rollout (the live version's unless a rollout is under way).
    endpoint = models.ForeignKey(
        Endpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="deployments"
    )
    replicas = models.PositiveSmallIntegerField(default=1)
    live_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    previous_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ROLLING_OUT)
    status_reason = models.TextField(blank=True)
    # Rollout attempts of the current target (a lost worker's rollout is retried, bounded).
    attempts = models.PositiveSmallIntegerField(default=0)
    rollout_started_at = models.DateTimeField(null=True, blank=True)
    live_since = models.DateTimeField(null=True, blank=True)
    # A canary or shadow rollout: the new version loaded beside the live one, how it gets
    # traffic (a share of live requests, or a copy of each), since when, and the live gate's
    # thresholds this deployment overrides. The strategy is set when the rollout is requested,
    # the candidate once it is loaded and answering.
    candidate_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    candidate_strategy = models.CharField(max_length=8, choices=Strategy.choices, blank=True)
    candidate_share = models.FloatField(default=0.1)
    candidate_started_at = models.DateTimeField(null=True, blank=True)
    gate_overrides = models.JSONField(default=dict, blank=True)
    # How a version the registry promotes reaches traffic: all at once, or as a canary (of
    # ``candidate_share``) or a shadow that the live gate decides on.
    rollout_strategy = models.CharField(
        max_length=10, choices=RolloutStrategy.choices, default=RolloutStrategy.IMMEDIATE
    )
    # Request capture (opt-in): the share of answered requests kept, with their inputs and
    # outputs, under capture/<tenant>/<model>/<day>/ in the artifact store, for how many days.
    capture_enabled = models.BooleanField(default=False)
    capture_sample_percent = models.FloatField(
        default=CAPTURE_DEFAULT_SAMPLE_PERCENT,
        validators=[MinValueValidator(0.0), MaxValueValidator(100.0)],
    )
    capture_retention_days = models.PositiveSmallIntegerField(
        default=CAPTURE_DEFAULT_RETENTION_DAYS,
        validators=[MinValueValidator(1), MaxValueValidator(CAPTURE_MAX_RETENTION_DAYS)],
    )
    # Records written, and records dropped because the serving process's buffer was full.
    capture_records_written = models.PositiveBigIntegerField(default=0)
    capture_records_dropped = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model__tenant__slug", "model__name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(mode__in=["mme", "inference-component", "dedicated", "shared-base"]),
                name="deployment_mode_valid",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["rolling_out", "live", "failed", "retired"]),
                name="deployment_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(replicas__gte=1), name="deployment_replicas_positive"
            ),
            models.CheckConstraint(
                condition=Q(capture_sample_percent__gte=0, capture_sample_percent__lte=100),
                name="deployment_capture_sample_percent_range",
            ),
        ]
        indexes = [models.Index(fields=["status"], name="deployment_status")]

    def __str__(self) -> str:
        return f"{self.model} ({self.mode})"


class EndpointUsageMinute(TrafficMinute):
    """One minute of one endpoint's traffic: the ``VersionUsageMinute`` rows of that endpoint and
    minute summed, written by the same flush in the same transaction.

    Fleet and endpoint traffic figures (last hour's invocations, p50/p99) read these, one row per
    endpoint and minute, instead of one row per model version and minute.
    """

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="usage")

    class Meta:
        ordering = ["-minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "minute"], name="endpointusage_one_row_per_minute"
            ),
        ]
        indexes = [models.Index(fields=["minute"], name="endpointusage_minute")]

    def __str__(self) -> str:
        return f"{self.endpoint} @ {self.minute:%Y-%m-%d %H:%M}"


class FleetUsageMinute(models.Model):
    """One minute of the whole fleet, written by the minute sampler: what the trend charts read
    (one row a minute, not one per instance or model)."""

    minute = models.DateTimeField(unique=True)
    instances = models.PositiveIntegerField(default=0)
    memory_measured_instances = models.PositiveIntegerField(default=0)
    host_memory_used_mb = models.FloatField(default=0)
    host_memory_budget_mb = models.FloatField(default=0)
    gpu_memory_used_mb = models.FloatField(default=0)
    gpu_memory_budget_mb = models.FloatField(default=0)
    models_loaded = models.PositiveIntegerField(default=0)
    models_placed = models.PositiveIntegerField(default=0)
    usd_per_hour = models.FloatField(default=0)
    dedicated_usd_per_hour = models.FloatField(default=0)

    class Meta:
        ordering = ["-minute"]

    def __str__(self) -> str:
        return f"fleet @ {self.minute:%Y-%m-%d %H:%M}"


class BackgroundPass(models.Model):
    """The last pass of each periodic job (reconciler, warm-up, minute sampler, usage flush):
    when it ran, how long it took, how much it handled and how many queries it made.

    One row per job, overwritten by each pass; the admin lists them and ``/metrics`` exports them.
    """

    job = models.CharField(max_length=64, unique=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration_s = models.FloatField()
    items = models.PositiveIntegerField(default=0, help_text="What the pass went over.")
    queries = models.PositiveIntegerField(default=0, help_text="Database queries it made.")
    errors = models.PositiveIntegerField(default=0)
    succeeded = models.BooleanField(default=True)
    summary = models.JSONField(default=dict, blank=True)
    passes = models.PositiveBigIntegerField(default=0, help_text="Passes recorded so far.")

    class Meta:
        ordering = ["job"]
        verbose_name_plural = "background passes"

    def __str__(self) -> str:
        return f"{self.job} at {self.finished_at:%Y-%m-%d %H:%M:%S}"


class TenantCost(models.Model):
    """Each tenant's share of the fleet's hourly cost, as of the minute sampler's last pass.

    Ranking every tenant by its share reads every resident copy of the fleet; the sampler does it
    once a minute and keeps the result here, so the overview's most expensive tenants and the
    full list read an index, not the fleet. A tenant with no model resident has no row.
    """

    tenant = models.OneToOneField(
        Tenant, primary_key=True, on_delete=models.CASCADE, related_name="cost"
    )
    # Denormalised so the list's order (share, then slug) is one index.
    slug = models.CharField(max_length=50)
    usd_per_hour = models.FloatField()
    # The share rounded as the lists show it: the order they are in.
    rank_usd_per_hour = models.FloatField()
    memory_mb = models.FloatField()

    class Meta:
        ordering = ["-rank_usd_per_hour", "slug"]
        indexes = [models.Index(fields=["-rank_usd_per_hour", "slug"], name="tenantcost_rank")]

    def __str__(self) -> str:
        return f"{self.slug}: ${self.usd_per_hour:.4f}/h"


class ScalingPolicy(models.Model):
    """One Application Auto Scaling policy the platform keeps on a SageMaker resource: a
    variant's instance count (MME, dedicated) or an inference component's copy count.

    The platform derives the values (``basis`` says from what); an operator may edit them in the
    admin, which sets ``operator_edited`` so later rollouts keep the operator's values, and
    applies them to AWS at once. ``policy_arn``/``alarm_name`` name what exists in the account.
    """

    class PolicyType(models.TextChoices):
        TARGET_TRACKING = "target_tracking", "Target tracking"
        STEP = "step", "Step scaling (on an alarm)"

    endpoint = models.ForeignKey(
        Endpoint, on_delete=models.CASCADE, related_name="scaling_policies"
    )
    # The inference component's tenant model; null for a variant's policy.
    model = models.ForeignKey(
        TenantModel,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="scaling_policies",
    )
    # Application Auto Scaling's names: "endpoint/<e>/variant/<v>", "inference-component/<c>".
    resource_id = models.CharField(max_length=255)
    scalable_dimension = models.CharField(max_length=64)
    policy_name = models.CharField(max_length=255)
    policy_type = models.CharField(
        max_length=16, choices=PolicyType.choices, default=PolicyType.TARGET_TRACKING
    )
    # The metric followed: a predefined metric type or a CloudWatch metric name.
    metric = models.CharField(max_length=64)
    target_value = models.FloatField(null=True, blank=True)
    min_capacity = models.PositiveIntegerField(default=1)
    max_capacity = models.PositiveIntegerField(default=1)
    scale_in_cooldown_s = models.PositiveIntegerField(default=300)
    scale_out_cooldown_s = models.PositiveIntegerField(default=60)
    # How the target was chosen, in words ("measured 41 ms per request: ..."), for the admin.
    basis = models.TextField(blank=True)
    operator_edited = models.BooleanField(default=False)
    policy_arn = models.CharField(max_length=1024, blank=True)
    alarm_name = models.CharField(max_length=255, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    apply_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["resource_id", "policy_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["resource_id", "policy_name"], name="scalingpolicy_one_per_name"
            ),
            models.CheckConstraint(
                condition=Q(min_capacity__lte=F("max_capacity")),
                name="scalingpolicy_min_le_max",
            ),
            models.CheckConstraint(
                condition=Q(target_value__isnull=True) | Q(target_value__gt=0),
                name="scalingpolicy_target_positive",
            ),
        ]
        verbose_name_plural = "scaling policies"

    def __str__(self) -> str:
        return f"{self.policy_name} ({self.resource_id})"


class CloudMetricMinute(models.Model):
    """One minute of one CloudWatch metric of a SageMaker endpoint, beside the platform's own
    figures: an endpoint variant's metric (``component`` empty) or an inference component's.

    Written by the CloudWatch pass (GetMetricData); one row per endpoint, component, metric,
    statistic and minute, so a pass that reads a minute again overwrites it.
    """

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="cloud_metrics")
    component = models.CharField(max_length=63, blank=True)
    metric = models.CharField(max_length=64)
    statistic = models.CharField(max_length=16, default="Average")
    minute = models.DateTimeField()
    value = models.FloatField()
    unit = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "component", "metric", "statistic", "minute"],
                name="cloudmetric_one_row_per_minute",
            ),
        ]
        indexes = [
            models.Index(fields=["endpoint", "metric", "-minute"], name="cloudmetric_recent"),
            models.Index(fields=["minute"], name="cloudmetric_minute"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.component} {self.metric} @ {self.minute:%Y-%m-%d %H:%M}"
