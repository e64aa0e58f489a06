"""A reply row as token ids, shared by the reply kind's training (``reply_decoder``, torch),
its n-gram baseline and its scoring: ``<prompt> [SEP] <reply> [EOS]`` cut to the context."""

from __future__ import annotations

from dataclasses import dataclass

from models_registry.triton_runtime.reply_autocomplete import EOS, SEP, Vocabulary

# Rows per optimizer step.
BATCH_SIZE = 16


@dataclass(frozen=True)
class ReplySequence:
    """One row as token ids: prompt, ``[SEP]``, reply, ``[EOS]`` (cut to the context); the
    positions from ``first_target`` on are the reply tokens the loss and the metrics score."""

    ids: list[int]
    first_target: int


def reply_sequence(
    vocabulary: Vocabulary, *, text: str, reply: str, max_tokens: int, max_prompt_tokens: int
) -> ReplySequence:
    """The row as the model trains on it; the prompt's ids are the runtime's own."""
    prompt = vocabulary.encode(text)[-max_prompt_tokens:]
    ids = [*prompt, SEP, *vocabulary.encode(reply), EOS][:max_tokens]
    return ReplySequence(ids=ids, first_target=len(prompt) + 1)


def reply_targets(sequence: ReplySequence) -> list[tuple[list[int], int]]:
    """Each scored position: the reply so far (``[SEP]`` first) and the token that follows."""
    start = sequence.first_target - 1
    return [
        (sequence.ids[start:index], sequence.ids[index])
        for index in range(sequence.first_target, len(sequence.ids))
    ]
