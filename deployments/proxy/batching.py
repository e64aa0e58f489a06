"""Requests larger than a model's batch size: split into parts, sent, answered as one.

A caller may send up to ``INVOKE_MAX_INPUTS`` inputs (rows) in one request; Triton takes at
most the kind's ``max_batch_size`` per execution. The proxy splits the request at that size,
sends the parts to the same copy and joins the answers in order, so the serving limit is never
the caller's concern. This module is pure: lists and KServe v2 tensors in, lists and tensors
out, plus the helper that runs the parts (``gather_in_order``).

Tensors (Open Inference Protocol and SageMaker routes) are split along their first dimension:
JSON ``data`` by element counts, binary tensor data (``binary_data_size``) by element sizes,
BYTES elements by their 4-byte little-endian length prefixes. Answers are joined output by
output: shapes' first dimensions summed, JSON data concatenated, binary data concatenated.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

# Parts of one request sent to the copy at once. One part at a time leaves the copy idle while
# each answer travels and is parsed; more than a few only queue in Triton (one model instance,
# whose dynamic batcher takes at most a batch anyway). Measured in docs/proxy.md.
PARTS_IN_FLIGHT = 4

# Bytes per element of the fixed-size datatypes of the v2 binary tensor extension.
ELEMENT_BYTES = {
    "BOOL": 1,
    "UINT8": 1,
    "INT8": 1,
    "UINT16": 2,
    "INT16": 2,
    "FP16": 2,
    "BF16": 2,
    "UINT32": 4,
    "INT32": 4,
    "FP32": 4,
    "UINT64": 8,
    "INT64": 8,
    "FP64": 8,
}


class TensorFramingError(ValueError):
    """Binary tensor data that does not hold what its header says; ``field`` names the tensor."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def too_many_inputs(*, count: int, limit: int) -> str | None:
    """The refusal of a request with more than ``limit`` inputs (None when it has at most)."""
    if count <= limit:
        return None
    return f"at most {limit:,} inputs per request, got {count:,}; send the rest in another request."


def row_ranges(rows: int, size: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each part of ``rows`` rows cut every ``size``."""
    return [(start, min(start + size, rows)) for start in range(0, rows, size)]


def split_list(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` in consecutive parts of at most ``size``."""
    return [items[start:end] for start, end in row_ranges(len(items), size)]


async def gather_in_order(calls: Sequence[Callable[[], Awaitable[T]]], *, limit: int) -> list[T]:
    """Await every call, at most ``limit`` at once, and return their results in order.

    The first failure cancels the calls still running (and waits for them to stop) and is
    raised; a caller cancelled meanwhile cancels them all.
    """
    if not calls:
        return []
    slots = asyncio.Semaphore(limit)

    async def bounded(call: Callable[[], Awaitable[T]]) -> T:
        async with slots:
            return await call()

    tasks = [asyncio.ensure_future(bounded(call)) for call in calls]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # a no-op on the finished ones
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()
    return [task.result() for task in tasks]


# --- Tensors ---------------------------------------------------------------------------------


def _flatten(data: object) -> list:
    if not isinstance(data, list):
        return [data]
    flat: list = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _row_cuts(tensor: dict, blob: bytes, field: str) -> list[int]:
    """Byte offsets in ``blob`` where each row of the tensor starts, and its end."""
    shape = tensor["shape"]
    rows, per_row = shape[0], math.prod(shape[1:])
    datatype = tensor.get("datatype")
    if datatype in ELEMENT_BYTES:
        row_bytes = per_row * ELEMENT_BYTES[datatype]
        if len(blob) != rows * row_bytes:
            raise TensorFramingError(
                f"{field}: {len(blob)} bytes of binary data for shape {shape} of {datatype} "
                f"(needs {rows * row_bytes}).",
                field=field,
            )
        return [row * row_bytes for row in range(rows + 1)]
    if datatype != "BYTES":
        raise TensorFramingError(f"{field}: unknown datatype {datatype!r}.", field=field)
    cuts, position = [0], 0
    for _ in range(rows):
        for _ in range(per_row):
            if position + 4 > len(blob):
                raise TensorFramingError(
                    f"{field}: the binary data ends before shape {shape}'s elements do.",
                    field=field,
                )
            position += 4 + int.from_bytes(blob[position : position + 4], "little")
        cuts.append(position)
    if position != len(blob):
        raise TensorFramingError(
            f"{field}: the binary data holds more than shape {shape}'s elements.", field=field
        )
    return cuts


def _binary_size(tensor: dict, field: str) -> int | None:
    parameters = tensor.get("parameters")
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise TensorFramingError(
            f"{field}.parameters.binary_data_size: must be a whole number of bytes.", field=field
        )
    return size


def _binary_parts(tensors: list[dict], binary: bytes, where: str) -> tuple[list[bytes | None], int]:
    """Each tensor's binary data (None for JSON data) in order, and the bytes they take."""
    blobs: list[bytes | None] = []
    offset = 0
    for index, tensor in enumerate(tensors):
        field = f"{where}[{index}]"
        size = _binary_size(tensor, field)
        if size is None:
            blobs.append(None)
            continue
        if offset + size > len(binary):
            raise TensorFramingError(
                f"{field}.parameters.binary_data_size: {size} bytes, but only "
                f"{len(binary) - offset} follow the JSON header.",
                field=f"{field}.parameters.binary_data_size",
            )
        blobs.append(binary[offset : offset + size])
        offset += size
    return blobs, offset


def split_tensor_request(
    header: dict, binary: bytes, *, rows_per_part: int
) -> list[tuple[dict, bytes]]:
    """A validated v2 request (its JSON header and the binary data after it) as parts of at
    most ``rows_per_part`` rows each, every input cut at the same rows."""
    inputs = header["inputs"]
    rows = inputs[0]["shape"][0]
    ranges = row_ranges(rows, rows_per_part)
    blobs, _ = _binary_parts(inputs, binary, "inputs")
    cut_inputs: list[list[tuple[dict, bytes]]] = [[] for _ in ranges]
    for index, (tensor, blob) in enumerate(zip(inputs, blobs, strict=True)):
        per_row = math.prod(tensor["shape"][1:])
        if blob is not None:
            cuts = _row_cuts(tensor, blob, f"inputs[{index}]")
        else:
            flat = _flatten(tensor.get("data", []))
        for part, (start, end) in enumerate(ranges):
            piece = {**tensor, "shape": [end - start, *tensor["shape"][1:]]}
            if blob is not None:
                data = blob[cuts[start] : cuts[end]]
                piece["parameters"] = {**tensor["parameters"], "binary_data_size": len(data)}
                cut_inputs[part].append((piece, data))
            else:
                piece["data"] = flat[start * per_row : end * per_row]
                cut_inputs[part].append((piece, b""))
    return [
        (
            {**header, "inputs": [piece for piece, _ in pieces]},
            b"".join(data for _, data in pieces),
        )
        for pieces in cut_inputs
    ]


def merge_tensor_answers(parts: Sequence[tuple[dict, bytes]]) -> tuple[dict, bytes]:
    """The answers to a split request's parts (JSON header and binary data each) as one
    answer: each output's rows in part order."""
    first = parts[0][0]
    per_part = [
        (
            header.get("outputs") or [],
            _binary_parts(header.get("outputs") or [], binary, "outputs")[0],
        )
        for header, binary in parts
    ]
    merged, binary_out = [], []
    for index, output in enumerate(first.get("outputs") or []):
        pieces = [(outputs[index], blobs[index]) for outputs, blobs in per_part]
        joined = {
            **output,
            "shape": [sum(piece["shape"][0] for piece, _ in pieces), *output["shape"][1:]],
        }
        if pieces[0][1] is not None:
            data = b"".join(blob or b"" for _, blob in pieces)
            joined["parameters"] = {**output["parameters"], "binary_data_size": len(data)}
            binary_out.append(data)
        else:
            joined["data"] = [
                value for piece, _ in pieces for value in _flatten(piece.get("data", []))
            ]
        merged.append(joined)
    return {**first, "outputs": merged}, b"".join(binary_out)
