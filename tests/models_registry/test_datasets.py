"""Dataset validation (each problem names the row and the field) and the stored split."""

from __future__ import annotations

import json

import pytest

from models_registry.dataset_files import (
    MAX_FILE_BYTES,
    MAX_TEXT_CHARS,
    MIN_ROWS_PER_LABEL,
    parse_dataset,
    stratified_split,
)
from models_registry.demo.tickets import generate_pairs, generate_tickets, to_csv, to_jsonl
from models_registry.exceptions import DatasetTooLarge, InvalidDataset
from models_registry.models import Dataset
from models_registry.services.datasets import create_dataset


def csv_of(rows: list[tuple[str, str]]) -> bytes:
    return ("text,label\n" + "".join(f"{text},{label}\n" for text, label in rows)).encode()


def balanced(labels=("refund", "late"), per_label: int = MIN_ROWS_PER_LABEL) -> list:
    return [(f"{label} ticket {n}", label) for label in labels for n in range(per_label)]


def problems(content: bytes, format: str = "csv") -> list[str]:
    return parse_dataset(content, format=format).problems


def test_a_balanced_file_has_no_problems():
    parsed = parse_dataset(csv_of(balanced()), format="csv")
    assert parsed.problems == []
    assert parsed.label_counts == {"late": 5, "refund": 5}


def test_text_that_is_not_utf8_is_reported():
    assert "not UTF-8" in problems(b"text,label\n\xff\xfe,refund\n")[0]


def test_empty_text_names_row_and_field():
    rows = balanced()
    rows[2] = ("", "refund")
    assert "row 4, field text: empty." in problems(csv_of(rows))


def test_text_over_the_limit_names_row_field_and_length():
    rows = balanced()
    rows[0] = ("x" * (MAX_TEXT_CHARS + 1), "refund")
    (problem,) = problems(csv_of(rows))
    assert problem.startswith("row 2, field text:")
    assert str(MAX_TEXT_CHARS + 1) in problem


def test_one_label_only_is_refused():
    (problem,) = problems(csv_of(balanced(labels=("refund",))))
    assert "field label" in problem and "at least two labels" in problem
    assert problem.startswith("rows 2, 3")


def test_too_few_examples_of_a_label_names_the_label_and_its_rows():
    rows = balanced() + [("where is my card", "card"), ("card lost", "card")]
    (problem,) = problems(csv_of(rows))
    assert problem.startswith("rows 12, 13, field label: label 'card' has 2 example(s)")
    assert f"at least {MIN_ROWS_PER_LABEL}" in problem


def test_the_minimum_per_label_is_configurable():
    rows = balanced(per_label=2)
    assert parse_dataset(csv_of(rows), format="csv", min_rows_per_label=2).problems == []
    assert parse_dataset(csv_of(rows), format="csv").problems


def test_a_repeat_under_the_same_label_is_dropped_from_counts_and_split_and_named_by_row():
    rows = balanced()
    rows.append(("  REFUND   Ticket 0 ", "refund"))  # row 2's text, case and spaces aside
    parsed = parse_dataset(csv_of(rows), format="csv")
    assert parsed.problems == []
    assert [parsed.line_numbers[i] for i in parsed.repeated] == [12]
    assert parsed.label_counts == {"late": 5, "refund": 5}
    split = parsed.split()
    assert sorted(split["train"] + split["validation"]) == list(range(10))
    warning = parsed.repeats_warning()
    assert warning == (
        "1 row repeats an earlier row's text with the same label and was dropped: row 12."
    )


def test_repeats_dropped_leave_the_split_of_the_other_rows_as_it_was():
    rows = balanced(per_label=20)
    with_repeats = [*rows[:7], ("refund TICKET 0", "refund"), *rows[7:], rows[30]]
    clean = parse_dataset(csv_of(rows), format="csv")
    repeated = parse_dataset(csv_of(with_repeats), format="csv")
    assert [repeated.line_numbers[i] for i in repeated.repeated] == [9, 43]
    as_texts = {
        side: sorted(repeated.rows[i]["text"] for i in indexes)
        for side, indexes in repeated.split().items()
    }
    assert as_texts == {
        side: sorted(clean.rows[i]["text"] for i in indexes)
        for side, indexes in clean.split().items()
    }


def test_the_same_text_under_two_labels_is_found_by_row_and_not_dropped():
    rows = balanced()
    rows.append(("Refund ticket 0", "late"))
    parsed = parse_dataset(csv_of(rows), format="csv")
    assert parsed.problems == [] and parsed.repeated == []
    assert [[parsed.line_numbers[i] for i in group] for group in parsed.conflicts] == [[2, 12]]
    assert parsed.conflicts_summary() == "1 text appears under more than one label: rows 2 and 12"
    assert parsed.label_counts == {"late": 6, "refund": 5}


def test_a_label_left_short_once_repeats_are_dropped_is_refused():
    rows = [*balanced(per_label=4), ("late ticket 4", "late"), ("Refund ticket 0", "refund")]
    (problem,) = problems(csv_of(rows))
    assert "label 'refund' has 4 example(s)" in problem


def test_texts_repeated_in_another_paraphrase_group_are_kept():
    rows = "text,label,group\n" + "".join(
        f"{text},{label},{group}\n"
        for text, label, group in [
            ("card lost", "card", "g1"),
            ("I lost my card", "card", "g1"),
            ("card lost", "card", "g2"),
            ("my card is gone", "card", "g2"),
            ("late refund", "refund", "g3"),
            ("refund is late", "refund", "g3"),
        ]
    )
    parsed = parse_dataset(rows.encode(), format="csv")
    assert parsed.problems == [] and parsed.repeated == [] and parsed.conflicts == []


def test_a_file_over_the_size_limit_names_its_size():
    content = b"text,label\n" + b"x" * 2048
    (problem,) = parse_dataset(content, format="csv", max_file_bytes=1024).problems
    assert "2059 bytes" in problem and "limit" in problem


def test_create_dataset_refuses_a_file_over_20_mb_with_413(tenant):
    content = b"text,label\n" + b"a,b\n" * (MAX_FILE_BYTES // 4 + 1)
    with pytest.raises(DatasetTooLarge) as too_big:
        create_dataset(tenant=tenant, name="big.csv", content=content, actor="t")
    assert too_big.value.status_code == 413
    assert too_big.value.field == "file"
    assert f"{len(content)} bytes" in too_big.value.message
    assert not Dataset.objects.exists()


@pytest.mark.parametrize(
    ("content", "format", "expected"),
    [
        (b"body,label\nhi,a\n", "csv", "header: missing column(s) text; found body, label."),
        (b"text,category\nhi,a\n", "csv", "header: missing column(s) label; found text, category."),
        (b'{"text": "hi", "intent": "a"}\n', "jsonl", "row 1, field label: missing."),
    ],
)
def test_wrong_columns_are_named(content, format, expected):
    assert expected in problems(content, format)


def test_a_group_missing_on_some_rows_is_reported():
    rows = [{"text": f"t{n}", "label": f"l{n % 2}", "group": f"g{n // 2}"} for n in range(6)]
    del rows[3]["group"]
    (problem,) = problems(to_jsonl(rows), "jsonl")
    assert problem == "row 4, field group: missing, while other rows have a group."


def test_a_group_of_one_is_refused():
    rows = [{"text": f"t{n}", "label": f"l{n // 2}", "group": f"g{n // 2}"} for n in range(5)]
    (problem,) = problems(to_jsonl(rows), "jsonl")
    assert problem.startswith("row 5, field group: group 'g2' has 1 row(s)")


def test_paraphrase_pairs_pass_without_five_rows_per_label():
    assert problems(to_csv(generate_pairs("northbank", groups=8, seed=1))) == []


def test_split_is_stratified_80_20_and_deterministic():
    rows = [{"text": f"t{n}", "label": "a" if n < 50 else "b"} for n in range(60)]
    split = stratified_split(rows)
    assert split == stratified_split(rows)
    assert sorted(split["train"] + split["validation"]) == list(range(60))
    validation_labels = [rows[i]["label"] for i in split["validation"]]
    assert validation_labels.count("a") == 10 and validation_labels.count("b") == 2


def test_every_label_with_two_rows_gets_a_validation_row():
    rows = [{"text": f"t{n}", "label": label} for n, label in enumerate("aabbbccccc")]
    split = stratified_split(rows)
    assert {rows[i]["label"] for i in split["validation"]} == {"a", "b", "c"}
    assert {rows[i]["label"] for i in split["train"]} == {"a", "b", "c"}


def test_paraphrase_groups_are_never_split_across_train_and_validation():
    rows = generate_pairs("northbank", groups=20, seed=2)
    split = stratified_split(rows)
    train_groups = {rows[i]["group"] for i in split["train"]}
    validation_groups = {rows[i]["group"] for i in split["validation"]}
    assert train_groups.isdisjoint(validation_groups)
    assert len(validation_groups) == 4


@pytest.mark.django_db
def test_create_dataset_stores_the_split_and_the_columns(tenant):
    content = to_csv(generate_tickets("zoomride", rows=100, seed=0))
    dataset = create_dataset(tenant=tenant, name="t.csv", content=content, actor="t")
    assert len(dataset.split["train"]) + len(dataset.split["validation"]) == 100
    assert 15 <= len(dataset.split["validation"]) <= 25
    assert dataset.validation_report["columns"] == ["text", "label"]
    pairs = create_dataset(
        tenant=tenant,
        name="p.jsonl",
        content=to_jsonl(generate_pairs("northbank", groups=10)),
        actor="t",
    )
    assert pairs.format == "jsonl"
    assert pairs.validation_report["columns"] == ["text", "label", "group"]
    assert pairs.validation_report["groups"] == 10


@pytest.mark.django_db
def test_invalid_dataset_lists_several_problems_and_stores_nothing(tenant):
    rows = balanced()
    rows[0] = ("", "refund")
    rows[1] = ("y" * (MAX_TEXT_CHARS + 5), "refund")
    with pytest.raises(InvalidDataset) as invalid:
        create_dataset(tenant=tenant, name="x.csv", content=csv_of(rows), actor="t")
    assert "row 2, field text: empty" in invalid.value.message
    assert "row 3, field text" in invalid.value.message
    assert not Dataset.objects.exists()


def test_jsonl_rows_are_checked_like_csv():
    lines = [json.dumps({"text": t, "label": label}) for t, label in balanced()]
    lines.append(json.dumps({"text": "", "label": "refund"}))
    assert problems(("\n".join(lines) + "\n").encode(), "jsonl") == ["row 11, field text: empty."]
