"""The invoke inputs' checks, shared by the proxy's native route and the REST API: the field is
named (``inputs`` or ``inputs[i]``), the limit and the count are said, and nothing a caller sent
is repeated back."""

from __future__ import annotations

import pytest

from deployments.exceptions import InvalidInferenceInput
from deployments.proxy.invoke import validate_inputs

SECRET = "card 4111-1111-1111-1111"


@pytest.mark.parametrize("kind", ["intent-classifier", "embedding"])
@pytest.mark.parametrize(
    ("inputs", "field", "message"),
    [
        ([], "inputs", "inputs: needs at least 1 item(s), got 0."),
        ([SECRET, ""], "inputs[1]", "inputs[1]: must not be empty."),
        ([SECRET, None], "inputs[1]", "inputs[1]: must be a string."),
        ([SECRET, {"text": SECRET}], "inputs[1]", "inputs[1]: must be a string."),
        ([[SECRET]], "inputs[0]", "inputs[0]: must be a string."),
        ({"texts": [SECRET]}, "inputs", "inputs: must be a list of inputs."),
        (SECRET, "inputs", "inputs: must be a list of inputs."),
    ],
)
def test_inputs_that_break_the_kinds_schema_name_the_field_and_never_repeat_the_input(
    kind, inputs, field, message
):
    with pytest.raises(InvalidInferenceInput) as refused:
        validate_inputs(kind_name=kind, inputs=inputs)

    assert refused.value.field == field
    assert refused.value.message == message


def test_more_inputs_than_the_limit_are_refused_by_count_before_any_item_is_read(settings):
    settings.TENANTML_INVOKE_MAX_INPUTS = 100

    with pytest.raises(InvalidInferenceInput) as refused:
        validate_inputs(kind_name="intent-classifier", inputs=[SECRET] * 99 + [7, 8])

    assert refused.value.field == "inputs"
    assert refused.value.message.startswith("inputs: at most 100 inputs per request, got 101")
    assert SECRET not in refused.value.message


def test_up_to_the_limit_passes_though_it_is_more_than_the_models_batch_size(settings):
    settings.TENANTML_INVOKE_MAX_INPUTS = 100

    validate_inputs(kind_name="intent-classifier", inputs=["Where is my refund?"] * 100)
