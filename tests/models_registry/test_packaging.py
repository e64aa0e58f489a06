"""Triton packages and the kinds' runtime: the SageMaker MME layout, deterministic bytes, checksum
verification, a config Triton parses, and predictors that answer from the packaged files alone."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from models_registry.exceptions import InvalidArtifact, InvalidDataset, PackageChecksumMismatch
from models_registry.kinds import get_kind
from models_registry.triton_packages import build_triton_package, runtime_source, verify_package
from models_registry.triton_runtime import embedding as embedding_runtime
from models_registry.triton_runtime import intent_classifier as intent_runtime
from models_registry.triton_runtime import tenantml_encoder, tenantml_head
from tests.serving_fixtures import INTENT_TRAINING_ROWS

RUNTIME_ALLOWED_IMPORTS = {
    "__future__",
    "hashlib",
    "io",
    "json",
    "math",
    "os",
    "sys",
    "numpy",
    "onnxruntime",
    "tokenizers",
    "triton_python_backend_utils",
    "tenantml_encoder",  # shipped beside model.py in every package
    "tenantml_head",  # likewise
}


@pytest.fixture(scope="module")
def intent_package(tmp_path_factory, intent_artifact):
    out = tmp_path_factory.mktemp("intent-package") / "model.tar.gz"
    return build_triton_package(
        kind="intent-classifier",
        artifact_dir=intent_artifact,
        triton_model_name="acme.intents.v3",
        out_path=out,
    )


def _members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tar:
        return {member.name: member for member in tar.getmembers()}


def _read(path: Path, name: str) -> bytes:
    with tarfile.open(path, "r:gz") as tar:
        return tar.extractfile(name).read()


def _model_config(text: str):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_package_has_the_layout_sagemaker_mme_with_triton_expects(intent_package):
    members = _members(intent_package.path)

    assert list(members) == [
        "acme.intents.v3",
        "acme.intents.v3/1",
        "acme.intents.v3/1/artifact.json",
        "acme.intents.v3/1/encoder.onnx",
        "acme.intents.v3/1/head.npz",
        "acme.intents.v3/1/labels.json",
        "acme.intents.v3/1/model.py",
        "acme.intents.v3/1/tenantml_encoder.py",
        "acme.intents.v3/1/tenantml_head.py",
        "acme.intents.v3/1/tokenizer.json",
        "acme.intents.v3/config.pbtxt",
    ]
    assert all(member.uid == 0 and member.gid == 0 for member in members.values())
    assert len({member.mtime for member in members.values()}) == 1
    assert _read(intent_package.path, "acme.intents.v3/1/model.py") == runtime_source(
        "intent-classifier"
    )
    assert intent_package.triton_model_name == "acme.intents.v3"


def test_package_info_describes_the_file_written(intent_package):
    content = intent_package.path.read_bytes()

    assert intent_package.sha256 == hashlib.sha256(content).hexdigest()
    assert intent_package.size_bytes == len(content)
    assert [path.name for path in intent_package.path.parent.iterdir()] == ["model.tar.gz"]


def test_same_artifact_gives_the_same_sha256(intent_package, intent_artifact, tmp_path):
    again = build_triton_package(
        kind="intent-classifier",
        artifact_dir=intent_artifact,
        triton_model_name="acme.intents.v3",
        out_path=tmp_path / "elsewhere" / "model.tar.gz",
    )

    assert again.sha256 == intent_package.sha256


def test_verify_package_accepts_the_recorded_digest_and_detects_a_flipped_byte(
    intent_package, tmp_path
):
    verify_package(path=intent_package.path, expected_sha256=intent_package.sha256)
    corrupt = tmp_path / "model.tar.gz"
    shutil.copyfile(intent_package.path, corrupt)
    content = bytearray(corrupt.read_bytes())
    content[len(content) // 2] ^= 0x01
    corrupt.write_bytes(bytes(content))

    with pytest.raises(PackageChecksumMismatch) as caught:
        verify_package(path=corrupt, expected_sha256=intent_package.sha256)

    actual = hashlib.sha256(bytes(content)).hexdigest()
    assert intent_package.sha256 in caught.value.message
    assert actual in caught.value.message


def test_intent_config_parses_as_a_triton_model_config(intent_package):
    config = _model_config(_read(intent_package.path, "acme.intents.v3/config.pbtxt").decode())

    assert config.backend == "python"
    assert config.max_batch_size == 32
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 5000
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("TEXT", 13, [1])]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("LABEL", 13, [1]),  # 13 is TYPE_STRING, 11 TYPE_FP32
        ("SCORES", 11, [3]),
        ("LABELS", 13, [3]),
    ]
    assert [(group.count, group.kind) for group in config.instance_group] == [(1, 2)]  # KIND_CPU
    assert json.loads(config.parameters["labels"].string_value) == [
        "account_access",
        "refund",
        "shipping",
    ]
    assert "EXECUTION_ENV_PATH" not in config.parameters


def test_execution_environment_and_instance_count_reach_the_config(embedding_artifact, tmp_path):
    env = tmp_path / "tenantml-env.tar.gz"
    env.write_bytes(b"conda-pack stand-in")

    info = build_triton_package(
        kind="embedding",
        artifact_dir=embedding_artifact,
        triton_model_name="acme.search.v1",
        out_path=tmp_path / "model.tar.gz",
        execution_env_uri=str(env),
        instance_count=2,
    )

    members = _members(info.path)
    assert _read(info.path, "acme.search.v1/tenantml-env.tar.gz") == b"conda-pack stand-in"
    assert "acme.search.v1/1/model.py" in members
    config = _model_config(_read(info.path, "acme.search.v1/config.pbtxt").decode())
    assert config.parameters["EXECUTION_ENV_PATH"].string_value == (
        "$$TRITON_MODEL_DIRECTORY/tenantml-env.tar.gz"
    )
    assert [group.count for group in config.instance_group] == [2]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("EMBEDDING", 11, [384])
    ]


def test_an_incomplete_artifact_is_refused_with_the_missing_files(intent_artifact, tmp_path):
    partial = tmp_path / "artifact"
    shutil.copytree(intent_artifact, partial)
    (partial / "head.npz").unlink()

    with pytest.raises(InvalidArtifact, match="head.npz"):
        build_triton_package(
            kind="intent-classifier",
            artifact_dir=partial,
            triton_model_name="acme.intents.v4",
            out_path=tmp_path / "model.tar.gz",
        )
    assert not (tmp_path / "model.tar.gz").exists()


def test_packaged_model_py_answers_from_the_package_alone(intent_package, tmp_path):
    with tarfile.open(intent_package.path, "r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    version_dir = tmp_path / "acme.intents.v3" / "1"
    # Load the packaged file as Triton does: a standalone module, not part of models_registry.
    spec = importlib.util.spec_from_file_location("packaged_model", version_dir / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    answers = module.Predictor(str(version_dir)).predict(["When will my refund arrive?"])

    assert answers[0]["label"] == "refund"


def test_intent_predictor_labels_its_training_sentences(intent_artifact):
    predictor = intent_runtime.Predictor(str(intent_artifact))

    answers = predictor.predict([text for text, _ in INTENT_TRAINING_ROWS])

    assert [answer["label"] for answer in answers] == [label for _, label in INTENT_TRAINING_ROWS]
    for answer in answers:
        assert set(answer["scores"]) == {"account_access", "refund", "shipping"}
        assert sum(answer["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert answer["scores"][answer["label"]] == max(answer["scores"].values())


def test_intent_predictor_generalises_to_new_wording(intent_artifact):
    answers = intent_runtime.Predictor(str(intent_artifact)).predict(
        ["I still haven't received my money back", "the password reset link is broken"]
    )

    assert [answer["label"] for answer in answers] == ["refund", "account_access"]


def test_embedding_predictor_returns_unit_norm_384_float_vectors(embedding_artifact):
    vectors = embedding_runtime.Predictor(str(embedding_artifact)).predict(
        ["How do I reset my password?", "I forgot my password", "Where is my parcel?"]
    )

    array = np.array(vectors)
    assert array.shape == (3, 384)
    assert np.linalg.norm(array, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    # Paraphrases sit closer together than unrelated questions.
    assert array[0] @ array[1] > array[0] @ array[2]


def test_intent_training_needs_two_labels(tmp_path, base_encoder_files):
    with pytest.raises(InvalidDataset, match="at least two labels"):
        get_kind("intent-classifier").build_artifact(
            texts=["a", "b"], labels=["x", "x"], out_dir=tmp_path, base=base_encoder_files
        )


def test_intent_training_of_1000_rows_reports_accuracy_and_its_timings(
    tmp_path, base_encoder_files
):
    from models_registry.demo import tickets as demo_data

    rows = demo_data.generate_tickets("zoomride", rows=1200, seed=7)
    texts, labels = [row["text"] for row in rows], [row["label"] for row in rows]

    metrics = get_kind("intent-classifier").build_artifact(
        texts=texts[:1000],
        labels=labels[:1000],
        validation_texts=texts[1000:],
        validation_labels=labels[1000:],
        out_dir=tmp_path,
        base=base_encoder_files,
    )

    assert metrics["train_accuracy"] > 0.9
    assert metrics["validation_accuracy"] > 0.9
    # How long it takes is bench/training.py's to measure; the metrics report it.
    assert metrics["embed_seconds"] > 0 and metrics["train_seconds"] > 0


@pytest.mark.parametrize(
    "module", [intent_runtime, embedding_runtime, tenantml_encoder, tenantml_head]
)
def test_runtime_modules_import_only_what_the_triton_stub_has(module):
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }

    assert imported <= RUNTIME_ALLOWED_IMPORTS


def test_kinds_encode_requests_and_decode_triton_answers():
    intent, embedding = get_kind("intent-classifier"), get_kind("embedding")

    assert intent.encode_request(["Where is my refund?"]) == {
        "inputs": [
            {"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["Where is my refund?"]}
        ]
    }
    intent_answer = {
        "model_name": "acme.intents.v3",
        "outputs": [
            {"name": "LABEL", "datatype": "BYTES", "shape": [2, 1], "data": ["refund", "shipping"]},
            {"name": "SCORES", "datatype": "FP32", "shape": [2, 2], "data": [0.9, 0.1, 0.2, 0.8]},
            {
                "name": "LABELS",
                "datatype": "BYTES",
                "shape": [2, 2],
                "data": ["refund", "shipping", "refund", "shipping"],
            },
        ],
    }
    assert intent.decode_response(intent_answer) == [
        {"label": "refund", "scores": {"refund": 0.9, "shipping": 0.1}},
        {"label": "shipping", "scores": {"refund": 0.2, "shipping": 0.8}},
    ]
    vectors = embedding.decode_response(
        json.dumps(
            {"outputs": [{"name": "EMBEDDING", "shape": [2, 384], "data": [0.5] * 768}]}
        ).encode()
    )
    assert [len(vector) for vector in vectors] == [384, 384]


def test_naive_baseline_package_serves_the_embedding_interface(tmp_path):
    from bench.naive_baseline.package import build_naive_baseline_package

    info = build_naive_baseline_package(
        out_path=tmp_path / "model.tar.gz", triton_model_name="naive.minilm"
    )

    assert list(_members(info.path)) == [
        "naive.minilm",
        "naive.minilm/1",
        "naive.minilm/1/model.py",
        "naive.minilm/config.pbtxt",
    ]
    config = _model_config(_read(info.path, "naive.minilm/config.pbtxt").decode())
    assert [(t.name, list(t.dims)) for t in config.output] == [("EMBEDDING", [384])]
