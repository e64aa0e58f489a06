"""Generation requests for kinds that generate text (``ModelKind.generation``): the caller's
sampling parameters checked against the kind's bounds, the body of Triton's generate extension,
what one answer produced (text, finish reason, tokens, time to first token), and the framings the
protocols stream it in (server-sent events, AWS event-stream messages).

Nothing here names a kind: every bound comes from the kind's ``GenerationSpec``.
"""

from __future__ import annotations

import json
import math
import struct
import time
import zlib
from dataclasses import dataclass, field

from deployments.backends.generated import (
    event_finish_reason,
    event_text,
    finish_reason_of,
    generation_body,
)
from deployments.proxy.core import ProxyError
from deployments.usage import GenerationFigures
from models_registry.kinds import GENERATION_PARAMETERS, GenerationSpec

EVENT_STREAM = "text/event-stream"
# Sampling bounds every generating kind shares (the kind bounds tokens and stop sequences).
TEMPERATURE_MAX = 2.0
SEED_MAX = 2**63 - 1
# The longest prompt accepted, in characters.
PROMPT_MAX_CHARS = 16_000


def _invalid(field_name: str, message: str) -> ProxyError:
    return ProxyError(400, f"{field_name}: {message}", code="invalid", field=field_name)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def triton_parameters(spec: GenerationSpec, parameters: object, *, where: str = "parameters"):
    """The request parameters Triton's generate extension passes to the model, from the
    caller's ``parameters``; 400 naming the first bad one (never repeating its value)."""
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise _invalid(where, "must be an object.")
    unknown = sorted(set(parameters) - set(GENERATION_PARAMETERS))
    if unknown:
        name = unknown[0] if len(unknown[0]) <= 40 else unknown[0][:40] + "…"
        raise _invalid(
            f"{where}.{name}",
            f"not a generation parameter; use {', '.join(GENERATION_PARAMETERS)}.",
        )
    checked: dict = {}
    if "max_new_tokens" in parameters:
        value = parameters["max_new_tokens"]
        if not (_number(value) and float(value).is_integer()):
            raise _invalid(f"{where}.max_new_tokens", "must be an integer.")
        if not 1 <= value <= spec.max_new_tokens_limit:
            raise _invalid(
                f"{where}.max_new_tokens",
                f"must be between 1 and {spec.max_new_tokens_limit}.",
            )
        checked["max_new_tokens"] = int(value)
    if "temperature" in parameters:
        value = parameters["temperature"]
        if not (_number(value) and math.isfinite(value) and 0 <= value <= TEMPERATURE_MAX):
            raise _invalid(
                f"{where}.temperature", f"must be a number between 0 and {TEMPERATURE_MAX:g}."
            )
        checked["temperature"] = float(value)
    if "top_p" in parameters:
        value = parameters["top_p"]
        if not (_number(value) and math.isfinite(value) and 0 < value <= 1):
            raise _invalid(f"{where}.top_p", "must be a number above 0 and at most 1.")
        checked["top_p"] = float(value)
    if "stop" in parameters:
        checked["stop"] = json.dumps(_stop_sequences(spec, parameters["stop"], where=where))
    if "seed" in parameters:
        value = parameters["seed"]
        if not (_number(value) and float(value).is_integer() and 0 <= value <= SEED_MAX):
            raise _invalid(f"{where}.seed", "must be a whole number of at least 0.")
        checked["seed"] = int(value)
    return checked


def _stop_sequences(spec: GenerationSpec, value: object, *, where: str) -> list[str]:
    sequences = [value] if isinstance(value, str) else value
    if not isinstance(sequences, list):
        raise _invalid(f"{where}.stop", "must be a string or a list of strings.")
    if len(sequences) > spec.max_stop_sequences:
        raise _invalid(f"{where}.stop", f"holds at most {spec.max_stop_sequences} sequences.")
    for index, sequence in enumerate(sequences):
        if not isinstance(sequence, str) or not sequence:
            raise _invalid(f"{where}.stop[{index}]", "must be a non-empty string.")
        if len(sequence) > spec.max_stop_chars:
            raise _invalid(
                f"{where}.stop[{index}]", f"must be at most {spec.max_stop_chars} characters."
            )
    return sequences


def check_prompt(prompt: object, *, where: str) -> str:
    """A prompt as the model takes it; 400 naming ``where`` otherwise."""
    if not isinstance(prompt, str):
        raise _invalid(where, "must be a string.")
    if not prompt:
        raise _invalid(where, "must not be empty.")
    if len(prompt) > PROMPT_MAX_CHARS:
        raise _invalid(where, f"must be at most {PROMPT_MAX_CHARS:,} characters.")
    return prompt


def triton_body(prompt: str, parameters: dict) -> bytes:
    """The JSON body of one request to Triton's generate extension."""
    return json.dumps(generation_body(prompt, parameters), separators=(",", ":")).encode()


@dataclass
class Tally:
    """What one answer has produced so far, timed from when the request arrived."""

    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    last_token_at: float | None = None
    tokens: int = 0
    pieces: list[str] = field(default_factory=list)
    finish_reason: str = ""

    def add(self, event: dict) -> str:
        """Count one of the model's responses; returns its new text."""
        text = event_text(event)
        if text:
            now = time.perf_counter()
            if self.first_token_at is None:
                self.first_token_at = now
            self.last_token_at = now
            self.tokens += 1
            self.pieces.append(text)
        reason = event_finish_reason(event)
        if reason:
            self.finish_reason = reason
        return text

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def finished_because(self) -> str:
        return finish_reason_of(self.finish_reason)

    @property
    def time_to_first_token_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return (self.first_token_at - self.started) * 1000

    def figures(self) -> GenerationFigures | None:
        """The usage figures of this answer (None when no token came)."""
        if self.first_token_at is None or self.last_token_at is None:
            return None
        return GenerationFigures(
            time_to_first_token_ms=(self.first_token_at - self.started) * 1000,
            tokens=self.tokens,
            generation_ms=(self.last_token_at - self.first_token_at) * 1000,
        )

    def summary(self, model_version: int | None) -> dict:
        """The ``done`` event of a native stream."""
        ttft = self.time_to_first_token_ms
        return {
            "finish_reason": self.finished_because,
            "tokens": self.tokens,
            "model_version": model_version,
            "time_to_first_token_ms": None if ttft is None else round(ttft, 3),
        }


def server_sent_event(data: dict, *, event: str | None = None) -> bytes:
    """One server-sent event (``event:`` line when named, one ``data:`` line of JSON)."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def wants_stream(payload: dict, accept: str) -> bool:
    """Whether a native request asks for a streamed answer (``"stream": true`` or
    ``Accept: text/event-stream``)."""
    return payload.get("stream") is True or EVENT_STREAM in accept.lower()


# --- AWS event streams (what InvokeEndpointWithResponseStream answers) ----------------------

AWS_EVENT_STREAM = "application/vnd.amazon.eventstream"
_STRING_HEADER = 7


def _event_headers(headers: dict[str, str]) -> bytes:
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack("!B", len(raw_name)) + raw_name
        encoded += struct.pack("!BH", _STRING_HEADER, len(raw_value)) + raw_value
    return encoded


def event_stream_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One message of the AWS event-stream framing: lengths and their CRC32, the headers, the
    payload and the whole message's CRC32."""
    encoded_headers = _event_headers(headers)
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded_headers))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + encoded_headers + payload
    return message + struct.pack("!I", zlib.crc32(message))


def payload_part(data: bytes) -> bytes:
    """A ``PayloadPart`` event carrying ``data``."""
    return event_stream_message(
        {
            ":event-type": "PayloadPart",
            ":content-type": "application/octet-stream",
            ":message-type": "event",
        },
        data,
    )


def model_stream_error(message: str, *, error_code: str) -> bytes:
    """A ``ModelStreamError`` exception event (the stream failed after it began)."""
    return event_stream_message(
        {
            ":exception-type": "ModelStreamError",
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps({"Message": message, "ErrorCode": error_code}).encode(),
    )
