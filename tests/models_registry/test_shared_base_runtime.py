"""The shared-base layout without Triton: the kind's spec, the head cache (verification, byte
capacity, least-recently-used eviction, unload), the mixed-tenant answer against each head's own
offline answer, and the shared model's config, package and name."""

from __future__ import annotations

import base64
import json
import tarfile

import numpy as np
import pytest

from models_registry import shared_base
from models_registry.exceptions import InvalidArtifact
from models_registry.kinds import get_kind
from models_registry.triton_runtime import shared_intent
from models_registry.triton_runtime.shared_intent import (
    STATUS_NOT_LOADED,
    STATUS_OK,
    HeadCache,
    HeadRefused,
    SharedIntentServer,
    answer_rows,
    head_bytes,
)
from models_registry.triton_runtime.tenantml_encoder import Encoder
from tests.serving_fixtures import INTENT_TRAINING_ROWS
from tests.shared_heads_support import distinct_heads, synthetic_head

TEXTS = [text for text, _ in INTENT_TRAINING_ROWS]


@pytest.fixture
def base_var_dir(settings, base_encoder_cache_dir):
    """VAR_DIR set to the session's, so the kinds find the base encoders already exported."""
    settings.VAR_DIR = base_encoder_cache_dir.parent.parent
    return settings.VAR_DIR


@pytest.fixture(scope="module")
def base_dir(base_encoder_files):
    return str(base_encoder_files.onnx_path.parent)


@pytest.fixture(scope="module")
def server(base_dir):
    return SharedIntentServer(base_dir)


def _cache(capacity_bytes: int = 1 << 30) -> HeadCache:
    return HeadCache(capacity_bytes=capacity_bytes, max_head_bytes=1 << 20)


def _load(cache: HeadCache, synthetic) -> tuple[int, list[str]]:
    return cache.load(
        synthetic.head_id, synthetic.head_npz, synthetic.labels_json, synthetic.sha256
    )


def _load_fields(synthetic) -> dict[str, str]:
    return {
        "HEAD_ID": synthetic.head_id,
        "HEAD_NPZ": base64.b64encode(synthetic.head_npz).decode(),
        "LABELS_JSON": base64.b64encode(synthetic.labels_json).decode(),
        "SHA256": synthetic.sha256,
    }


# --- The kind's spec -------------------------------------------------------------------------


def test_the_intent_classifier_has_a_shared_base_and_the_embedding_kind_does_not():
    spec = get_kind("intent-classifier").shared_base
    assert spec is not None
    assert spec.runtime_module == "models_registry.triton_runtime.shared_intent"
    assert spec.head_files == ("head.npz", "labels.json")
    assert spec.base_files == ("encoder.onnx", "tokenizer.json")
    assert get_kind("embedding").shared_base is None
    with pytest.raises(InvalidArtifact, match="no shared-base layout"):
        shared_base.shared_base_spec("embedding")


def test_the_builder_and_the_runtime_agree_on_the_cache_parameters():
    spec = get_kind("intent-classifier").shared_base
    assert shared_base.CAPACITY_PARAMETER == shared_intent.CAPACITY_PARAMETER
    assert shared_base.MAX_HEAD_PARAMETER == shared_intent.MAX_HEAD_PARAMETER
    assert spec.head_cache_bytes == shared_intent.DEFAULT_CAPACITY_BYTES
    assert spec.max_head_bytes == shared_intent.DEFAULT_MAX_HEAD_BYTES


# --- The head cache --------------------------------------------------------------------------


def test_a_tampered_head_is_refused_and_the_resident_head_of_that_id_stays():
    cache = _cache()
    original = synthetic_head("acme.intents.v1", ["refund", "shipping"], seed=1)
    _load(cache, original)
    replacement = synthetic_head("acme.intents.v1", ["refund", "shipping"], seed=2)
    tampered_npz = replacement.head_npz[:-1] + bytes([replacement.head_npz[-1] ^ 1])
    with pytest.raises(HeadRefused, match="sha256 does not match"):
        cache.load("acme.intents.v1", tampered_npz, replacement.labels_json, replacement.sha256)
    with pytest.raises(HeadRefused, match="sha256 does not match"):
        cache.load("other.intents.v1", original.head_npz, b'["a", "b"]', original.sha256)
    assert list(cache.resident()) == ["acme.intents.v1"]
    resident = cache.get("acme.intents.v1")
    np.testing.assert_array_equal(resident.weights, original.head().weights)


def test_heads_that_cannot_be_served_are_refused_with_the_reason():
    cache = _cache()
    good = synthetic_head("h", ["a", "b"], seed=1)
    with pytest.raises(HeadRefused, match="without a sha256"):
        cache.load("h", good.head_npz, good.labels_json, "")
    with pytest.raises(HeadRefused, match="1 to 512 bytes"):
        cache.load("", good.head_npz, good.labels_json, good.sha256)
    empty_label = synthetic_head("h", ["a", ""], seed=1)
    with pytest.raises(HeadRefused, match="empty label"):
        _load(cache, empty_label)
    wrong_count = synthetic_head("h", ["a", "b"], seed=1)
    three = json.dumps(["a", "b", "c"]).encode()
    from models_registry.triton_runtime.tenantml_head import head_digest

    with pytest.raises(HeadRefused, match="cannot be served"):
        cache.load("h", wrong_count.head_npz, three, head_digest(wrong_count.head_npz, three))
    small = HeadCache(capacity_bytes=1 << 20, max_head_bytes=1000)
    with pytest.raises(HeadRefused, match="over this model's limit of 1000 bytes"):
        _load(small, good)
    assert cache.resident() == {} and small.resident() == {}


def test_the_byte_capacity_evicts_the_least_recently_used_heads():
    heads = [synthetic_head(f"t{i}.intents.v1", ["a", "b", "c"], seed=i) for i in range(5)]
    size = head_bytes(heads[0].head())
    cache = _cache(capacity_bytes=3 * size)
    for synthetic in heads[:3]:
        assert _load(cache, synthetic) == (size, [])
    cache.get("t0.intents.v1")  # t0 answered a ticket: t1 is now the least recently used
    assert _load(cache, heads[3]) == (size, ["t1.intents.v1"])
    assert _load(cache, heads[4]) == (size, ["t2.intents.v1"])
    assert list(cache.resident()) == ["t0.intents.v1", "t3.intents.v1", "t4.intents.v1"]
    assert cache.used_bytes == 3 * size


def test_reloading_a_head_id_replaces_it_without_counting_it_twice():
    cache = _cache()
    _load(cache, synthetic_head("h", ["a", "b"], seed=1))
    second = synthetic_head("h", ["a", "b", "c"], seed=2)
    size, _ = _load(cache, second)
    assert cache.resident() == {"h": size} and cache.used_bytes == size
    assert cache.get("h").labels == ["a", "b", "c"]


def test_an_unload_frees_the_head_and_its_bytes():
    cache = _cache()
    _load(cache, synthetic_head("h1", ["a", "b"], seed=1))
    size, _ = _load(cache, synthetic_head("h2", ["a", "b"], seed=2))
    assert cache.unload("h1") is True
    assert cache.unload("h1") is False
    assert cache.get("h1") is None
    assert cache.resident() == {"h2": size} and cache.used_bytes == size


# --- Answers ---------------------------------------------------------------------------------


def test_each_row_is_answered_by_its_own_head_exactly_as_offline(server, base_dir):
    heads = distinct_heads(6)
    # Same label names, different weights; and ids that look like another's.
    twins = [
        synthetic_head(head_id, ["refund", "shipping", "account"], seed=50 + index)
        for index, head_id in enumerate(
            ["acme.intents.v1", "acme.intents.v1 ", "acme.intents.v10", "ACME.intents.v1"]
        )
    ]
    for synthetic in heads + twins:
        assert "error" not in server.control("load", _load_fields(synthetic))
    everyone = heads + twins
    order = [everyone[(7 * index) % len(everyone)] for index in range(len(TEXTS))]
    outputs = server.answer(TEXTS, [synthetic.head_id for synthetic in order])

    embeddings = Encoder(base_dir).embed(TEXTS)
    for row, synthetic in enumerate(order):
        head = synthetic.head()
        expected = head.probabilities(embeddings[row : row + 1])[0]
        k = len(head.labels)
        assert outputs["STATUS"][row, 0] == STATUS_OK.encode()
        assert outputs["ROW_HEAD"][row, 0] == synthetic.head_id.encode()
        assert [name.decode() for name in outputs["LABELS"][row, :k]] == head.labels
        np.testing.assert_allclose(outputs["SCORES"][row, :k], expected, atol=1e-6)
        assert outputs["LABEL"][row, 0].decode() == head.decide(expected[None, :])[0]
        assert set(outputs["LABELS"][row, k:]) <= {b""}
        assert not outputs["SCORES"][row, k:].any()


def test_rows_of_a_missing_head_are_marked_and_the_others_still_answered(server):
    present = synthetic_head("present.intents.v1", ["a", "b", "c"], seed=7)
    server.control("load", _load_fields(present))
    outputs = server.answer(
        TEXTS[:3], ["present.intents.v1", "absent.intents.v1", "present.intents.v1"]
    )
    assert [value.decode() for value in outputs["STATUS"][:, 0]] == [
        STATUS_OK,
        STATUS_NOT_LOADED,
        STATUS_OK,
    ]
    assert outputs["LABEL"][1, 0] == b"" and not outputs["SCORES"][1].any()
    assert outputs["LABEL"][0, 0].decode() in {"a", "b", "c"}


def test_a_head_with_a_threshold_answers_out_of_scope_below_it(server):
    unsure = synthetic_head("unsure.intents.v1", ["a", "b", "c"], seed=3, scale=0.01, threshold=0.9)
    server.control("load", _load_fields(unsure))
    outputs = server.answer(TEXTS[:2], ["unsure.intents.v1"] * 2)
    assert [value.decode() for value in outputs["LABEL"][:, 0]] == ["out_of_scope"] * 2


def test_answer_rows_pads_narrower_heads_and_answers_none_when_no_head_is_loaded():
    outputs = answer_rows(None, [None, None], ["x", "y"])
    assert outputs["SCORES"].shape == (2, 1)
    assert [value.decode() for value in outputs["STATUS"][:, 0]] == [STATUS_NOT_LOADED] * 2


def test_control_operations_report_the_cache_and_refuse_an_unknown_one(server):
    synthetic = synthetic_head("listed.intents.v1", ["a", "b"], seed=11)
    loaded = server.control("load", _load_fields(synthetic))
    assert loaded["loaded"] == "listed.intents.v1" and loaded["evicted"] == []
    assert loaded["heads"]["listed.intents.v1"] == loaded["bytes"]
    assert server.control("unload", {"HEAD_ID": "listed.intents.v1"})["unloaded"] is True
    assert "listed.intents.v1" not in server.control("list", {})["heads"]
    refused = server.control("load", {**_load_fields(synthetic), "HEAD_NPZ": "not base64!"})
    assert refused["error"] == "HEAD_NPZ must be base64 text."
    with pytest.raises(ValueError, match="OP must be one of load, unload, list"):
        server.control("drop", {})


# --- Config, package, name -------------------------------------------------------------------


def _model_config(text: str):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_the_shared_config_has_optional_inputs_and_the_cache_capacity():
    kind = get_kind("intent-classifier")
    config = _model_config(
        shared_base.render_shared_config(kind=kind, head_cache_bytes=12345, base_digest="ab")
    )
    assert {tensor.name for tensor in config.input} == set(shared_base.INPUTS)
    assert all(tensor.optional for tensor in config.input)
    assert [tensor.name for tensor in config.output] == [
        "LABEL",
        "SCORES",
        "LABELS",
        "STATUS",
        "ROW_HEAD",
        "RESULT",
    ]
    assert config.parameters["head_cache_bytes"].string_value == "12345"
    assert config.parameters["base_sha256"].string_value == "ab"
    assert config.max_batch_size == kind.max_batch_size
    with pytest.raises(Exception, match="head_cache_bytes and instance_count must be at least 1"):
        shared_base.render_shared_config(kind=kind, head_cache_bytes=0)
    with pytest.raises(InvalidArtifact):
        shared_base.render_shared_config(kind=get_kind("embedding"))


def test_the_shared_package_is_deterministic_named_by_the_base_and_holds_no_tenant_data(
    base_var_dir, base_encoder_cache_dir, tmp_path
):
    name = shared_base.shared_base_model_name(kind="intent-classifier")
    digest = shared_base.base_sha256(kind="intent-classifier")
    assert name == f"shared.intent-classifier.{digest[:16]}"
    first = shared_base.build_shared_base_package(
        kind="intent-classifier", out_path=tmp_path / "a" / "model.tar.gz"
    )
    second = shared_base.build_shared_base_package(
        kind="intent-classifier", out_path=tmp_path / "b" / "model.tar.gz"
    )
    assert first.sha256 == second.sha256 and first.triton_model_name == name
    with tarfile.open(first.path) as tar:
        members = {member.name for member in tar.getmembers() if member.isfile()}
        config = tar.extractfile(f"{name}/config.pbtxt").read().decode()
    assert members == {
        f"{name}/config.pbtxt",
        f"{name}/1/model.py",
        f"{name}/1/tenantml_encoder.py",
        f"{name}/1/tenantml_head.py",
        f"{name}/1/encoder.onnx",
        f"{name}/1/tokenizer.json",
    }
    assert f'string_value: "{digest}"' in config


def test_the_shared_model_directory_is_written_once_and_reused(base_var_dir, tmp_path):
    first = shared_base.shared_base_model_dir(kind="intent-classifier", models_root=tmp_path)
    name = shared_base.shared_base_model_name(kind="intent-classifier")
    assert (first / name / "1" / "model.py").read_bytes() == shared_base.runtime_source_of(
        "models_registry.triton_runtime.shared_intent"
    )
    assert (
        shared_base.shared_base_model_dir(kind="intent-classifier", models_root=tmp_path) == first
    )
    smaller = shared_base.shared_base_model_dir(
        kind="intent-classifier", models_root=tmp_path, head_cache_bytes=4096
    )
    assert smaller != first
    assert 'string_value: "4096"' in (smaller / name / "config.pbtxt").read_text()
    assert not list((tmp_path / "shared").glob(".*"))  # no scratch directory left behind


def test_the_unpacked_package_serves_heads_from_its_own_files(base_var_dir, tmp_path):
    info = shared_base.build_shared_base_package(
        kind="intent-classifier", out_path=tmp_path / "model.tar.gz"
    )
    with tarfile.open(info.path) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    version_dir = tmp_path / "unpacked" / info.triton_model_name / "1"
    server = SharedIntentServer(str(version_dir))
    synthetic = synthetic_head("h", ["a", "b"], seed=1)
    server.control("load", _load_fields(synthetic))
    assert server.answer(["Where is my refund?"], ["h"])["STATUS"][0, 0] == STATUS_OK.encode()


def _fake_base(cache_dir, *, encoder: bytes) -> None:
    """A base-encoder cache holding ``encoder`` as the int8 export (and a stand-in fp32 one)."""
    from models_registry.base_model import MANIFEST_FILE, cache_key

    for quantized in (False, True):
        entry = cache_dir / cache_key(quantized=quantized)
        entry.mkdir(parents=True)
        (entry / "encoder.onnx").write_bytes(encoder)
        (entry / "tokenizer.json").write_text("{}")
        (entry / MANIFEST_FILE).write_text("{}")


def test_the_shared_model_name_follows_the_base_encoders_bytes(tmp_path):
    _fake_base(tmp_path / "one", encoder=b"first base")
    _fake_base(tmp_path / "two", encoder=b"second base")
    _fake_base(tmp_path / "same", encoder=b"first base")
    one, two, same = (
        shared_base.shared_base_model_name(kind="intent-classifier", cache_dir=tmp_path / name)
        for name in ("one", "two", "same")
    )
    assert one == same != two
    assert one.startswith("shared.intent-classifier.") and two.startswith(
        "shared.intent-classifier."
    )


def test_a_package_for_a_serving_image_vendors_the_runtime_layer(tmp_path):
    from models_registry.runtime_layers import RuntimeLayer

    _fake_base(tmp_path / "base", encoder=b"base")
    layer_dir = tmp_path / "layer"
    (layer_dir / "tokenizers").mkdir(parents=True)
    (layer_dir / "tokenizers" / "__init__.py").write_text("")
    info = shared_base.build_shared_base_package(
        kind="intent-classifier",
        out_path=tmp_path / "model.tar.gz",
        cache_dir=tmp_path / "base",
        runtime_layer=RuntimeLayer(
            key="test", directory=layer_dir, files=("tokenizers/__init__.py",)
        ),
    )
    with tarfile.open(info.path) as tar:
        names = {member.name for member in tar.getmembers()}
    assert f"{info.triton_model_name}/python-packages/tokenizers/__init__.py" in names
    assert f"{info.triton_model_name}/1/model.py" in names


def test_a_shared_model_rendered_for_a_gpu_carries_the_fp16_base_and_a_cpu_one_does_not(
    base_encoder_cache_dir,
):
    def files(device: str) -> set[str]:
        return {
            entry.name
            for entry in shared_base.shared_base_entries(
                kind="intent-classifier", cache_dir=base_encoder_cache_dir, device=device
            )
        }

    assert files("gpu") == files("cpu") | {"1/encoder-gpu.onnx"}
    config = _model_config(
        shared_base.render_shared_config(kind=get_kind("intent-classifier"), device="gpu")
    )
    assert [group.kind for group in config.instance_group] == [config.instance_group[0].KIND_GPU]
