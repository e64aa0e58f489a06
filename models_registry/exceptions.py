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
