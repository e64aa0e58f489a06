"""The ``reply-autocomplete`` kind: a ticket (or the start of a reply) → a draft of the agent's
reply in the style of the tenant's earlier replies, generated token by token and streamed.

No pretrained generative model can be installed here, so ``train`` fits a compact decoder-only
transformer (``reply_decoder``, torch on the CPU) to the tenant's own rows: the MiniLM WordPiece
tokenizer cut down to the ids the tenant's data uses, sequences ``<prompt> [SEP] <reply> [EOS]``
with the loss on the reply. The artifact is float32 weights, that vocabulary and the tokenizer;
the serving side (``models_registry.triton_runtime.reply_autocomplete``) runs the decoder in
numpy with a key/value cache and streams through Triton's decoupled mode.

Quality is the held-out next-token accuracy on the validation replies (teacher-forced, as greedy
generation would choose), reported beside a backoff trigram's over the same tokens trained on
the same rows: the quality gate holds a version that does not beat it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models_registry.exceptions import InvalidDataset
from models_registry.kinds import (
    GENERATE_FINISH_OUTPUT,
    GENERATE_TEXT_INPUT,
    GENERATE_TEXT_OUTPUT,
    GenerationSpec,
    InvalidHyperparameter,
    ModelKind,
    TritonSignature,
    TritonTensor,
    check_hyperparameter_names,
    hyperparameter,
    register,
)
from models_registry.kinds.reply_sequences import (
    BATCH_SIZE,
    ReplySequence,
    reply_sequence,
    reply_targets,
)
from models_registry.triton_runtime.reply_autocomplete import (
    ARTIFACT_FILE,
    EOS,
    HEADS,
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    UNK,
    VOCAB_FILE,
    WEIGHTS_FILE,
    Decoder,
    Vocabulary,
    load_tokenizer,
    tokenizer_ids,
)

RUNTIME_MODULE = "models_registry.triton_runtime.reply_autocomplete"
HYPERPARAMETERS = {"epochs", "learning_rate", "d_model", "layers", "max_tokens", "seed", "threads"}
# Without ``epochs``, a model trains for at least this many optimizer steps (and 6 epochs): the
# decoder passes its trigram baseline only after enough steps, whatever the rows (on 256 demo
# rows after 160 steps but not 128, on 800 after 100).
MIN_TRAINING_STEPS = 300
MIN_EPOCHS = 6
MAX_EPOCHS = 500
DEFAULT_LEARNING_RATE = 1e-2
DEFAULT_D_MODEL = 128
DEFAULT_LAYERS = 2
DEFAULT_MAX_TOKENS = 128
WARMUP_PROMPT = "Hi, I left my phone in the car after my ride last night."
GENERATION = GenerationSpec()


@dataclass(frozen=True)
class ReplySettings:
    """How a reply model is trained, from the kind's hyperparameters (``reply_settings``)."""

    epochs: int | None = None  # None: enough for MIN_TRAINING_STEPS (``epochs_for``)
    learning_rate: float = DEFAULT_LEARNING_RATE
    d_model: int = DEFAULT_D_MODEL
    layers: int = DEFAULT_LAYERS
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int = 0
    threads: int = 1

    @property
    def max_prompt_tokens(self) -> int:
        """The prompt's share of the context: its last tokens are what a reply follows."""
        return self.max_tokens // 2


def reply_settings(hyperparameters: dict) -> ReplySettings:
    """The hyperparameters checked and parsed; InvalidHyperparameter (400) names a bad one."""
    check_hyperparameter_names(hyperparameters, kind=KIND.name, known=HYPERPARAMETERS)
    present = {name: value for name, value in hyperparameters.items() if value not in (None, "")}
    d_model = hyperparameter(present, "d_model", DEFAULT_D_MODEL, minimum=32, maximum=512)
    if d_model % HEADS:
        raise InvalidHyperparameter(
            f"Hyperparameter 'd_model' must be a multiple of {HEADS} (the attention heads), "
            f"not {present.get('d_model')!r}.",
            field="d_model",
        )
    return ReplySettings(
        epochs=(
            hyperparameter(present, "epochs", MIN_EPOCHS, minimum=1, maximum=MAX_EPOCHS)
            if "epochs" in present
            else None
        ),
        learning_rate=hyperparameter(
            present, "learning_rate", DEFAULT_LEARNING_RATE, minimum=1e-5, maximum=1e-1
        ),
        d_model=d_model,
        layers=hyperparameter(present, "layers", DEFAULT_LAYERS, minimum=1, maximum=6),
        max_tokens=hyperparameter(
            present, "max_tokens", DEFAULT_MAX_TOKENS, minimum=16, maximum=256
        ),
        seed=hyperparameter(present, "seed", 0, minimum=0, maximum=2**31 - 1),
        threads=hyperparameter(present, "threads", default_threads(), minimum=1, maximum=256),
    )


def epochs_for(settings: ReplySettings, *, train_rows: int) -> int:
    """The epochs asked for, else enough for ``MIN_TRAINING_STEPS`` (at least ``MIN_EPOCHS``)."""
    if settings.epochs is not None:
        return settings.epochs
    steps_per_epoch = math.ceil(train_rows / BATCH_SIZE)
    return min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(MIN_TRAINING_STEPS / steps_per_epoch)))


def default_threads() -> int:
    """Half the cores: a model this small gains little from more threads, and on a busy
    machine two threads each waiting on the other ran a step seven times slower than one."""
    return max(1, (os.cpu_count() or 1) // 2)


def check_hyperparameters(hyperparameters: dict) -> None:
    """Refuse (InvalidHyperparameter, 400 naming the field) what ``train`` would refuse."""
    reply_settings(hyperparameters)


# --------------------------------------------------------------------------- vocabulary


def build_vocabulary(rows: list[dict], *, tokenizer_path: Path) -> Vocabulary:
    """The tenant's vocabulary: the specials, then every MiniLM id of the rows' texts and
    replies, most frequent first; each written as the replies usually write it (its casing
    away from a sentence start), else as the tickets do."""
    tokenizer = load_tokenizer(str(tokenizer_path))
    counts: Counter[int] = Counter()
    forms = {
        (column, where): defaultdict(Counter)
        for column in ("reply", "text")
        for where in ("inside", "sentence")
    }
    # How the replies join each pair of tokens: (previous, token) → Counter of (space, form).
    joins: dict[tuple[int, int], Counter] = defaultdict(Counter)
    for row in rows:
        for column in ("reply", "text"):
            text = str(row[column])
            counts.update(base for base in tokenizer_ids(tokenizer, text) if base >= 0)
            _collect_surfaces(
                tokenizer,
                text,
                inside=forms[(column, "inside")],
                sentence=forms[(column, "sentence")],
                joins=joins if column == "reply" else None,
            )
    base_vocabulary = {index: token for token, index in tokenizer.get_vocab().items()}
    ordered = sorted(counts, key=lambda base: (-counts[base], base))
    tokens = [*SPECIAL_TOKENS, *(base_vocabulary[base] for base in ordered)]
    surfaces = [*SPECIAL_TOKENS]
    sentence_surfaces = [*SPECIAL_TOKENS]
    for base in ordered:
        token = base_vocabulary[base].removeprefix("##")
        surface = _most_common_form(forms, base, "inside") or token
        surfaces.append(surface)
        sentence_surfaces.append(
            _most_common_form(forms, base, "sentence") or surface[:1].upper() + surface[1:]
        )
    vocabulary = Vocabulary(
        tokenizer_ids=[-1] * len(SPECIAL_TOKENS) + ordered,
        tokens=tokens,
        surfaces=surfaces,
        sentence_surfaces=sentence_surfaces,
        tokenizer=tokenizer,
    )
    vocabulary.pairs = _learned_pairs(vocabulary, joins)
    return vocabulary


def _learned_pairs(vocabulary: Vocabulary, joins: dict) -> dict:
    """The pairs of tokens the replies join otherwise than the rules do: each such pair's usual
    spacing and form, where they differ from what ``Vocabulary.piece`` writes without it."""
    own = vocabulary.by_tokenizer_id
    learned = {}
    for (previous_base, base), seen in joins.items():
        (space, form), _ = seen.most_common(1)[0]
        pair = (own[previous_base], own[base])
        if vocabulary.piece([*pair], 1) != (" " if space else "") + form:
            learned[pair] = (int(space), form)
    return learned


def _most_common_form(forms: dict, base: int, where: str) -> str:
    """How the replies (else the tickets) most often write token ``base`` there, or ""."""
    for column in ("reply", "text"):
        counts = forms[(column, where)].get(base)
        if counts:
            return counts.most_common(1)[0][0]
    return ""


def _collect_surfaces(
    tokenizer, text: str, *, inside: dict, sentence: dict, joins: dict | None = None
) -> None:
    """Count how ``text`` writes each token: where a sentence may start (a line's first token,
    or after . ! ?) and elsewhere; and with ``joins``, each pair's spacing and second form."""
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            continue
        encoding = tokenizer.encode(line, add_special_tokens=False)
        previous_end = 0
        for position, (base, (start, end)) in enumerate(
            zip(encoding.ids, encoding.offsets, strict=True)
        ):
            # A word piece continues its word: only whole words start sentences.
            starts = position == 0 or (start > previous_end and line[:start].rstrip()[-1:] in ".!?")
            (sentence if starts else inside)[base][line[start:end]] += 1
            if joins is not None and position:
                pair = (encoding.ids[position - 1], base)
                joins[pair][(start > previous_end, line[start:end])] += 1
            previous_end = end


def write_vocabulary(vocabulary: Vocabulary, out_dir: Path) -> None:
    (Path(out_dir) / VOCAB_FILE).write_text(
        json.dumps(
            {
                "specials": list(SPECIAL_TOKENS),
                "tokenizer_ids": vocabulary.tokenizer_ids,
                "tokens": vocabulary.tokens,
                "surfaces": vocabulary.surfaces,
                "sentence_surfaces": vocabulary.sentence_surfaces,
                "pairs": [
                    [a, b, space, form] for (a, b), (space, form) in vocabulary.pairs.items()
                ],
            },
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )


# --------------------------------------------------------------------------- sequences


# --------------------------------------------------------------------------- the n-gram baseline


class TrigramBaseline:
    """The per-tenant baseline: the most frequent next reply token after the last two (backing
    off to the last one, then to the most frequent token), counted on the training replies."""

    def __init__(self, sequences: list[ReplySequence]) -> None:
        self.trigrams: dict[tuple[int, int], Counter] = defaultdict(Counter)
        self.bigrams: dict[int, Counter] = defaultdict(Counter)
        self.unigrams: Counter[int] = Counter()
        for sequence in sequences:
            for history, token in reply_targets(sequence):
                if len(history) >= 2:
                    self.trigrams[(history[-2], history[-1])][token] += 1
                self.bigrams[history[-1]][token] += 1
                self.unigrams[token] += 1

    def predict(self, history: list[int]) -> int:
        if len(history) >= 2 and (history[-2], history[-1]) in self.trigrams:
            return _most_frequent(self.trigrams[(history[-2], history[-1])])
        if history[-1] in self.bigrams:
            return _most_frequent(self.bigrams[history[-1]])
        return _most_frequent(self.unigrams) if self.unigrams else EOS

    def accuracy(self, sequences: list[ReplySequence]) -> float:
        """Next-token accuracy on the reply tokens (an unknown word is always missed)."""
        scored = [pair for sequence in sequences for pair in reply_targets(sequence)]
        right = sum(
            1 for history, token in scored if token != UNK and self.predict(history) == token
        )
        return right / len(scored) if scored else 0.0


def _most_frequent(counts: Counter) -> int:
    # Ties go to the lower id (the more frequent token overall): the same answer every run.
    return min(counts, key=lambda token: (-counts[token], token))


# --------------------------------------------------------------------------- scoring


def score_decoder(decoder: Decoder, sequences: list[ReplySequence]) -> dict:
    """The served decoder's teacher-forced figures on the reply tokens: next-token accuracy
    (choosing as greedy generation does; an unknown word is always missed), perplexity over the
    known words, and how many tokens were unknown."""
    from models_registry.triton_runtime.reply_autocomplete import BLOCKED_TOKENS

    right = known = total = unknown = 0
    log_loss = 0.0
    for sequence in sequences:
        logits = decoder.forward(sequence.ids[:-1])[sequence.first_target - 1 :].astype(np.float64)
        targets = np.asarray(sequence.ids[sequence.first_target :])
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        logits[:, list(BLOCKED_TOKENS)] = -np.inf
        chosen = logits.argmax(axis=1)
        is_known = targets != UNK
        right += int(((chosen == targets) & is_known).sum())
        log_loss -= float(log_probabilities[np.arange(len(targets)), targets][is_known].sum())
        known += int(is_known.sum())
        unknown += int((~is_known).sum())
        total += len(targets)
    return {
        "next_token_accuracy": right / total if total else 0.0,
        "perplexity": math.exp(log_loss / known) if known else float("inf"),
        "validation_tokens": total,
        "validation_unknown_token_share": unknown / total if total else 0.0,
    }


# --------------------------------------------------------------------------- training


def train(
    *,
    train_rows: list[dict],
    validation_rows: list[dict],
    out_dir: Path,
    hyperparameters: dict,
    cache_dir: Path,
    progress: Callable[[int, str], None],
) -> dict:
    """Fit the reply decoder to ``train_rows`` (``text`` → ``reply``), keep the epoch that
    predicts ``validation_rows``' replies best, write the artifact and score it there.

    Hyperparameters (``reply_settings``): ``epochs`` (6, or more for at least 300 steps),
    ``learning_rate`` (1e-2, AdamW with
    warm-up and cosine decay), ``d_model`` (128, a multiple of 4), ``layers`` (2), ``max_tokens``
    (the context, 128; the prompt keeps its last half), ``seed`` and ``threads``. Returns the
    next-token accuracy, the trigram baseline's, perplexity and the timings.
    """
    from models_registry.base_model import base_tokenizer_path
    from models_registry.kinds import reply_decoder

    settings = reply_settings(hyperparameters)
    _check_rows(train_rows, what="training")
    _check_rows(validation_rows, what="validation")
    progress(3, f"building the vocabulary of {len(train_rows)} rows")
    tokenizer_path = base_tokenizer_path()
    vocabulary = build_vocabulary(train_rows, tokenizer_path=tokenizer_path)
    train_sequences = [_sequence(vocabulary, row, settings) for row in train_rows]
    validation_sequences = [_sequence(vocabulary, row, settings) for row in validation_rows]
    epochs = epochs_for(settings, train_rows=len(train_rows))
    progress(8, f"training a {settings.layers}-layer decoder over {len(vocabulary)} tokens")
    model, fitted = reply_decoder.fit(
        train=train_sequences,
        validation=validation_sequences,
        vocabulary_size=len(vocabulary),
        d_model=settings.d_model,
        layers=settings.layers,
        context=settings.max_tokens,
        epochs=epochs,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        threads=settings.threads,
        progress=progress,
    )
    progress(88, "writing the artifact")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / WEIGHTS_FILE, **reply_decoder.export_weights(model))
    write_vocabulary(vocabulary, out_dir)
    (out_dir / TOKENIZER_FILE).unlink(missing_ok=True)
    shutil.copyfile(tokenizer_path, out_dir / TOKENIZER_FILE)
    (out_dir / ARTIFACT_FILE).write_text(
        json.dumps(
            {
                "kind": KIND.name,
                "d_model": settings.d_model,
                "layers": settings.layers,
                "heads": HEADS,
                "context_tokens": settings.max_tokens,
                "max_prompt_tokens": settings.max_prompt_tokens,
                "vocabulary_size": len(vocabulary),
            },
            indent=2,
        )
        + "\n"
    )
    progress(92, f"scoring {len(validation_rows)} validation replies")
    started = time.perf_counter()
    # The decoder as written is the decoder scored: what is served is what is measured.
    scored = score_decoder(Decoder.from_dir(str(out_dir)), validation_sequences)
    baseline = TrigramBaseline(train_sequences).accuracy(validation_sequences)
    return {
        **scored,
        "ngram_next_token_accuracy": baseline,
        "vocabulary_size": len(vocabulary),
        "train_rows": len(train_rows),
        "validation_rows": len(validation_rows),
        "epochs": epochs,
        **fitted,
        "score_seconds": round(time.perf_counter() - started, 3),
    }


def _sequence(vocabulary: Vocabulary, row: dict, settings: ReplySettings) -> ReplySequence:
    return reply_sequence(
        vocabulary,
        text=str(row["text"]),
        reply=str(row["reply"]),
        max_tokens=settings.max_tokens,
        max_prompt_tokens=settings.max_prompt_tokens,
    )


def _check_rows(rows: list[dict], *, what: str) -> None:
    if not rows:
        raise InvalidDataset(f"The {what} data has no rows.", field=what)
    for number, row in enumerate(rows, 1):
        if not str(row.get("text") or "").strip() or not str(row.get("reply") or "").strip():
            raise InvalidDataset(
                f"The {what} data's row {number} needs a non-empty text and reply.",
                field="dataset",
            )


# --------------------------------------------------------------------------- serving


def triton_signature(artifact_dir: Path) -> TritonSignature:
    """The generate extension's tensors, the generation limits and the warm-up prompt; a
    decoupled model (one response per piece of text)."""
    text = (1,)
    return TritonSignature(
        inputs=(TritonTensor(name=GENERATE_TEXT_INPUT, data_type="TYPE_STRING", dims=text),),
        outputs=(
            TritonTensor(name=GENERATE_TEXT_OUTPUT, data_type="TYPE_STRING", dims=text),
            TritonTensor(name=GENERATE_FINISH_OUTPUT, data_type="TYPE_STRING", dims=text),
        ),
        parameters={
            "max_new_tokens_default": str(GENERATION.max_new_tokens_default),
            "max_new_tokens_limit": str(GENERATION.max_new_tokens_limit),
            "temperature_default": str(GENERATION.temperature_default),
            "top_p_default": str(GENERATION.top_p_default),
            "max_stop_sequences": str(GENERATION.max_stop_sequences),
            "max_stop_chars": str(GENERATION.max_stop_chars),
            "warmup_prompt": WARMUP_PROMPT,
        },
        decoupled=True,
    )


def encode_request(inputs: list) -> dict:
    """The generate extension's body for the first input (a generating model takes one prompt
    per request)."""
    return {GENERATE_TEXT_INPUT: str(inputs[0]) if inputs else ""}


def decode_response(answer: dict) -> list[str]:
    """``[reply]`` from a ``/generate`` answer (the whole text in one response)."""
    if isinstance(answer, str | bytes):
        answer = json.loads(answer)
    text = answer.get(GENERATE_TEXT_OUTPUT, "")
    return ["".join(text) if isinstance(text, list) else str(text)]


KIND = register(
    ModelKind(
        name="reply-autocomplete",
        description=(
            "Drafts an agent's reply to a ticket in the tenant's style: a compact decoder trained "
            "on the tenant's replies, streamed token by token."
        ),
        input_schema={
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "minItems": 1,
            "maxItems": 1,
        },  # fmt: skip
        output_schema={"type": "array", "items": {"type": "string"}},
        warmup_inputs=[WARMUP_PROMPT],
        runtime_module=RUNTIME_MODULE,
        runtime_requirements=("tokenizers",),
        artifact_files=(WEIGHTS_FILE, VOCAB_FILE, TOKENIZER_FILE, ARTIFACT_FILE),
        triton_signature=triton_signature,
        train=train,
        check_hyperparameters=check_hyperparameters,
        primary_metric="next_token_accuracy",
        baseline_metric="ngram_next_token_accuracy",
        dataset_columns=("text", "reply"),
        encode_request=encode_request,
        decode_response=decode_response,
        # One prompt per request: the model streams one reply at a time.
        max_batch_size=1,
        # Python stub RSS on Triton 2.51 (CPU), the 1,000-row demo model: 55 MB loaded, 59 MB
        # after 20 streams; a little over, so the first load never overshoots the budget.
        expected_memory_mb=80.0,
        generation=GENERATION,
    )
)
