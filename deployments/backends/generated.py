"""What a generating model's responses say (Triton's generate events: ``text_output``, a delta
of text, and ``finish_reason``, empty until the last), read the same way by every backend and
protocol."""

from __future__ import annotations

from collections.abc import Iterable

from models_registry.kinds import GENERATE_FINISH_OUTPUT, GENERATE_TEXT_INPUT, GENERATE_TEXT_OUTPUT

# Finish reasons an answer may end with; an answer whose model gave none ends with "stop".
FINISH_REASONS = ("stop", "length")


def generation_body(prompt: str, parameters: dict | None = None) -> dict:
    """One request of Triton's generate extension: the prompt and the request's parameters
    (checked by the caller)."""
    return {GENERATE_TEXT_INPUT: prompt, "parameters": dict(parameters or {})}


def event_text(event: dict) -> str:
    """The new text one of the model's responses carries."""
    text = event.get(GENERATE_TEXT_OUTPUT, "")
    if isinstance(text, list):  # a batched model answers a one-row tensor
        text = "".join(str(piece) for piece in text)
    return text if isinstance(text, str) else str(text)


def event_finish_reason(event: dict) -> str:
    """The finish reason one of the model's responses carries ("" until the last)."""
    reason = event.get(GENERATE_FINISH_OUTPUT, "")
    if isinstance(reason, list):
        reason = reason[0] if reason else ""
    return reason if isinstance(reason, str) else str(reason)


def finish_reason_of(reason: str) -> str:
    """The finish reason an answer reports for what the model said."""
    return reason if reason in FINISH_REASONS else "stop"


def whole_output(events: Iterable[dict]) -> dict:
    """One prompt's answer, whole: ``{"text", "finish_reason", "tokens"}`` (a token is one
    response that carried text)."""
    pieces, reason = [], ""
    for event in events:
        text = event_text(event)
        if text:
            pieces.append(text)
        reason = event_finish_reason(event) or reason
    return {
        "text": "".join(pieces),
        "finish_reason": finish_reason_of(reason),
        "tokens": len(pieces),
    }
