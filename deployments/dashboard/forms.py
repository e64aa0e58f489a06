"""Dashboard forms for deployments: the cost what-if and a deploy request."""

from __future__ import annotations

from decimal import Decimal

from django import forms

from deployments.models import Endpoint, Event, InstanceType


class WhatIfForm(forms.Form):
    """An instance type from the catalog, a target memory utilization and a replica count."""

    instance_type = forms.ModelChoiceField(
        queryset=InstanceType.objects.filter(available=True).order_by("usd_per_hour", "name"),
        to_field_name="name",
        empty_label=None,
        help_text="Every placed model is packed onto instances of this one type.",
    )
    target_utilization = forms.DecimalField(
        min_value=Decimal("0.05"),
        max_value=Decimal("1.00"),
        max_digits=3,
        decimal_places=2,
        initial=Decimal("0.80"),
        help_text="Fraction of each instance's memory models may fill (0.05–1.00).",
    )
    replicas = forms.IntegerField(
        min_value=1,
        max_value=8,
        initial=1,
        help_text="Copies of every model, on distinct instances.",
    )


class DeployForm(forms.Form):
    """What the deploy button sends: an optional version number, mode and replica count."""

    version = forms.IntegerField(required=False, min_value=1)
    mode = forms.ChoiceField(
        choices=Endpoint.Mode.choices,
        required=False,
        error_messages={"invalid_choice": "Choose one of the listed modes."},
    )
    replicas = forms.IntegerField(required=False, min_value=1, max_value=8)


class EventFilterForm(forms.Form):
    """Filters of the event log; every field optional."""

    kind = forms.CharField(required=False, max_length=64, help_text='Prefix, e.g. "placement."')
    severity = forms.ChoiceField(
        required=False,
        choices=[("", "any"), *Event.Severity.choices],
        error_messages={"invalid_choice": "Choose one of the listed severities."},
    )
    tenant = forms.CharField(required=False, max_length=50)
