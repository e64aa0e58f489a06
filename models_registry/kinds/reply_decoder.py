"""The reply model's training in torch: a compact decoder-only transformer fit to one tenant's
replies, exported to the float32 weights the numpy runtime
(``models_registry.triton_runtime.reply_autocomplete.Decoder``) serves.

The layer layout and names match the runtime's exactly (pre-norm blocks, fused q/k/v, a tanh-GELU
MLP four times as wide, learned positions, the output tied to the token embedding), so
``export_weights`` only transposes the linear layers. Imported only by ``train``: torch stays
out of the web and serving processes.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models_registry.kinds.reply_sequences import BATCH_SIZE, ReplySequence
from models_registry.triton_runtime.reply_autocomplete import BLOCKED_TOKENS, HEADS, PAD, UNK

DROPOUT = 0.1
WEIGHT_DECAY = 0.01
# The learning rate climbs over this share of the steps, then follows a cosine to zero.
WARMUP_SHARE = 0.05


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.out = nn.Linear(4 * d_model, d_model)
        self.dropout = nn.Dropout(DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, d_model = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, length, 3, self.heads, d_model // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        # Right padding needs no key mask: a causal position never sees the padding after it.
        attended = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=DROPOUT if self.training else 0.0
        )
        x = x + self.dropout(self.proj(attended.transpose(1, 2).reshape(batch, length, d_model)))
        return x + self.dropout(self.out(F.gelu(self.fc(self.norm2(x)), approximate="tanh")))


class ReplyDecoder(nn.Module):
    def __init__(self, *, vocabulary_size: int, d_model: int, layers: int, context: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocabulary_size, d_model)
        self.position_embedding = nn.Parameter(torch.zeros(context, d_model))
        self.blocks = nn.ModuleList(Block(d_model, HEADS) for _ in range(layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(DROPOUT)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)
        for block in self.blocks:
            for linear in (block.qkv, block.proj, block.fc, block.out):
                nn.init.normal_(linear.weight, std=0.02)
                nn.init.zeros_(linear.bias)
            # Residual projections scaled down with depth (GPT-2's initialization).
            for linear in (block.proj, block.out):
                nn.init.normal_(linear.weight, std=0.02 / math.sqrt(2 * layers))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x) @ self.token_embedding.weight.T


def export_weights(model: ReplyDecoder) -> dict[str, np.ndarray]:
    """The weights under the runtime's names, float32, linear layers as [in, out]."""
    state = {
        name: tensor.detach().cpu().float().numpy() for name, tensor in model.state_dict().items()
    }
    weights = {
        "token_embedding": state["token_embedding.weight"],
        "position_embedding": state["position_embedding"],
        "final_norm.weight": state["final_norm.weight"],
        "final_norm.bias": state["final_norm.bias"],
    }
    for index in range(len(model.blocks)):
        prefix = f"blocks.{index}."
        for name in ("norm1", "norm2"):
            weights[f"layer{index}.{name}.weight"] = state[f"{prefix}{name}.weight"]
            weights[f"layer{index}.{name}.bias"] = state[f"{prefix}{name}.bias"]
        for name in ("qkv", "proj", "fc", "out"):
            weights[f"layer{index}.{name}.weight"] = np.ascontiguousarray(
                state[f"{prefix}{name}.weight"].T
            )
            weights[f"layer{index}.{name}.bias"] = state[f"{prefix}{name}.bias"]
    return {name: np.asarray(value, dtype=np.float32) for name, value in weights.items()}


def _batch(sequences: list[ReplySequence]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets, right-padded; targets outside the reply are PAD (ignored)."""
    length = max(len(s.ids) for s in sequences) - 1
    inputs = torch.full((len(sequences), length), PAD, dtype=torch.long)
    targets = torch.full((len(sequences), length), PAD, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids = torch.tensor(sequence.ids, dtype=torch.long)
        inputs[row, : len(ids) - 1] = ids[:-1]
        start = sequence.first_target - 1
        targets[row, start : len(ids) - 1] = ids[sequence.first_target :]
    return inputs, targets


def _batches(sequences: list[ReplySequence], shuffle: random.Random) -> list:
    """This epoch's batches, at random. (Batches of like lengths pad less, but measured on the
    demo replies they learned markedly slower.)"""
    order = list(range(len(sequences)))
    shuffle.shuffle(order)
    return [
        [sequences[i] for i in order[start : start + BATCH_SIZE]]
        for start in range(0, len(order), BATCH_SIZE)
    ]


@torch.no_grad()
def next_token_accuracy(model: ReplyDecoder, sequences: list[ReplySequence]) -> float:
    """Teacher-forced accuracy on the reply tokens, choosing as greedy generation does (the
    blocked tokens never; an unknown word is always missed)."""
    model.eval()
    right = total = 0
    for start in range(0, len(sequences), BATCH_SIZE):
        inputs, targets = _batch(sequences[start : start + BATCH_SIZE])
        logits = model(inputs)
        logits[..., list(BLOCKED_TOKENS)] = -torch.inf
        scored = targets != PAD
        right += int(((logits.argmax(-1) == targets) & scored & (targets != UNK)).sum())
        total += int(scored.sum())
    return right / total if total else 0.0


def fit(
    *,
    train: list[ReplySequence],
    validation: list[ReplySequence],
    vocabulary_size: int,
    d_model: int,
    layers: int,
    context: int,
    epochs: int,
    learning_rate: float,
    seed: int,
    threads: int,
    progress: Callable[[int, str], None],
) -> tuple[ReplyDecoder, dict]:
    """Train from scratch; the epoch with the best validation accuracy is the one kept."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    shuffle = random.Random(seed)
    model = ReplyDecoder(
        vocabulary_size=vocabulary_size, d_model=d_model, layers=layers, context=context
    )
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "position" not in n]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2 or "position" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}],
        lr=learning_rate,
        betas=(0.9, 0.98),
    )
    steps_per_epoch = math.ceil(len(train) / BATCH_SIZE)
    total_steps = steps_per_epoch * epochs
    warmup = max(1, int(total_steps * WARMUP_SHARE))

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    best_accuracy, best_state, best_epoch, last_loss = -1.0, None, 0, 0.0
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        losses = []
        for batch in _batches(train, shuffle):
            inputs, targets = _batch(batch)
            logits = model(inputs)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=PAD
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        last_loss = sum(losses) / len(losses)
        accuracy = next_token_accuracy(model, validation)
        if accuracy > best_accuracy:
            best_accuracy, best_epoch = accuracy, epoch
            best_state = copy.deepcopy(model.state_dict())
        progress(
            10 + int(75 * epoch / epochs),
            f"epoch {epoch}/{epochs}: loss {last_loss:.3f}, validation next-token accuracy "
            f"{accuracy:.3f}",
        )
    model.load_state_dict(best_state)
    model.eval()
    return model, {
        "train_loss": round(last_loss, 6),
        "best_epoch": best_epoch,
        "train_seconds": round(time.perf_counter() - started, 3),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
