"""Triton python-backend model of the shared-base layout: one loaded encoder, every tenant's head.

This file is copied verbatim as ``1/model.py`` into the shared encoder's package
(``models_registry.shared_base``), beside ``tenantml_encoder.py`` and ``tenantml_head.py``, so
it imports only numpy, the standard library and those two files (which bring onnxruntime and
tokenizers, vendored in a package built for a serving image). The files it loads sit beside it in
``1/``: ``encoder.onnx`` and ``tokenizer.json`` (the platform's base encoder). Heads are not
files of the package: the platform sends each one as bytes and the model keeps it in an
in-process cache (least recently used out first when the configured byte capacity is reached).

Wire format (KServe v2 JSON, ``POST /models/<name>/invoke`` on a SageMaker-mode Triton, or
SageMaker's ``InvokeEndpoint`` with ``TargetModel``); every tensor is ``BYTES`` with one value
per row, and ``deployments.backends.shared_heads`` writes and reads these bodies:

- answer tickets — inputs ``TEXT`` [n, 1] and ``HEAD`` [n, 1] (the head id of each row);
  outputs ``LABEL`` [n, 1], ``SCORES`` [n, k] FP32, ``LABELS`` [n, k], ``STATUS`` [n, 1] and
  ``ROW_HEAD`` [n, 1] (the head id that answered each row, echoed, so a caller can check it).
  Each row is answered by its own head. ``k`` is the label count of the widest head in the
  request: a row whose head has fewer labels is padded with empty label names and score 0
  (a head may not name an empty label, so padding is never a label). ``STATUS`` is ``ok``, or
  ``head_not_loaded`` for a row whose head is not resident: that row has an empty ``LABEL`` and
  only padding, and every other row is still answered.
- control — input ``OP`` [1, 1] (``load``, ``unload`` or ``list``), with ``HEAD_ID`` for load
  and unload, and for load ``HEAD_NPZ`` and ``LABELS_JSON`` (the artifact's ``head.npz`` and
  ``labels.json``, base64) and ``SHA256`` (``tenantml_head.head_digest`` of the decoded bytes);
  output ``RESULT`` [1, 1], one JSON object: ``{"heads": {head id: bytes}, "used_bytes",
  "capacity_bytes"}`` plus ``"loaded"``, ``"evicted"`` (head ids) or ``"unloaded"`` (true/false),
  or ``{"error": reason, ...}`` when a load is refused (checksum, format, size): nothing is loaded
  then and a head already resident under that id stays as it was.

Head ids are opaque data: compared byte for byte, never parsed. Requests are applied in arrival
order within a dynamic batch (an answer sees the loads and unloads that arrived before it), and
all the tickets of a batch go through one encoder run.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import threading
from collections import OrderedDict

# The encoder and head code ship beside this file, in the package as in the source tree.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
from tenantml_encoder import CPU, Encoder, describe, instance_device, log_info  # noqa: E402
from tenantml_head import Head, HeadFormatError, head_digest  # noqa: E402

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton: tests and benchmarks drive SharedIntentServer
    pb_utils = None

OP_LOAD, OP_UNLOAD, OP_LIST = "load", "unload", "list"
OPERATIONS = (OP_LOAD, OP_UNLOAD, OP_LIST)
STATUS_OK = "ok"
STATUS_NOT_LOADED = "head_not_loaded"
PADDING_LABEL = ""
# Config parameters (``config.pbtxt``) that set the cache's limits.
CAPACITY_PARAMETER = "head_cache_bytes"
MAX_HEAD_PARAMETER = "max_head_bytes"
DEFAULT_CAPACITY_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_HEAD_BYTES = 4 * 1024 * 1024
MAX_HEAD_ID_BYTES = 512


class HeadRefused(ValueError):
    """A head the cache will not hold (bad checksum or format, too large, a bad id)."""


def head_bytes(head: Head) -> int:
    """What one resident head is counted as against the cache's capacity: its arrays and names."""
    return head.nbytes + sum(len(label.encode("utf-8")) for label in head.labels)


class HeadCache:
    """Resident heads by id, least recently used first out once ``capacity_bytes`` is reached."""

    def __init__(self, *, capacity_bytes: int, max_head_bytes: int) -> None:
        self.capacity_bytes = int(capacity_bytes)
        self.max_head_bytes = int(max_head_bytes)
        self._heads: OrderedDict[str, tuple[Head, int]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        return self._used

    def load(
        self, head_id: str, head_npz: bytes, labels_json: bytes, sha256: str
    ) -> tuple[int, list[str]]:
        """Verify and hold a head under ``head_id`` (replacing one of that id); its bytes and
        the ids evicted to make room. Raises HeadRefused, changing nothing, if it is not valid."""
        check_head_id(head_id)
        if not sha256:
            raise HeadRefused(f"Head {head_id!r} came without a sha256; not loaded.")
        if head_digest(head_npz, labels_json) != sha256.lower():
            raise HeadRefused(f"Head {head_id!r}: its sha256 does not match its bytes; not loaded.")
        try:
            head = Head.from_bytes(head_npz, labels_json)
        except (HeadFormatError, ValueError, KeyError, OSError) as exc:
            raise HeadRefused(f"Head {head_id!r} cannot be served: {exc}") from None
        if any(label == PADDING_LABEL for label in head.labels):
            raise HeadRefused(f"Head {head_id!r} names an empty label; every label needs a name.")
        size = head_bytes(head)
        limit = min(self.max_head_bytes, self.capacity_bytes)
        if size > limit:
            raise HeadRefused(
                f"Head {head_id!r} holds {size} bytes, over this model's limit of {limit} bytes."
            )
        evicted = []
        with self._lock:
            previous = self._heads.pop(head_id, None)
            if previous is not None:
                self._used -= previous[1]
            while self._heads and self._used + size > self.capacity_bytes:
                old_id, (_, old_size) = self._heads.popitem(last=False)
                self._used -= old_size
                evicted.append(old_id)
            self._heads[head_id] = (head, size)
            self._used += size
        return size, evicted

    def unload(self, head_id: str) -> bool:
        """Drop ``head_id``; whether it was resident."""
        with self._lock:
            entry = self._heads.pop(head_id, None)
            if entry is not None:
                self._used -= entry[1]
        return entry is not None

    def get(self, head_id: str) -> Head | None:
        """The resident head ``head_id`` (now the most recently used), or None."""
        with self._lock:
            entry = self._heads.get(head_id)
            if entry is None:
                return None
            self._heads.move_to_end(head_id)
            return entry[0]

    def resident(self) -> dict[str, int]:
        """Resident head ids → bytes, least recently used first."""
        with self._lock:
            return {head_id: size for head_id, (_, size) in self._heads.items()}


def check_head_id(head_id: str) -> None:
    if not head_id or len(head_id.encode("utf-8")) > MAX_HEAD_ID_BYTES:
        raise HeadRefused(f"A head id must have 1 to {MAX_HEAD_ID_BYTES} bytes, not {head_id!r}.")


class SharedIntentServer:
    """The shared encoder and its head cache, without Triton: what ``TritonPythonModel`` runs."""

    def __init__(
        self,
        model_dir: str,
        *,
        capacity_bytes: int = DEFAULT_CAPACITY_BYTES,
        max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
        device: str = CPU,
        device_id: int = 0,
    ) -> None:
        self.encoder = Encoder(model_dir, device=device, device_id=device_id)
        self.heads = HeadCache(capacity_bytes=capacity_bytes, max_head_bytes=max_head_bytes)

    def control(self, op: str, fields: dict[str, str]) -> dict:
        """Apply one control operation; the RESULT object (``error`` set when a load is refused)."""
        result: dict = {}
        if op == OP_LOAD:
            head_id = fields.get("HEAD_ID", "")
            try:
                head_npz = _base64(fields.get("HEAD_NPZ", ""), "HEAD_NPZ")
                labels_json = _base64(fields.get("LABELS_JSON", ""), "LABELS_JSON")
                size, evicted = self.heads.load(
                    head_id, head_npz, labels_json, fields.get("SHA256", "")
                )
                result.update(loaded=head_id, bytes=size, evicted=evicted)
            except HeadRefused as exc:
                result.update(error=str(exc), refused=head_id)
        elif op == OP_UNLOAD:
            result["unloaded"] = self.heads.unload(fields.get("HEAD_ID", ""))
        elif op != OP_LIST:
            raise ValueError(f"OP must be one of {', '.join(OPERATIONS)}, not {op!r}.")
        result.update(
            heads=self.heads.resident(),
            used_bytes=self.heads.used_bytes,
            capacity_bytes=self.heads.capacity_bytes,
        )
        return result

    def resolve(self, head_ids: list[str]) -> list[Head | None]:
        """The resident head of each row (None where not loaded), fixed now so that a later
        unload cannot change which head answers a row already accepted."""
        return [self.heads.get(head_id) for head_id in head_ids]

    def answer(self, texts: list[str], head_ids: list[str]) -> dict[str, np.ndarray]:
        """The infer outputs for ``texts``, row i answered by head ``head_ids[i]``."""
        heads = self.resolve(head_ids)
        return answer_rows(self.embed_known(texts, heads), heads, head_ids)

    def embed_known(self, texts: list[str], heads: list[Head | None]) -> np.ndarray | None:
        """Embeddings of the rows that have a head (rows without one are not encoded)."""
        known = [i for i, head in enumerate(heads) if head is not None]
        if not known:
            return None
        embedded = self.encoder.embed([texts[i] for i in known])
        rows = np.zeros((len(texts), embedded.shape[1]), dtype=np.float32)
        rows[known] = embedded
        return rows


def answer_rows(
    embeddings: np.ndarray | None, heads: list[Head | None], head_ids: list[str]
) -> dict[str, np.ndarray]:
    """LABEL, SCORES, LABELS, STATUS and ROW_HEAD for rows of ``embeddings``, row i by
    ``heads[i]`` (resolved from ``head_ids[i]``): rows sharing a head go through it together."""
    count = len(heads)
    width = max([len(head.labels) for head in heads if head is not None] or [1])
    label = np.full((count, 1), b"", dtype=object)
    scores = np.zeros((count, width), dtype=np.float32)
    names = np.full((count, width), b"", dtype=object)
    status = np.full((count, 1), STATUS_NOT_LOADED.encode(), dtype=object)
    groups: dict[int, tuple[Head, list[int]]] = {}
    for index, head in enumerate(heads):
        if head is not None:
            groups.setdefault(id(head), (head, []))[1].append(index)
    for head, rows in groups.values():
        probabilities = head.probabilities(embeddings[rows])
        k = len(head.labels)
        scores[rows, :k] = probabilities
        names[rows, :k] = head.label_array
        label[rows, 0] = [answer.encode("utf-8") for answer in head.decide(probabilities)]
        status[rows, 0] = STATUS_OK.encode()
    row_head = np.array([[head_id.encode("utf-8")] for head_id in head_ids], dtype=object)
    row_head = row_head.reshape(count, 1)
    return {
        "LABEL": label,
        "SCORES": scores,
        "LABELS": names,
        "STATUS": status,
        "ROW_HEAD": row_head,
    }


def _base64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise HeadRefused(f"{name} must be base64 text.") from None


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _parameter(config: dict, key: str, default: int) -> int:
    raw = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return int(raw) if str(raw).strip() else default


class TritonPythonModel:
    """Triton's entry point: one encoder and one head cache per model instance."""

    def initialize(self, args: dict) -> None:
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        config = json.loads(args.get("model_config") or "{}")
        device, device_id = instance_device(args)
        self.server = SharedIntentServer(
            model_dir,
            capacity_bytes=_parameter(config, CAPACITY_PARAMETER, DEFAULT_CAPACITY_BYTES),
            max_head_bytes=_parameter(config, MAX_HEAD_PARAMETER, DEFAULT_MAX_HEAD_BYTES),
            device=device,
            device_id=device_id,
        )
        log_info(
            pb_utils,
            f"{args['model_name']}: {describe(self.server.encoder, requested=device)}; "
            f"head cache of {self.server.heads.capacity_bytes} bytes",
        )

    def execute(self, requests: list) -> list:
        # In arrival order: control operations apply at once, answers fix their heads.
        plans: list = []
        for request in requests:
            try:
                plans.append(self._plan(request))
            except Exception as exc:  # this request gets the reason; the others go on
                plans.append(pb_utils.TritonError(f"shared intent classifier: {exc}"))
        texts = [text for plan in plans if isinstance(plan, tuple) for text in plan[0]]
        heads = [head for plan in plans if isinstance(plan, tuple) for head in plan[1]]
        try:
            embeddings = self.server.embed_known(texts, heads)
        except Exception as exc:  # answer every ticket request of the batch with the reason
            error = pb_utils.TritonError(f"shared intent classifier failed: {exc}")
            plans = [error if isinstance(plan, tuple) else plan for plan in plans]
            embeddings = None
        responses, start = [], 0
        for plan in plans:
            if isinstance(plan, pb_utils.TritonError):
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=plan))
                continue
            if isinstance(plan, dict):
                result = np.array(
                    [[json.dumps(plan, ensure_ascii=False, separators=(",", ":")).encode()]],
                    dtype=object,
                )
                tensors = [pb_utils.Tensor("RESULT", result)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
                continue
            count = len(plan[0])
            rows = None if embeddings is None else embeddings[start : start + count]
            start += count
            outputs = answer_rows(rows, plan[1], plan[2])
            tensors = [pb_utils.Tensor(name, value) for name, value in outputs.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def _plan(self, request):
        """A control request's RESULT (applied now), or a ticket request's texts, heads and
        head ids."""
        op_tensor = pb_utils.get_input_tensor_by_name(request, "OP")
        if op_tensor is not None:
            fields = {}
            for name in ("HEAD_ID", "HEAD_NPZ", "LABELS_JSON", "SHA256"):
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    values = tensor.as_numpy().reshape(-1)
                    fields[name] = _text(values[0]) if len(values) else ""
            ops = op_tensor.as_numpy().reshape(-1)
            if len(ops) != 1:
                raise ValueError(f"OP must hold one operation, not {len(ops)}.")
            return self.server.control(_text(ops[0]), fields)
        text_tensor = pb_utils.get_input_tensor_by_name(request, "TEXT")
        head_tensor = pb_utils.get_input_tensor_by_name(request, "HEAD")
        if text_tensor is None or head_tensor is None:
            raise ValueError("a request needs TEXT and HEAD (one head id per row), or OP.")
        texts = [_text(value) for value in text_tensor.as_numpy().reshape(-1)]
        head_ids = [_text(value) for value in head_tensor.as_numpy().reshape(-1)]
        if len(texts) != len(head_ids):
            raise ValueError(f"TEXT has {len(texts)} rows but HEAD has {len(head_ids)}.")
        return texts, self.server.resolve(head_ids), head_ids

    def finalize(self) -> None:
        self.server = None
