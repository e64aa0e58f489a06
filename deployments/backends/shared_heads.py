"""Speaking to a shared-base model (``models_registry.triton_runtime.shared_intent``): the request
bodies that load, unload and list tenants' heads and answer tickets, and their answers decoded.

Transport-free: the bodies are KServe v2 JSON dicts, sent by the local backend through
``TritonMultiModelClient.invoke(name, body)`` and by the SageMaker backend through
``invoke_endpoint`` with ``TargetModel``; the answers are what either returns, as a dict.

When rows name heads the model does not hold, it still answers the other rows;
``parse_infer_answer`` then raises ``HeadsNotLoaded`` naming the missing head ids (each once, in
row order) and carrying the rows it did answer, so the caller loads the missing heads (a cold
start) and asks again. A refused load (a checksum or format the model will not accept) raises
``HeadRefused`` with the model's reason; nothing was loaded.
"""

from __future__ import annotations

import base64
import json

from config.errors import DomainError
from deployments.exceptions import InvalidInferenceInput, UpstreamError
from models_registry.kinds import TRITON_MAX_BATCH_SIZE, response_output

OP_LOAD, OP_UNLOAD, OP_LIST = "load", "unload", "list"
STATUS_OK = "ok"
STATUS_NOT_LOADED = "head_not_loaded"
# What the model pads a row with when its head has fewer labels than the widest in the answer.
PADDING_LABEL = ""


class HeadsNotLoaded(DomainError):
    """Some rows' heads are not resident in the shared model; load them and ask again."""

    status_code = 503
    code = "heads_not_loaded"

    def __init__(self, missing: list[str], *, answered: list[dict | None] | None = None) -> None:
        names = ", ".join(repr(head_id) for head_id in missing)
        super().__init__(f"The shared model does not hold the head(s) {names}; load them first.")
        self.missing = list(missing)
        # One entry per row: the decoded answer, or None where the row's head was missing.
        self.answered = list(answered or [])


class HeadRefused(DomainError):
    """The shared model refused to load a head (checksum, format or size); nothing was loaded."""

    status_code = 422
    code = "head_refused"


def _bytes_input(name: str, values: list[str]) -> dict:
    return {"name": name, "shape": [len(values), 1], "datatype": "BYTES", "data": values}


def load_head_body(*, head_id: str, head_npz: bytes, labels_json: bytes, sha256: str) -> dict:
    """The body loading one head (the artifact's ``head.npz`` and ``labels.json`` bytes, and
    ``tenantml_head.head_digest`` of them) into the shared model under ``head_id``."""
    _check_head_id(head_id)
    return {
        "inputs": [
            _bytes_input("OP", [OP_LOAD]),
            _bytes_input("HEAD_ID", [head_id]),
            _bytes_input("HEAD_NPZ", [base64.b64encode(bytes(head_npz)).decode("ascii")]),
            _bytes_input("LABELS_JSON", [base64.b64encode(bytes(labels_json)).decode("ascii")]),
            _bytes_input("SHA256", [str(sha256)]),
        ]
    }


def unload_head_body(*, head_id: str) -> dict:
    """The body dropping ``head_id`` from the shared model's cache."""
    _check_head_id(head_id)
    return {"inputs": [_bytes_input("OP", [OP_UNLOAD]), _bytes_input("HEAD_ID", [head_id])]}


def list_heads_body() -> dict:
    """The body asking which heads the shared model holds."""
    return {"inputs": [_bytes_input("OP", [OP_LIST])]}


def infer_body(*, texts: list[str], head_ids: list[str]) -> dict:
    """The body answering ``texts[i]`` with head ``head_ids[i]`` (rows may mix tenants)."""
    if len(texts) != len(head_ids):
        raise InvalidInferenceInput(
            f"{len(texts)} texts but {len(head_ids)} head ids; give one head id per text."
        )
    if not 1 <= len(texts) <= TRITON_MAX_BATCH_SIZE:
        raise InvalidInferenceInput(
            f"A request holds 1 to {TRITON_MAX_BATCH_SIZE} texts, not {len(texts)}."
        )
    for head_id in head_ids:
        _check_head_id(head_id)
    return {
        "inputs": [
            _bytes_input("TEXT", [str(text) for text in texts]),
            _bytes_input("HEAD", list(head_ids)),
        ]
    }


def parse_infer_answer(
    answer: dict | str | bytes, *, head_ids: list[str] | None = None
) -> list[dict]:
    """One ``{"label", "scores"}`` per row (scores by label name, padding left out); raises
    HeadsNotLoaded when the model answered that some rows' heads are not loaded. With
    ``head_ids`` (those sent), an answer whose rows name other heads is refused."""
    if isinstance(answer, str | bytes):
        answer = json.loads(answer)
    try:
        _, best = response_output(answer, "LABEL")
        shape, scores = response_output(answer, "SCORES")
        _, names = response_output(answer, "LABELS")
        _, statuses = response_output(answer, "STATUS")
        _, row_heads = response_output(answer, "ROW_HEAD")
    except KeyError as exc:
        raise UpstreamError(f"The shared model's answer is not a ticket answer: {exc}") from None
    if head_ids is not None and list(row_heads) != list(head_ids):
        raise UpstreamError("The shared model answered rows of other heads than were asked.")
    width = shape[-1] if len(shape) > 1 else 0
    rows: list[dict | None] = []
    for row, (label, status) in enumerate(zip(best, statuses, strict=True)):
        if status != STATUS_OK:
            rows.append(None)
            continue
        rows.append(
            {
                "label": label,
                "scores": {
                    names[row * width + column]: float(scores[row * width + column])
                    for column in range(width)
                    if names[row * width + column] != PADDING_LABEL
                },
            }
        )
    if any(row is None for row in rows):
        missing = [head for head, row in zip(row_heads, rows, strict=True) if row is None]
        raise HeadsNotLoaded(list(dict.fromkeys(missing)), answered=rows)
    return rows


def parse_heads_answer(answer: dict | str | bytes) -> dict[str, int]:
    """Resident head id → bytes, from the answer to a load, unload or list body; raises
    HeadRefused when the model refused a load."""
    return parse_control_answer(answer)["heads"]


def parse_control_answer(answer: dict | str | bytes) -> dict:
    """The whole control answer: ``heads``, ``used_bytes``, ``capacity_bytes`` and, by
    operation, ``loaded``/``bytes``/``evicted`` or ``unloaded``; raises HeadRefused on a
    refused load."""
    if isinstance(answer, str | bytes):
        answer = json.loads(answer)
    try:
        _, data = response_output(answer, "RESULT")
        result = json.loads(data[0])
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise UpstreamError(f"The shared model's answer is not a control answer: {exc}") from None
    if "error" in result:
        raise HeadRefused(str(result["error"]), field="head")
    result["heads"] = {str(key): int(value) for key, value in result.get("heads", {}).items()}
    return result


def _check_head_id(head_id: str) -> None:
    if not isinstance(head_id, str) or not head_id:
        raise InvalidInferenceInput(f"A head id is a non-empty string, not {head_id!r}.")
