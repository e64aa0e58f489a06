"""Triton python-backend model for the ``reply-autocomplete`` kind: a ticket (or the start of a
reply) → the tenant's agent reply, generated token by token and streamed.

This file is copied verbatim as ``1/model.py`` into the kind's Triton package, so it imports only
numpy, tokenizers and the standard library (plus Triton's own ``triton_python_backend_utils``
when Triton runs it). The files it loads sit beside it in ``1/``:

- ``weights.npz``: the decoder, float32 (``token_embedding`` [V, d], ``position_embedding``
  [T, d], per layer ``layer<i>.<name>`` for the attention and MLP, ``final_norm.weight/bias``);
  the output projection is the token embedding transposed;
- ``vocab.json``: the tenant's vocabulary: for each id, the MiniLM WordPiece id it stands for
  (or -1 for the specials ``[PAD] [UNK] [SEP] [EOS] [NL]``), the WordPiece string and the
  surface form the tenant's replies write it in (its usual casing);
- ``tokenizer.json``: the MiniLM WordPiece tokenizer (uncased), used to read the prompt;
- ``artifact.json``: the shape (``d_model``, ``layers``, ``heads``, ``context_tokens``,
  ``max_prompt_tokens``).

A request is the prompt's last ``max_prompt_tokens`` tokens and ``[SEP]``; the reply follows
until ``[EOS]``, a stop sequence, ``max_new_tokens`` or the end of the context. The prompt runs
through the decoder once and leaves its keys and values in a cache; each new token then runs
one position against the cached keys and values (``Decoder.start`` / ``Decoder.step``), so a
token costs the same early or late in the reply. Temperature 0 is greedy; above it, tokens are
drawn from the temperature-scaled distribution cut to its top-p nucleus, from a generator seeded
with ``seed`` when one is given.

Wire format: Triton's generate extension on a decoupled model (``POST
/v2/models/<name>/generate_stream``, Server-Sent Events)::

    request:  {"text_input": "I left my phone in the car", "parameters": {"max_new_tokens": 48,
               "temperature": 0.0, "top_p": 1.0, "stop": "[\\"\\\\n\\\\n\\"]", "seed": 7}}
    events:   {"text_output": "Hi", "finish_reason": ""}, {"text_output": " Maria", ...}, ...
              {"text_output": "", "finish_reason": "stop"}

Each response's ``text_output`` is the new text only; the deltas join into the whole reply. A
stop sequence ends the reply and is not part of it (text that might begin one is held back
until it is clear). The last response names why the reply ended (``stop`` or ``length``), then
the request is closed with the final flag. A request Triton reports cancelled (the client went
away) stops before its next token.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton: training, packaging and tests use Generator
    pb_utils = None

WEIGHTS_FILE = "weights.npz"
VOCAB_FILE = "vocab.json"
TOKENIZER_FILE = "tokenizer.json"
ARTIFACT_FILE = "artifact.json"
# The tenant vocabulary's first ids; every other id stands for one MiniLM WordPiece id.
PAD, UNK, SEP, EOS, NEWLINE = 0, 1, 2, 3, 4
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[SEP]", "[EOS]", "[NL]")
# Never generated: padding, an unknown word, a second prompt separator.
BLOCKED_TOKENS = (PAD, UNK, SEP)
LAYER_NORM_EPS = 1e-5
HEADS = 4
TEXT_INPUT = "text_input"
TEXT_OUTPUT = "text_output"
FINISH_OUTPUT = "finish_reason"
FINISH_STOP, FINISH_LENGTH = "stop", "length"
# Defaults and limits when the config names none (the kind's GenerationSpec sends its own).
DEFAULT_MAX_NEW_TOKENS = 48
MAX_NEW_TOKENS_LIMIT = 256
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
MAX_TEMPERATURE = 5.0
# What a model instance generates once as it loads, so the first caller does not pay for it.
WARMUP_NEW_TOKENS = 4
# Slows every token by this many milliseconds: a stand-in for a larger model when streaming
# and cancellation are exercised (tests, demos). Unset in production.
TOKEN_DELAY_ENV = "TENANTML_GENERATION_TOKEN_DELAY_MS"

# Detokenizing: which WordPiece tokens join the text before or after them without a space.
_NO_SPACE_BEFORE = frozenset(".,!?;:)]}%'/-@")
_NO_SPACE_AFTER = frozenset("([{$#'/-@+")
_SENTENCE_END = frozenset(".!?")
_WEB_SUFFIXES = frozenset({"com", "net", "org", "io", "me", "co", "uk"})


class GenerationRequestError(ValueError):
    """A request parameter out of bounds; the message names the parameter."""


@dataclass(frozen=True)
class GenerationSettings:
    """One request's sampling settings, checked (``parse_parameters``)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Chunk:
    """One streamed piece: the new text and, on the last one, why the reply ended."""

    text: str
    finish_reason: str = ""


@dataclass(frozen=True)
class Limits:
    """Bounds a request's parameters must keep (the kind's GenerationSpec)."""

    max_new_tokens_default: int = DEFAULT_MAX_NEW_TOKENS
    max_new_tokens_limit: int = MAX_NEW_TOKENS_LIMIT
    temperature_default: float = 0.0
    top_p_default: float = 1.0
    max_stop_sequences: int = MAX_STOP_SEQUENCES
    max_stop_chars: int = MAX_STOP_CHARS

    @classmethod
    def from_parameters(cls, parameters: dict) -> Limits:
        """The limits a model config's parameters name (missing ones keep their default)."""
        values = {}
        for name, default in cls().__dict__.items():
            if name in parameters:
                values[name] = type(default)(parameters[name])
        return cls(**values)


def parse_parameters(parameters: dict, limits: Limits | None = None) -> GenerationSettings:
    """A request's parameters checked against ``limits``; GenerationRequestError names a bad one
    (never echoing its value)."""
    limits = limits or Limits()
    max_new_tokens = _integer(
        parameters, "max_new_tokens", limits.max_new_tokens_default, 1, limits.max_new_tokens_limit
    )
    temperature = _number(
        parameters, "temperature", limits.temperature_default, 0.0, MAX_TEMPERATURE
    )
    top_p = _number(parameters, "top_p", limits.top_p_default, 0.0, 1.0)
    if top_p <= 0.0:
        raise GenerationRequestError("Parameter 'top_p' must be above 0 and at most 1.")
    seed = parameters.get("seed")
    if seed is not None:
        seed = _integer(parameters, "seed", 0, 0, 2**63 - 1)
    return GenerationSettings(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=_stop_sequences(parameters.get("stop"), limits),
        seed=seed,
    )


def _integer(parameters: dict, name: str, default: int, low: int, high: int) -> int:
    raw = parameters.get(name, default)
    try:
        if isinstance(raw, bool):
            raise TypeError
        value = float(raw)
        if not value.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise GenerationRequestError(f"Parameter {name!r} must be an integer.") from None
    if not low <= value <= high:
        raise GenerationRequestError(f"Parameter {name!r} must be between {low} and {high}.")
    return int(value)


def _number(parameters: dict, name: str, default: float, low: float, high: float) -> float:
    raw = parameters.get(name, default)
    try:
        if isinstance(raw, bool):
            raise TypeError
        value = float(raw)
    except (TypeError, ValueError):
        raise GenerationRequestError(f"Parameter {name!r} must be a number.") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise GenerationRequestError(f"Parameter {name!r} must be between {low:g} and {high:g}.")
    return value


def _stop_sequences(raw: object, limits: Limits) -> tuple[str, ...]:
    """``stop`` as the contract sends it: a JSON list of strings, or one plain string."""
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str) and raw.lstrip().startswith("["):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise GenerationRequestError(
                "Parameter 'stop' must be a JSON list of strings, or one string."
            ) from None
    sequences = [raw] if isinstance(raw, str) else raw
    if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
        raise GenerationRequestError(
            "Parameter 'stop' must be a JSON list of strings, or one string."
        )
    if len(sequences) > limits.max_stop_sequences:
        raise GenerationRequestError(
            f"Parameter 'stop' may hold at most {limits.max_stop_sequences} sequences."
        )
    if any(not s or len(s) > limits.max_stop_chars for s in sequences):
        raise GenerationRequestError(
            f"Parameter 'stop': each sequence must be 1 to {limits.max_stop_chars} characters."
        )
    return tuple(sequences)


# --------------------------------------------------------------------------- vocabulary


class Vocabulary:
    """The tenant's token ids: the prompt read with the MiniLM tokenizer, newlines as ``[NL]``,
    and the reply's ids written back as text (``piece``)."""

    def __init__(
        self,
        *,
        tokenizer_ids: list[int],
        tokens: list[str],
        surfaces: list[str],
        sentence_surfaces: list[str] | None = None,
        pairs: list | None = None,
        tokenizer: object = None,
    ) -> None:
        self.tokenizer_ids = list(tokenizer_ids)
        self.tokens = list(tokens)
        self.surfaces = list(surfaces)
        # How a token is written where a sentence may start (after . ! ? or a line break): "You"
        # after "Thanks." but "and" after "Emily E.", as the replies wrote it.
        self.sentence_surfaces = list(sentence_surfaces or [_capitalized(s) for s in surfaces])
        # Where the replies join two tokens otherwise than the rules below would, or write the
        # second one otherwise than its usual form: ``[previous id, id, space, form]`` ("****",
        # "can't", "OnTrac"), learned from the tenant's own text.
        self.pairs = {(int(a), int(b)): (space, form) for a, b, space, form in pairs or []}
        self.tokenizer = tokenizer
        self.by_tokenizer_id = {
            base: own for own, base in enumerate(self.tokenizer_ids) if base >= 0
        }

    @classmethod
    def from_dir(cls, model_dir: str) -> Vocabulary:
        with open(os.path.join(model_dir, VOCAB_FILE), encoding="utf-8") as handle:
            document = json.load(handle)
        return cls(
            tokenizer_ids=document["tokenizer_ids"],
            tokens=document["tokens"],
            surfaces=document["surfaces"],
            sentence_surfaces=document.get("sentence_surfaces"),
            pairs=document.get("pairs"),
            tokenizer=load_tokenizer(os.path.join(model_dir, TOKENIZER_FILE)),
        )

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """The tenant ids of ``text``: words outside the vocabulary are ``[UNK]``, each line
        break is ``[NL]``."""
        return [
            self.by_tokenizer_id.get(base, UNK) if base >= 0 else NEWLINE
            for base in tokenizer_ids(self.tokenizer, text)
        ]

    def piece(self, ids: list[int], index: int) -> str:
        """The text token ``ids[index]`` adds after ``ids[:index]`` (which come from the same
        reply): its surface form, the space before it and its capital at a sentence start.
        A function of ``ids[: index + 1]`` alone, so streamed pieces join into the whole text."""
        token_id = ids[index]
        if token_id == NEWLINE:
            return "\n"
        if token_id in (PAD, SEP, EOS):
            return ""
        raw = self.tokens[token_id]
        if index == 0 or ids[index - 1] == NEWLINE:
            return self.sentence_surfaces[token_id]
        learned_space, learned_form = self.pairs.get((ids[index - 1], token_id), (None, ""))
        if raw.startswith("##"):
            return learned_form or self.surfaces[token_id]
        previous = self.tokens[ids[index - 1]] if ids[index - 1] >= len(SPECIAL_TOKENS) else ""
        before = self.tokens[ids[index - 2]] if index >= 2 else ""
        # A dash opening a line ("- Sam") is a bullet or a signature, not a hyphen.
        opens_line = index < 2 or ids[index - 2] == NEWLINE
        space = _space_between(before, previous, raw) or (previous == "-" and opens_line)
        if learned_space is not None:
            space = bool(learned_space)
        if learned_form:
            surface = learned_form
        elif previous in _SENTENCE_END:
            surface = self.sentence_surfaces[token_id]
        else:
            surface = self.surfaces[token_id]
        return (" " if space else "") + surface

    def text(self, ids: list[int]) -> str:
        """The whole text of reply ids (what the streamed pieces join into)."""
        return "".join(self.piece(ids, index) for index in range(len(ids)))


def _space_between(before: str, previous: str, token: str) -> bool:
    if not previous:
        return False
    if token in _NO_SPACE_BEFORE or previous in _NO_SPACE_AFTER:
        return False
    # 12.50, 3:45, 1,000 — a number's separator joins both sides.
    if previous in {".", ":", ","} and before[-1:].isdigit() and token[:1].isdigit():
        return False
    # gmail.com, example.org
    return not (previous == "." and token in _WEB_SUFFIXES)


def _capitalized(surface: str) -> str:
    return surface[:1].upper() + surface[1:] if surface[:1].islower() else surface


def load_tokenizer(path: str):
    """The MiniLM tokenizer without the truncation and padding its file asks for."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def tokenizer_ids(tokenizer, text: str) -> list[int]:
    """MiniLM ids of ``text`` line by line, with -1 for each line break (no [CLS]/[SEP])."""
    out: list[int] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for number, line in enumerate(lines):
        if number:
            out.append(-1)
        if line.strip():
            out.extend(tokenizer.encode(line, add_special_tokens=False).ids)
    return out


# --------------------------------------------------------------------------- the decoder


class Decoder:
    """The decoder-only transformer in numpy: pre-norm blocks (causal multi-head attention,
    a tanh-GELU MLP), learned positions, the output tied to the token embedding."""

    def __init__(self, weights: dict[str, np.ndarray], *, layers: int, heads: int = HEADS) -> None:
        self.w = {name: np.asarray(value, dtype=np.float32) for name, value in weights.items()}
        self.layers = layers
        self.heads = heads
        self.context_tokens, self.d_model = self.w["position_embedding"].shape
        self.head_dim = self.d_model // heads
        self.output = np.ascontiguousarray(self.w["token_embedding"].T)

    @classmethod
    def from_dir(cls, model_dir: str) -> Decoder:
        with open(os.path.join(model_dir, ARTIFACT_FILE), encoding="utf-8") as handle:
            shape = json.load(handle)
        with np.load(os.path.join(model_dir, WEIGHTS_FILE)) as archive:
            weights = {name: archive[name] for name in archive.files}
        return cls(weights, layers=int(shape["layers"]), heads=int(shape["heads"]))

    def forward(self, ids: list[int]) -> np.ndarray:
        """Logits [len(ids), V] of every position, computed from scratch (no cache)."""
        x = self._embed(ids, start=0)
        for layer in range(self.layers):
            q, k, v = self._qkv(layer, x)
            x = self._attend_and_mlp(layer, x, q, k, v, causal=True)
        return self._logits(x)

    def start(self, ids: list[int]) -> tuple[KeyValueCache, np.ndarray]:
        """Run the prompt once: a cache holding its keys and values, and the last position's
        logits [V]."""
        cache = KeyValueCache(
            layers=self.layers,
            heads=self.heads,
            head_dim=self.head_dim,
            capacity=self.context_tokens,
        )
        x = self._embed(ids, start=0)
        for layer in range(self.layers):
            q, k, v = self._qkv(layer, x)
            cache.put(layer, k, v)
            x = self._attend_and_mlp(layer, x, q, k, v, causal=True)
        cache.length = len(ids)
        return cache, self._logits(x[-1:])[0]

    def step(self, cache: KeyValueCache, token: int) -> np.ndarray:
        """Run one new position against the cached keys and values; its logits [V]."""
        x = self._embed([token], start=cache.length)
        for layer in range(self.layers):
            q, k, v = self._qkv(layer, x)
            cache.put(layer, k, v)
            keys, values = cache.view(layer, cache.length + 1)
            x = self._attend_and_mlp(layer, x, q, keys, values, causal=False)
        cache.length += 1
        return self._logits(x)[0]

    def _embed(self, ids: list[int], *, start: int) -> np.ndarray:
        positions = self.w["position_embedding"][start : start + len(ids)]
        return self.w["token_embedding"][np.asarray(ids, dtype=np.int64)] + positions

    def _qkv(self, layer: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = f"layer{layer}."
        h = _layer_norm(x, self.w[p + "norm1.weight"], self.w[p + "norm1.bias"])
        qkv = h @ self.w[p + "qkv.weight"] + self.w[p + "qkv.bias"]
        n = len(x)
        # [n, 3d] → three [heads, n, head_dim]
        q, k, v = qkv.reshape(n, 3, self.heads, self.head_dim).transpose(1, 2, 0, 3)
        return q, k, v

    def _attend_and_mlp(self, layer, x, q, k, v, *, causal: bool) -> np.ndarray:
        p = f"layer{layer}."
        scores = (q @ k.transpose(0, 2, 1)) / np.float32(math.sqrt(self.head_dim))
        if causal:
            n = scores.shape[-1]
            scores = scores + np.triu(np.full((n, n), -np.inf, dtype=np.float32), k=1)
        scores = scores - scores.max(axis=-1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(axis=-1, keepdims=True)
        attended = (weights @ v).transpose(1, 0, 2).reshape(len(x), self.d_model)
        x = x + attended @ self.w[p + "proj.weight"] + self.w[p + "proj.bias"]
        h = _layer_norm(x, self.w[p + "norm2.weight"], self.w[p + "norm2.bias"])
        h = _gelu(h @ self.w[p + "fc.weight"] + self.w[p + "fc.bias"])
        return x + h @ self.w[p + "out.weight"] + self.w[p + "out.bias"]

    def _logits(self, x: np.ndarray) -> np.ndarray:
        h = _layer_norm(x, self.w["final_norm.weight"], self.w["final_norm.bias"])
        return h @ self.output


class KeyValueCache:
    """Each layer's keys and values of the positions run so far, [heads, capacity, head_dim]."""

    def __init__(self, *, layers: int, heads: int, head_dim: int, capacity: int) -> None:
        shape = (layers, heads, capacity, head_dim)
        self.keys = np.zeros(shape, dtype=np.float32)
        self.values = np.zeros(shape, dtype=np.float32)
        self.length = 0

    def put(self, layer: int, k: np.ndarray, v: np.ndarray) -> None:
        end = self.length + k.shape[1]
        self.keys[layer, :, self.length : end] = k
        self.values[layer, :, self.length : end] = v

    def view(self, layer: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        return self.keys[layer, :, :length], self.values[layer, :, :length]


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    variance = (centered * centered).mean(axis=-1, keepdims=True)
    return centered / np.sqrt(variance + np.float32(LAYER_NORM_EPS)) * weight + bias


_GELU_SCALE = np.float32(math.sqrt(2.0 / math.pi))


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (torch's ``approximate="tanh"``)."""
    return np.float32(0.5) * x * (1 + np.tanh(_GELU_SCALE * (x + np.float32(0.044715) * x**3)))


# --------------------------------------------------------------------------- generation


def choose_token(
    logits: np.ndarray, *, temperature: float, top_p: float, rng: np.random.Generator | None
) -> int:
    """The next token: the most likely at temperature 0, else a draw from the temperature-scaled
    distribution cut to the smallest set of tokens whose probability reaches ``top_p``."""
    logits = np.array(logits, dtype=np.float64)
    logits[list(BLOCKED_TOKENS)] = -np.inf
    if temperature <= 0.0:
        return int(np.argmax(logits))
    scaled = logits / temperature
    probabilities = np.exp(scaled - scaled.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities, kind="stable")
    cumulative = np.cumsum(probabilities[order])
    keep = int(np.searchsorted(cumulative, top_p) + 1)
    kept = order[: min(keep, len(order))]
    weights = probabilities[kept] / probabilities[kept].sum()
    rng = rng if rng is not None else np.random.default_rng()
    return int(kept[rng.choice(len(kept), p=weights)])


class Generator:
    """A reply model loaded from a directory holding the files named above."""

    def __init__(self, model_dir: str, *, limits: Limits | None = None) -> None:
        self.decoder = Decoder.from_dir(model_dir)
        self.vocabulary = Vocabulary.from_dir(model_dir)
        with open(os.path.join(model_dir, ARTIFACT_FILE), encoding="utf-8") as handle:
            self.max_prompt_tokens = int(json.load(handle)["max_prompt_tokens"])
        self.limits = limits or Limits()

    def prompt_ids(self, prompt: str) -> list[int]:
        """The ids the decoder starts from: the prompt's last tokens and ``[SEP]``."""
        ids = self.vocabulary.encode(prompt)
        return [*ids[len(ids) - self.max_prompt_tokens :], SEP] if ids else [SEP]

    def token_ids(
        self, prompt: str, settings: GenerationSettings, *, use_cache: bool = True
    ) -> list[int]:
        """The reply's token ids (ignoring stop sequences), with or without the cache: what the
        two ways must agree on."""
        ids = self.prompt_ids(prompt)
        rng = np.random.default_rng(settings.seed) if settings.seed is not None else None
        reply: list[int] = []
        cache, logits = self.decoder.start(ids) if use_cache else (None, None)
        while len(reply) < settings.max_new_tokens and len(ids) < self.decoder.context_tokens:
            if not use_cache:
                logits = self.decoder.forward(ids)[-1]
            token = choose_token(
                logits, temperature=settings.temperature, top_p=settings.top_p, rng=rng
            )
            if token == EOS:
                break
            reply.append(token)
            ids.append(token)
            if use_cache and len(ids) < self.decoder.context_tokens:
                logits = self.decoder.step(cache, token)
        return reply

    def stream(
        self,
        prompt: str,
        settings: GenerationSettings,
        *,
        cancelled: Callable[[], bool] = lambda: False,
        token_delay_s: float = 0.0,
    ) -> Iterator[Chunk]:
        """The reply as it is generated: non-empty text deltas, then one chunk (possibly empty
        text) with the finish reason. Stops without a finish chunk once ``cancelled()``."""
        ids = self.prompt_ids(prompt)
        rng = np.random.default_rng(settings.seed) if settings.seed is not None else None
        cache, logits = self.decoder.start(ids)
        reply: list[int] = []
        text = ""
        sent = 0
        longest_stop = max((len(s) for s in settings.stop), default=0)
        finish = FINISH_LENGTH
        while len(reply) < settings.max_new_tokens:
            if cancelled():
                return
            if token_delay_s:
                time.sleep(token_delay_s)
            token = choose_token(
                logits, temperature=settings.temperature, top_p=settings.top_p, rng=rng
            )
            if token == EOS:
                finish = FINISH_STOP
                break
            reply.append(token)
            ids.append(token)
            text += self.vocabulary.piece(reply, len(reply) - 1)
            found = _find_stop(text, settings.stop, since=max(0, sent - longest_stop))
            if found is not None:
                if found > sent:
                    yield Chunk(text[sent:found])
                yield Chunk("", FINISH_STOP)
                return
            ready = len(text) - _held_back(text, settings.stop)
            if ready > sent:
                yield Chunk(text[sent:ready])
                sent = ready
            if len(ids) >= self.decoder.context_tokens:
                break
            logits = self.decoder.step(cache, token)
        yield Chunk(text[sent:], finish)

    def generate(self, prompt: str, settings: GenerationSettings) -> tuple[str, str]:
        """The whole reply and why it ended (the stream's deltas joined)."""
        chunks = list(self.stream(prompt, settings))
        return "".join(chunk.text for chunk in chunks), chunks[-1].finish_reason


def _find_stop(text: str, stops: tuple[str, ...], *, since: int) -> int | None:
    """Where the first stop sequence in ``text[since:]`` begins, or None."""
    found = [index for stop in stops if (index := text.find(stop, since)) >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of ``text`` could begin a stop sequence."""
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:size]):
                held = size
                break
    return held


# --------------------------------------------------------------------------- Triton


class TritonPythonModel:
    """Triton's entry point (decoupled): one Generator per model instance; the requests of an
    execution are answered one after another, each streamed as it is generated."""

    def initialize(self, args: dict) -> None:
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        config = json.loads(args["model_config"])
        parameters = {
            key: value.get("string_value", "")
            for key, value in (config.get("parameters") or {}).items()
        }
        self.generator = Generator(model_dir, limits=Limits.from_parameters(parameters))
        self.token_delay_s = float(os.environ.get(TOKEN_DELAY_ENV) or 0) / 1000
        warmup = parameters.get("warmup_prompt") or "Hello"
        started = time.perf_counter()
        self.generator.generate(
            warmup, GenerationSettings(max_new_tokens=WARMUP_NEW_TOKENS, temperature=0.0)
        )
        decoder = self.generator.decoder
        _log(
            f"{args['model_name']}: reply decoder d_model={decoder.d_model} "
            f"layers={decoder.layers} vocabulary={len(self.generator.vocabulary)} "
            f"context={decoder.context_tokens}; warm-up "
            f"{(time.perf_counter() - started) * 1000:.1f} ms"
        )

    def execute(self, requests: list) -> None:
        for request in requests:
            self._answer(request)
        return None

    def _answer(self, request) -> None:
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            prompt = _prompt(request)
            settings = parse_parameters(
                json.loads(request.parameters() or "{}"), self.generator.limits
            )
        except (GenerationRequestError, ValueError) as exc:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
            sender.send(flags=final)
            return
        responses = 0
        finish = ""
        for chunk in self.generator.stream(
            prompt, settings, cancelled=sender.is_cancelled, token_delay_s=self.token_delay_s
        ):
            response = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(TEXT_OUTPUT, np.array([chunk.text.encode()], object)),
                    pb_utils.Tensor(
                        FINISH_OUTPUT, np.array([chunk.finish_reason.encode()], object)
                    ),
                ]
            )
            try:
                sender.send(response)
            except pb_utils.TritonModelException:
                break  # the request went away between the check and the send: stop as cancelled
            responses += 1
            finish = chunk.finish_reason
        if not finish:
            _log(f"reply generation cancelled after {responses} response(s)")
        try:
            sender.send(flags=final)
        except pb_utils.TritonModelException:
            _log("the final flag of a cancelled reply could not be sent")

    def finalize(self) -> None:
        self.generator = None


def _prompt(request) -> str:
    tensor = pb_utils.get_input_tensor_by_name(request, TEXT_INPUT)
    if tensor is None:
        raise GenerationRequestError(f"The request has no {TEXT_INPUT}.")
    values = tensor.as_numpy().reshape(-1)
    if len(values) != 1:
        raise GenerationRequestError(f"{TEXT_INPUT} must be one text.")
    value = values[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _log(message: str) -> None:
    if pb_utils is not None:
        pb_utils.Logger.log_info(message)
