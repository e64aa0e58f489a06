"""The intent classifier's "none of these": an out-of-scope label trained from the tenant's
examples, a confidence threshold set from the tenant's trade-off, both reported in the training
metrics, checked as hyperparameters (400 naming the field) and held by the quality gate."""

from __future__ import annotations

import numpy as np
import pytest

from models_registry.demo.tickets import (
    OUT_OF_SCOPE_LABEL,
    generate_out_of_scope,
    generate_tickets,
    to_csv,
)
from models_registry.kinds import InvalidHyperparameter, get_kind
from models_registry.kinds.intent_classifier import head_settings
from models_registry.quality_gate import evaluate_gate
from models_registry.services.datasets import create_dataset
from models_registry.services.promotion import apply_quality_gate, promote_version
from models_registry.triton_runtime.intent_classifier import Predictor
from tests.factories import ModelVersionFactory, TenantModelFactory

GUARDED = ("in_scope_accuracy", "out_of_scope_recall")


def split(rows: list[dict], every: int = 5) -> tuple[list[dict], list[dict]]:
    return (
        [row for i, row in enumerate(rows) if i % every],
        [row for i, row in enumerate(rows) if not i % every],
    )


def build(out_dir, base, rows: list[dict], **settings) -> dict:
    train, validation = split(rows)
    return get_kind("intent-classifier").build_artifact(
        texts=[row["text"] for row in train],
        labels=[row["label"] for row in train],
        validation_texts=[row["text"] for row in validation],
        validation_labels=[row["label"] for row in validation],
        out_dir=out_dir,
        base=base,
        **settings,
    )


@pytest.fixture(scope="module")
def trained_with_out_of_scope(tmp_path_factory, base_encoder_files):
    out_dir = tmp_path_factory.mktemp("intent-oos")
    rows = generate_tickets("zoomride", rows=320, seed=11, out_of_scope_rows=80)
    metrics = build(out_dir, base_encoder_files, rows)
    return out_dir, metrics, rows


def test_out_of_scope_examples_train_a_label_that_answers_unseen_off_topic_messages(
    trained_with_out_of_scope,
):
    out_dir, metrics, rows = trained_with_out_of_scope
    unseen = [row["text"] for row in generate_out_of_scope("zoomride", rows=40, held_out=True)]
    tickets = [row["text"] for row in generate_tickets("zoomride", rows=40, seed=99)]

    predictor = Predictor(str(out_dir))
    off_topic = [answer["label"] for answer in predictor.predict(unseen)]
    in_scope = [answer["label"] for answer in predictor.predict(tickets)]

    assert OUT_OF_SCOPE_LABEL in predictor.labels
    assert np.mean([label == OUT_OF_SCOPE_LABEL for label in off_topic]) >= 0.6
    assert np.mean([label == OUT_OF_SCOPE_LABEL for label in in_scope]) <= 0.1
    _, validation = split(rows)
    assert metrics["out_of_scope_validation_rows"] == sum(
        row["label"] == OUT_OF_SCOPE_LABEL for row in validation
    )
    assert metrics["out_of_scope_recall"] >= 0.8


def test_training_metrics_report_in_scope_accuracy_recall_and_what_was_chosen(
    trained_with_out_of_scope,
):
    _, metrics, _ = trained_with_out_of_scope

    for name in ("accuracy", "macro_f1", "in_scope_accuracy", "out_of_scope_recall"):
        assert 0.0 <= metrics[name] <= 1.0
    assert metrics["class_weight"] == "balanced" or metrics["class_weight"] == "none"
    assert metrics["l2"] > 0 and metrics["temperature"] > 0
    assert 0 < metrics["out_of_scope_threshold"] < 1
    assert OUT_OF_SCOPE_LABEL in metrics["per_label_f1"]


def test_without_out_of_scope_examples_the_threshold_is_set_from_in_scope_confidences(
    tmp_path, base_encoder_files
):
    rows = generate_tickets("threadline", rows=400, seed=12)
    metrics = build(tmp_path, base_encoder_files, rows, max_in_scope_accuracy_loss=0.05)
    predictor = Predictor(str(tmp_path))
    unseen = [row["text"] for row in generate_out_of_scope("threadline", rows=40, held_out=True)]

    answers = [answer["label"] for answer in predictor.predict(unseen)]

    assert OUT_OF_SCOPE_LABEL not in predictor.labels
    assert predictor.head.threshold == metrics["out_of_scope_threshold"] is not None
    # The budget is what new texts are expected to cost; on the validation split's 80 rows
    # the cost is one sample of it.
    lost = metrics["in_scope_accuracy_before_threshold"] - metrics["in_scope_accuracy"]
    assert 0 <= lost <= 0.1
    assert "out_of_scope_recall" not in metrics
    assert OUT_OF_SCOPE_LABEL not in metrics["per_label_f1"]
    assert np.mean([label == OUT_OF_SCOPE_LABEL for label in answers]) > 0.3


def test_a_zero_budget_turns_the_threshold_off(tmp_path, base_encoder_files):
    rows = generate_tickets("northbank", rows=200, seed=13)
    metrics = build(tmp_path, base_encoder_files, rows, max_in_scope_accuracy_loss=0.0)

    assert metrics["out_of_scope_threshold"] is None
    assert Predictor(str(tmp_path)).head.threshold is None
    assert metrics["in_scope_accuracy"] == metrics["in_scope_accuracy_before_threshold"]
    assert "out_of_scope_threshold_note" not in metrics


def test_a_dataset_too_small_for_the_budget_says_why_it_has_no_threshold(
    tmp_path, base_encoder_files
):
    rows = generate_tickets("northbank", rows=200, seed=13)
    metrics = build(tmp_path, base_encoder_files, rows, max_in_scope_accuracy_loss=0.004)

    assert metrics["out_of_scope_threshold"] is None
    assert "has 200 in-scope rows" in metrics["out_of_scope_threshold_note"]
    assert "needs at least 249" in metrics["out_of_scope_threshold_note"]


def test_the_out_of_scope_label_name_is_the_tenants_choice(tmp_path, base_encoder_files):
    rows = [
        {**row, "label": "none_of_these"} if row["label"] == OUT_OF_SCOPE_LABEL else row
        for row in generate_tickets("zoomride", rows=160, seed=14, out_of_scope_rows=40)
    ]
    metrics = build(tmp_path, base_encoder_files, rows, out_of_scope_label="none_of_these")
    predictor = Predictor(str(tmp_path))

    assert predictor.head.out_of_scope_label == "none_of_these"
    assert metrics["out_of_scope_label"] == "none_of_these"
    assert "out_of_scope_recall" in metrics
    assert predictor.predict(["Who won the Lakers game last night?"])[0]["label"] == (
        "none_of_these"
    )


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"max_in_scope_accuracy_loss": 0.9}, "max_in_scope_accuracy_loss"),
        ({"max_in_scope_accuracy_loss": -0.01}, "max_in_scope_accuracy_loss"),
        ({"max_in_scope_accuracy_loss": "a lot"}, "max_in_scope_accuracy_loss"),
        ({"class_weight": "heavy"}, "class_weight"),
        ({"out_of_scope_label": "   "}, "out_of_scope_label"),
        ({"out_of_scope_label": "x" * 201}, "out_of_scope_label"),
        ({"l2": -1}, "l2"),
        ({"threshold": 0.5}, "threshold"),
    ],
)
def test_bad_out_of_scope_hyperparameters_are_refused_naming_the_field(hyperparameters, field):
    with pytest.raises(InvalidHyperparameter) as refused:
        head_settings(hyperparameters)
    assert refused.value.field == field and refused.value.status_code == 400


def test_hyperparameters_arrive_as_strings_from_sagemaker_and_parse():
    settings = head_settings(
        {"max_in_scope_accuracy_loss": "0.02", "class_weight": "Balanced", "l2": "0.001"}
    )
    assert settings.max_in_scope_accuracy_loss == 0.02
    assert (settings.class_weight, settings.l2, settings.epochs) == ("balanced", 0.001, None)


def test_the_api_refuses_a_training_job_with_a_bad_budget_naming_the_field(tenant_client, tenant):
    TenantModelFactory(tenant=tenant, name="intents")
    content = to_csv(generate_tickets("zoomride", rows=60, seed=0))
    create_dataset(tenant=tenant, name="tickets.csv", content=content, actor="t")

    response = tenant_client.post(
        f"/api/v1/tenants/{tenant.slug}/models/intents/training-jobs/",
        {"dataset": "tickets.csv", "hyperparameters": {"max_in_scope_accuracy_loss": 2}},
        format="json",
    )

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "max_in_scope_accuracy_loss"
    assert "≤ 0.5" in error["message"]


# --- The quality gate ---


def gate(candidate: dict, active: dict | None):
    return evaluate_gate(
        candidate_metrics=candidate,
        active_metrics=active,
        primary_metric="macro_f1",
        tolerance=0.01,
        guarded_metrics=GUARDED,
    )


def test_gate_holds_a_version_that_loses_out_of_scope_recall_even_if_macro_f1_improves():
    decision = gate(
        {"macro_f1": 0.95, "in_scope_accuracy": 0.96, "out_of_scope_recall": 0.50},
        {"macro_f1": 0.93, "in_scope_accuracy": 0.96, "out_of_scope_recall": 0.70},
    )
    assert not decision.promote
    assert "out_of_scope_recall 0.5000 is worse than the active version's 0.7000" in (
        decision.reason
    )


def test_gate_holds_a_version_that_loses_in_scope_accuracy_beyond_the_tolerance():
    decision = gate(
        {"macro_f1": 0.93, "in_scope_accuracy": 0.94},
        {"macro_f1": 0.93, "in_scope_accuracy": 0.96},
    )
    assert not decision.promote and "in_scope_accuracy" in decision.reason


def test_gate_promotes_within_the_tolerance_on_every_guarded_metric_and_says_so():
    decision = gate(
        {"macro_f1": 0.93, "in_scope_accuracy": 0.955, "out_of_scope_recall": 0.695},
        {"macro_f1": 0.93, "in_scope_accuracy": 0.96, "out_of_scope_recall": 0.70},
    )
    assert decision.promote
    assert "in_scope_accuracy 0.9550" in decision.reason
    assert "out_of_scope_recall 0.6950" in decision.reason


def test_gate_holds_a_version_that_no_longer_reports_what_the_active_one_did():
    decision = gate(
        {"macro_f1": 0.95, "in_scope_accuracy": 0.97},
        {"macro_f1": 0.93, "in_scope_accuracy": 0.96, "out_of_scope_recall": 0.70},
    )
    assert not decision.promote and "out_of_scope_recall" in decision.reason


def test_gate_compares_only_what_the_active_version_reports():
    # A version trained before these metrics existed reports only macro-F1.
    decision = gate({"macro_f1": 0.93, "out_of_scope_recall": 0.2}, {"macro_f1": 0.93})
    assert decision.promote


def test_an_intent_version_losing_out_of_scope_recall_is_held_by_the_gate_service(tenant):
    model = TenantModelFactory(tenant=tenant, name="intents", kind="intent-classifier")
    active = {"macro_f1": 0.9, "in_scope_accuracy": 0.95, "out_of_scope_recall": 0.8}
    promote_version(version=ModelVersionFactory(model=model, number=1, metrics=active), actor="t")
    candidate = ModelVersionFactory(
        model=model, number=2, metrics={**active, "macro_f1": 0.92, "out_of_scope_recall": 0.6}
    )

    decision = apply_quality_gate(version=candidate, actor="t")

    model.refresh_from_db()
    candidate.refresh_from_db()
    assert not decision.promote and model.active_version.number == 1
    assert "out_of_scope_recall" in candidate.status_reason
