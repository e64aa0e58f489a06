"""Splitting a request at the model's batch size and joining the answers: every row answered once
and in order for JSON and binary tensors (BYTES and fixed-size), malformed binary data named,
the parts sent at most a few at once, and the first failure failing the whole request with the
other parts stopped."""

from __future__ import annotations

import asyncio
import struct

import pytest

from deployments.proxy.batching import (
    TensorFramingError,
    gather_in_order,
    merge_tensor_answers,
    split_list,
    split_tensor_request,
    too_many_inputs,
)

SECRETS = ["secret-a", "secret-b", "secret-c"]


def bytes_tensor(texts: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)


def read_bytes_tensor(blob: bytes) -> list[str]:
    texts, position = [], 0
    while position < len(blob):
        (length,) = struct.unpack_from("<I", blob, position)
        texts.append(blob[position + 4 : position + 4 + length].decode())
        position += 4 + length
    return texts


def test_a_list_is_cut_into_parts_of_the_batch_size_in_order():
    items = list(range(70))

    parts = split_list(items, 32)

    assert [len(part) for part in parts] == [32, 32, 6]
    assert [item for part in parts for item in part] == items


def test_the_limit_refusal_says_how_many_were_sent_and_the_limit():
    assert too_many_inputs(count=1024, limit=1024) is None
    assert too_many_inputs(count=1500, limit=1024).startswith(
        "at most 1,024 inputs per request, got 1,500"
    )


def test_a_json_tensor_request_is_split_by_rows_keeping_its_other_fields():
    texts = [f"text {n}" for n in range(5)]
    header = {
        "id": "request-7",
        "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [5, 1], "data": texts}],
        "outputs": [{"name": "LABEL"}],
    }

    parts = split_tensor_request(header, b"", rows_per_part=2)

    assert [part["inputs"][0]["shape"] for part, _ in parts] == [[2, 1], [2, 1], [1, 1]]
    assert [d for part, _ in parts for d in part["inputs"][0]["data"]] == texts
    assert all(
        part["id"] == "request-7" and part["outputs"] == header["outputs"] for part, _ in parts
    )
    assert all(binary == b"" for _, binary in parts)


def test_nested_json_data_is_split_by_rows_of_its_elements():
    header = {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": [3, 2], "data": [[1, 2], [3, 4], [5, 6]]}
        ]
    }

    parts = split_tensor_request(header, b"", rows_per_part=2)

    assert [part["inputs"][0]["data"] for part, _ in parts] == [[1, 2, 3, 4], [5, 6]]


def test_binary_bytes_and_fixed_size_tensors_are_split_at_the_same_rows():
    texts = ["a", "longer text", "", "ünïcode", "e"]
    numbers = struct.pack("<10f", *range(10))  # shape [5, 2]
    header = {
        "inputs": [
            {
                "name": "TEXT",
                "datatype": "BYTES",
                "shape": [5, 1],
                "parameters": {"binary_data_size": len(bytes_tensor(texts))},
            },
            {
                "name": "X",
                "datatype": "FP32",
                "shape": [5, 2],
                "parameters": {"binary_data_size": len(numbers)},
            },
        ]
    }

    parts = split_tensor_request(header, bytes_tensor(texts) + numbers, rows_per_part=2)

    got_texts, got_numbers = [], []
    for part, binary in parts:
        text_size = part["inputs"][0]["parameters"]["binary_data_size"]
        number_size = part["inputs"][1]["parameters"]["binary_data_size"]
        assert len(binary) == text_size + number_size
        got_texts += read_bytes_tensor(binary[:text_size])
        got_numbers += struct.unpack(f"<{number_size // 4}f", binary[text_size:])
        assert part["inputs"][1]["shape"] == [part["inputs"][0]["shape"][0], 2]
    assert got_texts == texts
    assert got_numbers == [float(n) for n in range(10)]


@pytest.mark.parametrize(
    ("blob", "size", "message"),
    [
        (bytes_tensor(SECRETS[:2]), None, "ends before"),  # the shape says 3 rows
        (bytes_tensor([*SECRETS, "secret-d"]), None, "holds more"),
        (bytes_tensor(SECRETS), 999, "only"),
        (bytes_tensor(SECRETS), -1, "whole number"),
    ],
)
def test_binary_data_that_does_not_match_its_header_is_refused_naming_the_tensor(
    blob, size, message
):
    header = {
        "inputs": [
            {
                "name": "TEXT",
                "datatype": "BYTES",
                "shape": [3, 1],
                "parameters": {"binary_data_size": len(blob) if size is None else size},
            }
        ]
    }

    with pytest.raises(TensorFramingError, match=message) as refused:
        split_tensor_request(header, blob, rows_per_part=2)

    assert refused.value.field.startswith("inputs[0]")
    assert "secret" not in str(refused.value)


def test_answers_to_the_parts_are_joined_output_by_output_in_order():
    def answer(rows: list[int], binary_scores: bool) -> tuple[dict, bytes]:
        scores = struct.pack(f"<{len(rows) * 2}f", *[float(r) for r in rows for _ in (0, 1)])
        outputs = [
            {
                "name": "LABEL",
                "datatype": "BYTES",
                "shape": [len(rows)],
                "data": [f"label {r}" for r in rows],
            },
            {
                "name": "SCORES",
                "datatype": "FP32",
                "shape": [len(rows), 2],
                "parameters": {"binary_data_size": len(scores)},
            },
        ]
        return {"model_name": "m", "model_version": "1", "outputs": outputs}, scores

    joined, binary = merge_tensor_answers(
        [answer([0, 1], True), answer([2, 3], True), answer([4], True)]
    )

    label, scores = joined["outputs"]
    assert label["shape"] == [5] and label["data"] == [f"label {r}" for r in range(5)]
    assert scores["shape"] == [5, 2]
    assert scores["parameters"]["binary_data_size"] == len(binary) == 40
    assert struct.unpack("<10f", binary) == tuple(float(r) for r in range(5) for _ in (0, 1))


def test_parts_run_at_most_the_limit_at_once_and_answer_in_order():
    running = 0
    most = 0

    async def part(number: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01 * (5 - number % 5))  # later parts may finish first
        running -= 1
        return number

    results = asyncio.run(gather_in_order([lambda n=n: part(n) for n in range(12)], limit=4))

    assert results == list(range(12))
    assert most == 4


def test_the_first_failing_part_fails_the_request_and_stops_the_others():
    stopped, finished = [], []

    async def part(number: int) -> int:
        if number == 1:
            await asyncio.sleep(0.01)
            raise ValueError("part 1 refused")
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            stopped.append(number)
            raise
        finished.append(number)
        return number

    async def scenario():
        started = asyncio.get_running_loop().time()
        with pytest.raises(ValueError, match="part 1 refused"):
            await gather_in_order([lambda n=n: part(n) for n in range(6)], limit=3)
        return asyncio.get_running_loop().time() - started

    elapsed = asyncio.run(scenario())

    assert elapsed < 1
    assert finished == [] and {0, 2} <= set(stopped)
