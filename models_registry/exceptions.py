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
