"""Datasets of replies (``text,reply``): parsing, the row-numbered problems, the random split, and
training jobs that take only the rows their kind trains on."""

from __future__ import annotations

import json

import pytest

from models_registry.dataset_files import (
    MAX_REPLY_CHARS,
    MIN_REPLY_ROWS,
    export_csv,
    parse_dataset,
)
from models_registry.demo.replies import generate_replies
from models_registry.demo.tickets import generate_pairs, generate_tickets, to_csv, to_jsonl
from models_registry.exceptions import InvalidDataset
from models_registry.quality_gate import evaluate_gate
from models_registry.services.datasets import create_dataset
from models_registry.services.training import start_training_job
from tests.factories import TenantModelFactory


def reply_rows(count: int = MIN_REPLY_ROWS) -> list[dict[str, str]]:
    return [
        {"text": f"Where is my order {n}?", "reply": f"Hi!\n\nYour order {n} ships today."}
        for n in range(count)
    ]


def jsonl_of(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def test_a_csv_of_replies_parses_with_its_line_breaks():
    parsed = parse_dataset(to_csv(reply_rows()), format="csv")
    assert parsed.problems == []
    assert parsed.columns == ["text", "reply"]
    assert parsed.rows[3] == {
        "text": "Where is my order 3?",
        "reply": "Hi!\n\nYour order 3 ships today.",
    }
    assert parsed.label_counts == {}


def test_json_lines_of_replies_parse_like_the_csv():
    rows = reply_rows(25)
    assert parse_dataset(to_jsonl(rows), format="jsonl").rows == rows
    assert parse_dataset(to_csv(rows), format="csv").rows == rows


def test_replies_are_split_at_random_80_20_and_the_same_every_time():
    parsed = parse_dataset(to_csv(reply_rows(50)), format="csv")
    split = parsed.split()
    assert split == parse_dataset(to_csv(reply_rows(50)), format="csv").split()
    assert sorted(split["train"] + split["validation"]) == list(range(50))
    assert len(split["validation"]) == 10
    # Not the first or last ten: shuffled, not cut.
    assert split["validation"] not in (list(range(10)), list(range(40, 50)))


@pytest.mark.parametrize(
    ("change", "format", "expected"),
    [
        # A CSV row is named by its line in the file: each earlier reply spans three lines.
        (lambda rows: rows[2].update(reply="  "), "csv", "row 8, field reply: empty."),
        (lambda rows: rows[2].update(reply="  "), "jsonl", "row 3, field reply: empty."),
        (
            lambda rows: rows[4].update(reply="x" * (MAX_REPLY_CHARS + 1)),
            "jsonl",
            f"row 5, field reply: {MAX_REPLY_CHARS + 1} characters, over the "
            f"{MAX_REPLY_CHARS} limit.",
        ),
        (lambda rows: rows[6].pop("reply"), "jsonl", "row 7, field reply: missing."),
        (lambda rows: rows[1].update(text=""), "jsonl", "row 2, field text: empty."),
    ],
)
def test_a_bad_reply_row_is_named_by_its_row_and_field(change, format, expected):
    rows = reply_rows()
    change(rows)
    content = jsonl_of(rows) if format == "jsonl" else to_csv(rows)
    problems = parse_dataset(content, format=format).problems
    assert problems == [expected]
    assert "x" * 50 not in problems[0]  # the text itself is never echoed


def test_too_few_replies_are_refused():
    rows = reply_rows(MIN_REPLY_ROWS - 1)
    (problem,) = parse_dataset(to_csv(rows), format="csv").problems
    assert problem == (
        f"file, field reply: {MIN_REPLY_ROWS - 1} row(s) with a reply; a reply dataset needs at "
        f"least {MIN_REPLY_ROWS}."
    )


def test_repeated_rows_count_once_and_one_ticket_may_have_two_replies():
    rows = reply_rows()
    rows.append(dict(rows[0]))  # the same row again: dropped
    rows.append({"text": rows[1]["text"], "reply": "Hello, it ships tomorrow."})  # kept
    parsed = parse_dataset(to_csv(rows), format="csv")
    assert parsed.problems == []
    assert parsed.repeated == [len(rows) - 2]
    assert parsed.conflicts == []
    assert len(parsed.kept) == MIN_REPLY_ROWS + 1


@pytest.mark.parametrize("format", ["csv", "jsonl"])
def test_a_file_with_both_labels_and_replies_is_refused(format):
    rows = [{"text": "hi", "label": "a", "reply": "hello"}] * 3
    if format == "csv":
        content = b"text,label,reply\n" + b"hi,a,hello\n" * 3
    else:
        content = "".join(json.dumps(row) + "\n" for row in rows).encode()
    (problem, *_) = parse_dataset(content, format=format).problems
    assert "both label and reply" in problem


def test_a_reply_file_missing_its_text_column_names_it():
    (problem,) = parse_dataset(b"ticket,reply\nhi,hello\n", format="csv").problems
    assert problem == "header: missing column(s) text; found ticket, reply."


def test_export_keeps_the_reply_column():
    assert export_csv(reply_rows(1)).splitlines()[0] == "text,reply"


def test_the_demo_replies_make_a_valid_dataset_in_each_tenants_voice():
    for slug, greeting in (("zoomride", "Hey"), ("northbank", "Dear")):
        rows = generate_replies(slug, rows=200, seed=3)
        assert rows == generate_replies(slug, rows=200, seed=3)
        parsed = parse_dataset(to_csv(rows), format="csv")
        assert parsed.problems == [] and parsed.repeated == []
        assert sum(row["reply"].startswith(greeting) for row in rows) > 100
    banking = " ".join(row["reply"] for row in generate_replies("northbank", rows=200, seed=3))
    assert "Hey " not in banking and ".." not in banking


# --- Training jobs take the rows their kind trains on ---


@pytest.fixture
def reply_dataset(tenant):
    content = to_csv(generate_replies("zoomride", rows=60, seed=0))
    return create_dataset(tenant=tenant, name="replies.csv", content=content, actor="t")


@pytest.fixture
def label_dataset(tenant):
    content = to_csv(generate_tickets("zoomride", rows=60, seed=0))
    return create_dataset(tenant=tenant, name="tickets.csv", content=content, actor="t")


@pytest.mark.django_db
def test_a_reply_dataset_records_its_columns_and_no_labels(reply_dataset):
    assert reply_dataset.validation_report["columns"] == ["text", "reply"]
    assert reply_dataset.labels == {}
    assert reply_dataset.rows == 60


@pytest.mark.django_db
def test_a_reply_model_refuses_a_dataset_of_labels(tenant, label_dataset):
    model = TenantModelFactory(tenant=tenant, name="replies", kind="reply-autocomplete")
    with pytest.raises(InvalidDataset) as refused:
        start_training_job(model=model, dataset=label_dataset, actor="t")
    assert refused.value.field == "dataset"
    assert refused.value.status_code == 400
    assert "no reply column" in refused.value.message


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["intent-classifier", "embedding"])
def test_label_kinds_refuse_a_dataset_of_replies(tenant, reply_dataset, kind):
    model = TenantModelFactory(tenant=tenant, name="other", kind=kind)
    with pytest.raises(InvalidDataset) as refused:
        start_training_job(model=model, dataset=reply_dataset, actor="t")
    assert refused.value.field == "dataset"
    assert "no label" in refused.value.message


@pytest.mark.django_db
def test_a_reply_model_takes_a_dataset_of_replies(tenant, reply_dataset):
    model = TenantModelFactory(tenant=tenant, name="replies", kind="reply-autocomplete")
    job, created = start_training_job(
        model=model, dataset=reply_dataset, actor="t", hyperparameters={"epochs": 2}
    )
    assert created and job.hyperparameters == {"epochs": 2}


@pytest.mark.django_db
def test_an_embedding_model_still_refuses_labels_without_groups(tenant, label_dataset):
    model = TenantModelFactory(tenant=tenant, name="embeddings", kind="embedding")
    with pytest.raises(InvalidDataset, match="no group column"):
        start_training_job(model=model, dataset=label_dataset, actor="t")
    pairs = create_dataset(
        tenant=tenant,
        name="pairs.csv",
        content=to_csv(generate_pairs("zoomride", groups=12, seed=0)),
        actor="t",
    )
    assert start_training_job(model=model, dataset=pairs, actor="t")[1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"d_model": 130}, "d_model"),
        ({"layers": 0}, "layers"),
        ({"max_tokens": 4096}, "max_tokens"),
        ({"epochs": "many"}, "epochs"),
        ({"dropout": 0.2}, "dropout"),
    ],
)
def test_a_reply_training_job_refuses_bad_hyperparameters_by_name(
    tenant, reply_dataset, hyperparameters, field
):
    model = TenantModelFactory(tenant=tenant, name="replies", kind="reply-autocomplete")
    with pytest.raises(Exception) as refused:
        start_training_job(
            model=model, dataset=reply_dataset, actor="t", hyperparameters=hyperparameters
        )
    assert refused.value.status_code == 400
    assert refused.value.field == field


# --- The quality gate holds a version that does not beat its baseline ---


@pytest.mark.parametrize(
    ("accuracy", "baseline", "promote"),
    [(0.61, 0.60, True), (0.60, 0.60, False), (0.5, 0.6, False)],
)
def test_the_gate_holds_a_first_version_that_does_not_beat_its_baseline(
    accuracy, baseline, promote
):
    decision = evaluate_gate(
        candidate_metrics={"next_token_accuracy": accuracy, "ngram_next_token_accuracy": baseline},
        active_metrics=None,
        primary_metric="next_token_accuracy",
        tolerance=0.01,
        baseline_metric="ngram_next_token_accuracy",
    )
    assert decision.promote is promote
    assert "baseline" in decision.reason


def test_the_gate_holds_a_candidate_reporting_no_baseline_even_over_a_worse_active_one():
    decision = evaluate_gate(
        candidate_metrics={"next_token_accuracy": 0.9},
        active_metrics={"next_token_accuracy": 0.5},
        primary_metric="next_token_accuracy",
        tolerance=0.01,
        baseline_metric="ngram_next_token_accuracy",
    )
    assert not decision.promote
    assert "no ngram_next_token_accuracy" in decision.reason
