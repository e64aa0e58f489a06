"""The serving backend registry: every registered backend implements the interface, endpoints
resolve to theirs, and an unknown name is a 400 naming the field."""

from __future__ import annotations

import pytest

from config.errors import DomainError
from deployments.backends import BACKENDS, backend_for, backend_named, backends_serving
from deployments.backends.base import ServingBackend
from deployments.models import Endpoint
from tests.factories import EndpointFactory


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_registered_backend_implements_the_interface_under_its_name(name):
    backend = backend_named(name)
    assert isinstance(backend, ServingBackend)
    assert backend.name == name
    assert set(backend.modes) <= set(Endpoint.Mode.values)


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_an_endpoint_is_served_by_the_backend_it_names(name):
    endpoint = EndpointFactory(backend=name)
    assert backend_for(endpoint) is backend_named(name)


def test_an_unknown_backend_is_refused_naming_the_field():
    with pytest.raises(DomainError) as refused:
        backend_named("gpu-farm" * 20)
    assert refused.value.field == "backend"
    assert "local" in refused.value.message and "sagemaker" in refused.value.message
    assert len(refused.value.message) < 120  # the name is cut, never echoed whole


def test_modes_resolve_to_the_backends_that_serve_them():
    assert backends_serving(Endpoint.Mode.INFERENCE_COMPONENT) == ["sagemaker"]
    assert backends_serving(Endpoint.Mode.MME) == ["local", "sagemaker"]
