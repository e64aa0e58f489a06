"""A single model's request turned into the shared encoder's and its answer back (no server)."""

from __future__ import annotations

import json

from deployments.backends.shared_requests import (
    join_body,
    single_model_answer,
    split_body,
    with_head,
)


def text_request(*texts: str, outputs: list | None = None) -> dict:
    header = {
        "inputs": [
            {"name": "TEXT", "shape": [len(texts), 1], "datatype": "BYTES", "data": list(texts)}
        ]
    }
    if outputs is not None:
        header["outputs"] = outputs
    return header


def test_every_row_names_the_routed_head_whatever_head_the_caller_sent():
    header = text_request("a", "b")
    header["inputs"].append(
        {"name": "HEAD", "shape": [2, 1], "datatype": "BYTES", "data": ["other.m.v1"] * 2}
    )

    shared = with_head(header, "acme.intents.v3")

    heads = [tensor for tensor in shared["inputs"] if tensor["name"] == "HEAD"]
    assert heads == [
        {"name": "HEAD", "shape": [2, 1], "datatype": "BYTES", "data": ["acme.intents.v3"] * 2}
    ]


def test_requested_outputs_keep_their_format_and_the_row_status_is_asked_as_json():
    outputs = [{"name": "LABEL", "parameters": {"binary_data": True}}]

    shared = with_head(text_request("a", outputs=outputs), "acme.intents.v3")

    assert shared["outputs"] == [
        {"name": "LABEL", "parameters": {"binary_data": True}},
        {"name": "STATUS", "parameters": {"binary_data": False}},
    ]


def test_the_answer_loses_the_shared_models_own_outputs_and_says_when_a_head_was_missing():
    answer = {
        "model_name": "shared.intent-classifier.0123",
        "outputs": [
            {"name": "LABEL", "shape": [1, 1], "datatype": "BYTES", "data": ["refund"]},
            {"name": "STATUS", "shape": [1, 1], "datatype": "BYTES", "data": ["ok"]},
            {"name": "ROW_HEAD", "shape": [1, 1], "datatype": "BYTES", "data": ["acme.i.v1"]},
        ],
    }

    single, missing = single_model_answer(answer)

    assert [o["name"] for o in single["outputs"]] == ["LABEL"] and missing is False
    answer["outputs"][1]["data"] = ["head_not_loaded"]
    assert single_model_answer(answer)[1] is True


def test_binary_tensors_pass_through_after_the_rewritten_header():
    header = text_request("a", outputs=[{"name": "SCORES", "parameters": {"binary_data": True}}])
    tail = b"\x00\x01\x02\x03"
    body, content_type = join_body(header, tail, True)

    parsed, binary, is_binary = split_body(body, content_type)

    assert parsed == header and binary == tail and is_binary
    shared_body, shared_type = join_body(with_head(parsed, "h"), binary, is_binary)
    assert shared_body.endswith(tail)
    # The content type names the rewritten header's length, so the tensors are found after it.
    assert shared_type.endswith(f"={len(shared_body) - len(tail)}")
    assert json.loads(shared_body[: len(shared_body) - len(tail)])["inputs"][-1]["name"] == "HEAD"
