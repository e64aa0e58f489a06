"""The shared-base model on a real Triton, spoken to with ``shared_heads``'s bodies: hundreds of
heads behind one loaded encoder, every row answered by its own head under concurrent mixed
batches with unloads and reloads, tampered and missing heads, unloads and the byte capacity.

One Triton serves the module; the shared model is loaded from its package as the platform loads
any package (verified, unpacked), plus a second one with a small head cache for eviction.
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from deployments.backends.local.client import TritonMultiModelClient
from deployments.backends.local.packages import prepare_model_dir
from deployments.backends.local.process import (
    kill_triton,
    prepare_triton_home,
    start_triton,
    tritonserver_path,
)
from deployments.backends.shared_heads import (
    HeadRefused,
    HeadsNotLoaded,
    infer_body,
    list_heads_body,
    load_head_body,
    parse_control_answer,
    parse_heads_answer,
    parse_infer_answer,
    unload_head_body,
)
from deployments.exceptions import InvalidInferenceInput, UpstreamError
from models_registry.demo.tickets import generate_tickets
from models_registry.shared_base import (
    build_shared_base_package,
    shared_base_model_dir,
    shared_base_model_name,
)
from models_registry.triton_runtime.tenantml_encoder import Encoder
from models_registry.triton_runtime.tenantml_head import Head
from tests.serving_fixtures import INTENT_TRAINING_ROWS
from tests.shared_heads_support import SyntheticHead, distinct_heads, synthetic_head

KIND = "intent-classifier"
LOAD_TIMEOUT_S = 120.0
TEXTS = [text for text, _ in INTENT_TRAINING_ROWS] + [
    row["text"] for row in generate_tickets("northbank", rows=90, seed=3)
]


# --- The bodies and their answers, without a server ------------------------------------------


def _answer(**outputs) -> dict:
    return {
        "outputs": [
            {"name": name, "shape": shape, "datatype": "BYTES", "data": data}
            for name, (shape, data) in outputs.items()
        ]
    }


def test_bodies_carry_one_bytes_row_per_field_and_the_head_files_as_base64():
    body = load_head_body(
        head_id="acme.intents.v1", head_npz=b"\x00\xff", labels_json=b"[]", sha256="ab"
    )
    fields = {item["name"]: item for item in body["inputs"]}
    assert fields["OP"]["data"] == ["load"] and fields["HEAD_ID"]["data"] == ["acme.intents.v1"]
    assert fields["HEAD_NPZ"]["data"] == ["AP8="] and fields["LABELS_JSON"]["data"] == ["W10="]
    assert all(item["shape"] == [1, 1] and item["datatype"] == "BYTES" for item in fields.values())
    assert unload_head_body(head_id="x")["inputs"][1]["data"] == ["x"]
    assert list_heads_body() == {
        "inputs": [{"name": "OP", "shape": [1, 1], "datatype": "BYTES", "data": ["list"]}]
    }
    body = infer_body(texts=["a", "b"], head_ids=["h1", "h2"])
    assert [(item["name"], item["shape"]) for item in body["inputs"]] == [
        ("TEXT", [2, 1]),
        ("HEAD", [2, 1]),
    ]


def test_bad_infer_bodies_are_refused_naming_the_problem():
    with pytest.raises(InvalidInferenceInput, match="2 texts but 1 head ids"):
        infer_body(texts=["a", "b"], head_ids=["h"])
    with pytest.raises(InvalidInferenceInput, match="1 to 32 texts, not 33"):
        infer_body(texts=["a"] * 33, head_ids=["h"] * 33)
    with pytest.raises(InvalidInferenceInput, match="non-empty string"):
        infer_body(texts=["a"], head_ids=[""])


def test_an_answer_decodes_per_row_without_padding_and_names_missing_heads_once():
    answer = _answer(
        LABEL=([3, 1], ["b", "", ""]),
        SCORES=([3, 3], [0.25, 0.75, 0.0, 0, 0, 0, 0, 0, 0]),
        LABELS=([3, 3], ["a", "b", "", "", "", "", "", "", ""]),
        STATUS=([3, 1], ["ok", "head_not_loaded", "head_not_loaded"]),
        ROW_HEAD=([3, 1], ["h1", "gone", "gone"]),
    )
    with pytest.raises(HeadsNotLoaded) as caught:
        parse_infer_answer(answer)
    assert caught.value.missing == ["gone"]
    assert caught.value.answered == [{"label": "b", "scores": {"a": 0.25, "b": 0.75}}, None, None]
    assert "'gone'" in caught.value.message
    with pytest.raises(UpstreamError, match="other heads than were asked"):
        parse_infer_answer(answer, head_ids=["h1", "gone", "h2"])
    with pytest.raises(UpstreamError, match="not a ticket answer"):
        parse_infer_answer({"outputs": []})


def test_a_refused_load_raises_with_the_models_reason():
    refused = _answer(RESULT=([1, 1], ['{"error": "sha256 does not match", "heads": {}}']))
    with pytest.raises(HeadRefused, match="sha256 does not match"):
        parse_heads_answer(refused)
    listed = _answer(RESULT=([1, 1], ['{"heads": {"h": 10}, "used_bytes": 10}']))
    assert parse_heads_answer(listed) == {"h": 10}


# --- On a real Triton ------------------------------------------------------------------------

needs_triton = pytest.mark.skipif(
    tritonserver_path() is None,
    reason="tritonserver not found: nvidia-pytriton (which ships it) is not installed here",
)


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    if tritonserver_path() is None:
        pytest.skip("tritonserver not found: nvidia-pytriton is not installed here")
    var_dir = tmp_path_factory.mktemp("var")
    process = start_triton(
        workdir=tmp_path_factory.mktemp("instance"),
        backend_directory=prepare_triton_home(var_dir),
        startup_timeout_s=30,
    )
    yield process
    kill_triton(process)  # its models need no orderly unload


@pytest.fixture(scope="module")
def client(triton):
    client = TritonMultiModelClient.for_process(triton, timeout_s=LOAD_TIMEOUT_S)
    yield client
    client.close()


@pytest.fixture(scope="module")
def shared_model(client, tmp_path_factory, base_encoder_cache_dir, base_encoder_files):
    """The shared model, packaged, verified, unpacked and loaded: its Triton name."""
    scratch = tmp_path_factory.mktemp("shared")
    info = build_shared_base_package(
        kind=KIND, out_path=scratch / "model.tar.gz", cache_dir=base_encoder_cache_dir
    )
    url = prepare_model_dir(
        package_path=info.path, expected_sha256=info.sha256, models_root=scratch / "models"
    )
    name = shared_base_model_name(kind=KIND, cache_dir=base_encoder_cache_dir)
    assert info.triton_model_name == name
    client.load_model(name, url, timeout_s=LOAD_TIMEOUT_S)
    return name


@pytest.fixture(scope="module")
def encoder(base_encoder_files):
    """The offline reference: the base encoder as training embeds with it."""
    return Encoder(str(base_encoder_files.onnx_path.parent))


def _load(client, model: str, synthetic: SyntheticHead) -> dict:
    return parse_control_answer(
        client.invoke(
            model,
            load_head_body(
                head_id=synthetic.head_id,
                head_npz=synthetic.head_npz,
                labels_json=synthetic.labels_json,
                sha256=synthetic.sha256,
            ),
        )
    )


def _ask(client, model: str, texts: list[str], head_ids: list[str]) -> list[dict]:
    return parse_infer_answer(
        client.invoke(model, infer_body(texts=texts, head_ids=head_ids)), head_ids=head_ids
    )


def _offline(head: Head, embeddings: np.ndarray) -> list[dict]:
    probabilities = head.probabilities(embeddings)
    return [
        {"label": label, "scores": dict(zip(head.labels, row.tolist(), strict=True))}
        for label, row in zip(head.decide(probabilities), probabilities, strict=True)
    ]


@needs_triton
def test_three_hundred_heads_behind_one_encoder_each_answer_as_its_head_offline(
    client, shared_model, encoder
):
    heads = distinct_heads(300, prefix="bulk")
    for synthetic in heads:
        assert _load(client, shared_model, synthetic)["evicted"] == []
    resident = parse_heads_answer(client.invoke(shared_model, list_heads_body()))
    assert {synthetic.head_id for synthetic in heads} <= set(resident)

    by_id = {synthetic.head_id: synthetic.head() for synthetic in heads}
    rng = random.Random(5)
    shuffled = rng.sample(heads, len(heads))
    for start in range(0, len(shuffled), 30):
        chunk = shuffled[start : start + 30]
        texts = rng.sample(TEXTS, len(chunk))
        head_ids = [synthetic.head_id for synthetic in chunk]
        answers = _ask(client, shared_model, texts, head_ids)
        # One request at a time is one encoder run over exactly these texts, as offline.
        embeddings = encoder.embed(texts)
        for row, (head_id, answer) in enumerate(zip(head_ids, answers, strict=True)):
            expected = _offline(by_id[head_id], embeddings[row : row + 1])[0]
            assert answer["label"] == expected["label"]
            assert list(answer["scores"]) == list(expected["scores"])
            np.testing.assert_allclose(
                list(answer["scores"].values()), list(expected["scores"].values()), atol=1e-5
            )


def _lookalike_heads() -> list[SyntheticHead]:
    """Heads with the same six label names and nearly the same weights, each biased to its own
    label, under ids that look like one another's."""
    labels = ["refund", "shipping", "account", "billing", "cancel", "other"]
    ids = [
        "acme.intents.v1",
        "acme.intents.v1 ",
        "acme.intents.v10",
        "ACME.intents.v1",
        "acme.intents.v1\u200b",
        "acme%2Eintents.v1",
    ]
    heads = []
    base = synthetic_head("template", labels, seed=99)
    template = base.head()
    rng = np.random.default_rng(7)
    for index, head_id in enumerate(ids):
        bias = np.zeros(len(labels), dtype=np.float32)
        bias[index] = 6.0
        # Weights of their own too, close enough that only the bias tells the heads apart.
        weights = template.weights + rng.normal(scale=0.3, size=template.weights.shape)
        heads.append(_with_arrays(head_id, labels, weights.astype(np.float32), bias))
    return heads


def _with_arrays(head_id: str, labels: list[str], weights, bias) -> SyntheticHead:
    import io
    import json

    from models_registry.triton_runtime.tenantml_head import head_digest

    buffer = io.BytesIO()
    np.savez(buffer, W=weights, b=bias)
    labels_json = json.dumps(labels).encode()
    return SyntheticHead(
        head_id, buffer.getvalue(), labels_json, head_digest(buffer.getvalue(), labels_json)
    )


@needs_triton
def test_concurrent_mixed_batches_with_unloads_never_answer_with_another_tenants_head(
    client, shared_model, encoder
):
    lookalikes = _lookalike_heads()
    others = distinct_heads(40, prefix="mixed", seed=2)
    everyone = lookalikes + others
    for synthetic in everyone:
        _load(client, shared_model, synthetic)
    heads = {synthetic.head_id: synthetic.head() for synthetic in everyone}
    churned = {lookalikes[1].head_id, lookalikes[4].head_id, others[0].head_id}
    alone = {text: encoder.embed([text]) for text in TEXTS}
    failures: list[str] = []
    counts = {"rows": 0, "not_loaded": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def check_row(text: str, head_id: str, answer: dict) -> None:
        own = heads[head_id]
        if list(answer["scores"]) != own.labels:
            failures.append(f"{head_id!r}: labels {list(answer['scores'])}")
            return
        got = np.array(list(answer["scores"].values()))
        # Batch-mates shift the int8 encoder's activation scale a little (the exact comparison is
        # the one-request-at-a-time test above), so an answer is compared with every head of the
        # same labels: its own must be the nearest, and near (other heads are 1.5 or more away).
        distances = {
            other_id: float(np.abs(got - head.probabilities(alone[text])[0]).sum())
            for other_id, head in heads.items()
            if head.labels == own.labels
        }
        nearest = min(distances, key=distances.get)
        if nearest != head_id or distances[head_id] > 0.6:
            failures.append(f"{head_id!r} answered like {nearest!r}: {distances}")

    def sender(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(15):
            size = rng.randint(1, 32)
            chosen = [rng.choice(everyone).head_id for _ in range(size)]
            texts = [rng.choice(TEXTS) for _ in range(size)]
            try:
                answers = _ask(client, shared_model, texts, chosen)
            except HeadsNotLoaded as exc:
                if not set(exc.missing) <= churned:
                    failures.append(f"heads reported missing: {exc.missing}")
                answers = exc.answered
            with lock:
                for text, head_id, answer in zip(texts, chosen, answers, strict=True):
                    counts["rows"] += 1
                    if answer is None:
                        counts["not_loaded"] += 1
                        if head_id not in churned:
                            failures.append(f"{head_id!r} was not answered")
                        continue
                    check_row(text, head_id, answer)

    def churner() -> None:
        while not stop.is_set():
            for synthetic in everyone:
                if synthetic.head_id in churned:
                    client.invoke(shared_model, unload_head_body(head_id=synthetic.head_id))
                    time.sleep(0.005)
                    _load(client, shared_model, synthetic)

    threads = [threading.Thread(target=sender, args=(seed,)) for seed in range(6)]
    churn = threading.Thread(target=churner)
    churn.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    churn.join()

    assert failures == []
    assert counts["rows"] > 500
    # The churn really raced the answers: some rows found their head gone.
    assert counts["not_loaded"] > 0


@needs_triton
def test_a_tampered_head_is_refused_and_nothing_is_loaded(client, shared_model):
    before = parse_heads_answer(client.invoke(shared_model, list_heads_body()))
    genuine = synthetic_head("tampered.intents.v1", ["a", "b"], seed=3)
    flipped = (
        genuine.head_npz[:100] + bytes([genuine.head_npz[100] ^ 0xFF]) + genuine.head_npz[101:]
    )
    body = load_head_body(
        head_id=genuine.head_id,
        head_npz=flipped,
        labels_json=genuine.labels_json,
        sha256=genuine.sha256,
    )
    with pytest.raises(HeadRefused, match="sha256 does not match"):
        parse_heads_answer(client.invoke(shared_model, body))
    after = parse_heads_answer(client.invoke(shared_model, list_heads_body()))
    assert genuine.head_id not in after and set(after) == set(before)


@needs_triton
def test_a_missing_head_is_named_and_the_other_rows_are_still_answered(
    client, shared_model, encoder
):
    present = synthetic_head("present.intents.v1", ["refund", "other"], seed=4)
    _load(client, shared_model, present)
    texts = TEXTS[:3]
    with pytest.raises(HeadsNotLoaded) as caught:
        _ask(client, shared_model, texts, [present.head_id, "never.loaded.v1", present.head_id])
    assert caught.value.missing == ["never.loaded.v1"]
    answered = caught.value.answered
    assert answered[1] is None
    expected = _offline(present.head(), encoder.embed([texts[0], texts[2]]))
    assert [answered[0]["label"], answered[2]["label"]] == [row["label"] for row in expected]


@needs_triton
def test_an_unload_frees_the_head_and_its_next_answer_asks_for_a_load(client, shared_model):
    synthetic = synthetic_head("unloaded.intents.v1", ["a", "b", "c"], seed=5)
    loaded = _load(client, shared_model, synthetic)
    unloaded = parse_control_answer(
        client.invoke(shared_model, unload_head_body(head_id=synthetic.head_id))
    )
    assert unloaded["unloaded"] is True
    assert synthetic.head_id not in unloaded["heads"]
    assert unloaded["used_bytes"] == loaded["used_bytes"] - loaded["bytes"]
    with pytest.raises(HeadsNotLoaded) as caught:
        _ask(client, shared_model, ["Where is my refund?"], [synthetic.head_id])
    assert caught.value.missing == [synthetic.head_id]


@needs_triton
def test_the_byte_capacity_evicts_least_recently_used_heads_inside_the_serving_process(
    client, base_encoder_cache_dir, tmp_path
):
    heads = [synthetic_head(f"small{i}.intents.v1", ["a", "b", "c"], seed=i) for i in range(4)]
    size = len(heads[0].head().labels) * 385 * 4 + 3
    url = shared_base_model_dir(
        kind=KIND,
        models_root=tmp_path,
        cache_dir=base_encoder_cache_dir,
        head_cache_bytes=3 * size,
    )
    name = shared_base_model_name(kind=KIND, cache_dir=base_encoder_cache_dir)
    small = f"{name}-small-cache"
    client.load_model(small, url, timeout_s=LOAD_TIMEOUT_S)
    try:
        for synthetic in heads[:3]:
            assert _load(client, small, synthetic)["evicted"] == []
        _ask(client, small, ["Where is my refund?"], [heads[0].head_id])
        result = _load(client, small, heads[3])
        assert result["evicted"] == [heads[1].head_id]
        assert list(result["heads"]) == [heads[2].head_id, heads[0].head_id, heads[3].head_id]
        assert result["used_bytes"] == 3 * size == result["capacity_bytes"]
        with pytest.raises(HeadsNotLoaded):
            _ask(client, small, ["Where is my refund?"], [heads[1].head_id])
    finally:
        client.unload_model(small, timeout_s=LOAD_TIMEOUT_S)
