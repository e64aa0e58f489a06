"""Serializer fields of the REST API that take exactly what the schema says they take."""

from __future__ import annotations

import math

from rest_framework import serializers


class TextField(serializers.CharField):
    """A JSON string, and only a string: DRF's CharField also takes a number (``"name": 0`` as
    ``"0"``), which the schema's ``type: string`` refuses."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class JsonBooleanField(serializers.BooleanField):
    """``true`` or ``false`` only: DRF's BooleanField also takes ``0``, ``1`` and strings such as
    ``"yes"``, which the schema's ``type: boolean`` refuses."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class JsonIntegerField(serializers.IntegerField):
    """A JSON integer only: DRF's IntegerField also takes ``"3"`` and ``3.0``, which the schema's
    ``type: integer`` refuses."""

    default_error_messages = {"invalid": "Must be a whole number."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class JsonNumberField(serializers.FloatField):
    """A finite JSON number only: DRF's FloatField also takes ``"3.5"``, and Python's JSON
    parser reads ``NaN`` and ``Infinity``, which no bound check catches."""

    default_error_messages = {"invalid": "Must be a number."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float) or not math.isfinite(data):
            self.fail("invalid")
        return super().to_internal_value(data)
