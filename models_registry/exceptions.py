"""Errors raised by registry services."""

from config.errors import Conflict, DomainError, NotFound


class ModelNotFound(NotFound):
    pass


class ModelAlreadyExists(Conflict):
    pass


class InvalidDataset(DomainError):
    code = "invalid_dataset"


class JobNotCancellable(Conflict):
    code = "not_cancellable"


class InvalidArtifact(DomainError):
    code = "invalid_artifact"


class PackageChecksumMismatch(DomainError):
    # The stored package is corrupt or was swapped: nothing the caller sent is at fault, and the
    # model cannot be served until it is repackaged (a bad upstream, not a crash of ours).
    status_code = 502
    code = "package_checksum_mismatch"


class InvalidVersion(Conflict):
    code = "invalid_version"


class DatasetTooLarge(DomainError):
    status_code = 413
    code = "dataset_too_large"


class DatasetNotFound(NotFound):
    pass


class VersionNotFound(NotFound):
    pass


class TrainingJobNotFound(NotFound):
    pass


class InvalidTrainingRequest(DomainError):
    code = "invalid_training_request"


class IdempotencyKeyReused(Conflict):
    # The same key with different inputs is a client bug; answering with the first job would
    # silently train on what the client did not ask for.
    code = "idempotency_key_reused"


class DatasetAlreadyExists(Conflict):
    # Like a taken model name or tenant slug: the name is taken, whatever the file holds.
    code = "dataset_exists"


class QualityGateFailed(Conflict):
    code = "quality_gate_failed"


class NothingToRollBack(Conflict):
    code = "nothing_to_roll_back"


class ForceNotAllowed(DomainError):
    status_code = 403
    code = "forbidden"


class TrainingBackendNotConfigured(DomainError):
    status_code = 503
    code = "training_backend_not_configured"


class TrainingLaunchDeferred(DomainError):
    """The training backend cannot take the launch now (throttled, say); the job stays queued and
    is sent again later."""

    status_code = 503
    code = "training_launch_deferred"
