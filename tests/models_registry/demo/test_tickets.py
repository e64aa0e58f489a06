"""Demo ticket generation: determinism, balance, uniqueness, encodings and paraphrase groups."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import time
from collections import Counter, defaultdict

import pytest

from models_registry.dataset_files import fold_text, parse_dataset
from models_registry.demo import tickets as demo_data
from models_registry.demo.tickets import (
    DEMO_TENANTS,
    MAX_ROWS,
    OUT_OF_SCOPE_LABEL,
    VERTICALS,
    generate_out_of_scope,
    generate_pairs,
    generate_tickets,
    labels_for,
    to_csv,
    to_jsonl,
)

SLUGS = sorted(DEMO_TENANTS)
PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)\}")


def test_demo_tenants_name_one_known_vertical_each():
    assert len(DEMO_TENANTS) == 3
    assert sorted(tenant["vertical"] for tenant in DEMO_TENANTS.values()) == sorted(VERTICALS)
    for slug, tenant in DEMO_TENANTS.items():
        assert re.fullmatch(r"[a-z0-9-]+", slug)
        assert tenant["name"].strip()


@pytest.mark.parametrize("slug", SLUGS)
def test_slug_and_vertical_name_give_the_same_data(slug):
    vertical = DEMO_TENANTS[slug]["vertical"]
    assert labels_for(slug) == labels_for(vertical)
    assert generate_tickets(slug, rows=50, seed=3) == generate_tickets(vertical, rows=50, seed=3)


@pytest.mark.parametrize("vertical", VERTICALS)
def test_same_seed_same_output_and_different_seed_different_output(vertical):
    first = generate_tickets(vertical, rows=300, seed=11)
    assert first == generate_tickets(vertical, rows=300, seed=11)
    assert to_csv(first) == to_csv(generate_tickets(vertical, rows=300, seed=11))
    assert first != generate_tickets(vertical, rows=300, seed=12)
    assert generate_pairs(vertical, groups=20, seed=4) == generate_pairs(
        vertical, groups=20, seed=4
    )
    assert generate_pairs(vertical, groups=20, seed=4) != generate_pairs(
        vertical, groups=20, seed=5
    )


@pytest.mark.parametrize("vertical", VERTICALS)
@pytest.mark.parametrize("rows", [300, 301, 1000])
def test_labels_are_balanced_and_cover_every_intent(vertical, rows):
    tickets = generate_tickets(vertical, rows=rows, seed=0)
    counts = Counter(row["label"] for row in tickets)
    assert len(tickets) == rows
    assert set(counts) == set(labels_for(vertical))
    assert len(counts) >= 8
    assert max(counts.values()) - min(counts.values()) <= 1
    assert all(set(row) == {"text", "label"} for row in tickets)


@pytest.mark.parametrize("vertical", VERTICALS)
def test_texts_are_unique_non_empty_bounded_and_trimmed(vertical):
    tickets = generate_tickets(vertical, rows=2000, seed=1)
    texts = [row["text"] for row in tickets]
    # Unique as uploads compare texts, so no demo ticket is dropped as a repeat.
    assert len({fold_text(text) for text in texts}) == len(texts)
    for text in texts:
        assert text and text == text.strip()
        assert len(text) <= 1000
        assert len(text.split()) >= 4


def test_zero_rows_is_empty_and_negative_rows_is_refused():
    assert generate_tickets("zoomride", rows=0) == []
    with pytest.raises(ValueError, match="rows"):
        generate_tickets("zoomride", rows=-1)


def test_label_sets_are_snake_case_and_disjoint_across_verticals():
    seen: dict[str, str] = {}
    for vertical in VERTICALS:
        labels = labels_for(vertical)
        assert len(labels) == len(set(labels)) >= 8
        for label in labels:
            assert re.fullmatch(r"[a-z]+(_[a-z]+)*", label)
            assert label not in seen, f"{label} is in both {seen.get(label)} and {vertical}"
            seen[label] = vertical


@pytest.mark.parametrize("vertical", VERTICALS)
def test_wording_is_lexically_diverse_within_each_label(vertical):
    by_label: dict[str, list[str]] = defaultdict(list)
    for row in generate_tickets(vertical, rows=800, seed=2):
        by_label[row["label"]].append(re.sub(r"\d", "", row["text"].lower()))
    for label, texts in by_label.items():
        assert len(set(texts)) / len(texts) >= 0.7, label


@pytest.mark.parametrize("vertical", VERTICALS)
def test_wording_varies_in_length_register_and_shared_vocabulary(vertical):
    texts_by_label: dict[str, list[str]] = defaultdict(list)
    for row in generate_tickets(vertical, rows=1000, seed=3):
        texts_by_label[row["label"]].append(row["text"])
    texts = [text for group in texts_by_label.values() for text in group]
    lengths = [len(text.split()) for text in texts]
    assert min(lengths) <= 6 and max(lengths) >= 25
    assert any(text == text.lower() for text in texts)  # all-lowercase tickets
    assert any("\n" in text for text in texts)  # sign-offs on their own line
    assert any(text.lower().startswith(("hi", "hello", "hey", "dear", "good")) for text in texts)
    # "refund" turns up in more than one intent, in different contexts.
    with_refund = [
        label
        for label, group in texts_by_label.items()
        if any("refund" in t.lower() for t in group)
    ]
    assert len(with_refund) >= 2


@pytest.mark.parametrize("vertical", VERTICALS)
def test_every_template_renders_and_names_its_intents_key_slot(vertical):
    spec = demo_data._resolve(vertical)
    slots = spec.sample(random.Random(0))
    for label, intent in spec.intents.items():
        assert len(set(intent.templates)) >= 10, label
        for template in intent.templates:
            assert intent.key in PLACEHOLDER.findall(template), (label, template)
            assert set(PLACEHOLDER.findall(template)) <= set(slots), (label, template)


def _csv_rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"), newline="")))


def test_csv_round_trips_including_commas_quotes_and_newlines():
    tickets = generate_tickets("ride-sharing", rows=1000, seed=0)
    texts = [row["text"] for row in tickets]
    assert any("," in t for t in texts) and any('"' in t for t in texts)
    assert any("\n" in t for t in texts)
    tricky = {"text": 'She said "no", then, well, left\nagain', "label": "driver_complaint"}
    rows = [*tickets, tricky]
    content = to_csv(rows)
    assert content.decode("utf-8").splitlines()[0] == "text,label"
    assert _csv_rows(content) == rows


def test_csv_of_pairs_has_group_column():
    pairs = generate_pairs("threadline", groups=30, per_group=3, seed=0)
    content = to_csv(pairs)
    assert content.decode("utf-8").splitlines()[0] == "text,label,group"
    assert _csv_rows(content) == pairs


@pytest.mark.parametrize(
    "make",
    [
        lambda: generate_tickets("northbank", rows=500, seed=0),
        lambda: generate_pairs("northbank", groups=100, seed=0),
    ],
)
def test_jsonl_round_trips_one_object_per_line(make):
    rows = make()
    lines = to_jsonl(rows).decode("utf-8").splitlines()
    assert len(lines) == len(rows)
    assert [json.loads(line) for line in lines] == rows
    assert list(json.loads(lines[0])) == list(rows[0])  # key order text, label[, group]


def test_empty_rows_encode_to_header_only():
    assert to_csv([]) == b"text,label\n"
    assert to_jsonl([]) == b""


@pytest.mark.parametrize("vertical", VERTICALS)
def test_output_is_accepted_by_the_dataset_parser(vertical):
    tickets = generate_tickets(vertical, rows=400, seed=0)
    pairs = generate_pairs(vertical, groups=50, seed=0)
    for rows in (tickets, pairs):
        for fmt, encode in (("csv", to_csv), ("jsonl", to_jsonl)):
            parsed = parse_dataset(encode(rows), format=fmt)
            assert parsed.problems == []
            assert parsed.rows == rows


@pytest.mark.parametrize("vertical", VERTICALS)
@pytest.mark.parametrize("per_group", [2, 4])
def test_pairs_come_in_groups_of_per_group_with_one_label(vertical, per_group):
    pairs = generate_pairs(vertical, groups=80, per_group=per_group, seed=0)
    assert len(pairs) == 80 * per_group
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in pairs:
        assert set(row) == {"text", "label", "group"}
        groups[row["group"]].append(row)
    assert sorted(groups) == [f"g{n:04d}" for n in range(1, 81)]
    for members in groups.values():
        assert len(members) == per_group
        assert len({row["label"] for row in members}) == 1
        assert len({row["text"] for row in members}) == per_group
    texts = [row["text"] for row in pairs]
    assert len(set(texts)) == len(texts)
    per_label = Counter(members[0]["label"] for members in groups.values())
    assert set(per_label) == set(labels_for(vertical))
    assert max(per_label.values()) - min(per_label.values()) <= 1


@pytest.mark.parametrize("vertical", VERTICALS)
def test_paraphrases_in_a_group_share_slot_values(vertical):
    spec = demo_data._resolve(vertical)
    made = demo_data._pair_groups(spec, groups=60, per_group=3, seed=7)
    flattened = [
        {"text": text, "label": label, "group": f"g{number:04d}"}
        for number, (label, _, texts) in enumerate(made, 1)
        for text in texts
    ]
    assert flattened == generate_pairs(vertical, groups=60, per_group=3, seed=7)
    key_values = set()
    for label, slots, texts in made:
        value = slots[spec.intents[label].key]
        key_values.add(value)
        for text in texts:
            assert value.lower() in text.lower(), (label, value, text)
    assert len(key_values) > 30  # different groups are different concrete requests


def test_pairs_reject_bad_group_sizes():
    with pytest.raises(ValueError, match="per_group"):
        generate_pairs("zoomride", groups=5, per_group=1)
    with pytest.raises(ValueError, match="per_group"):
        generate_pairs("zoomride", groups=5, per_group=50)


@pytest.mark.parametrize(
    "call",
    [
        lambda: generate_tickets("hoverboards", rows=10),
        lambda: generate_pairs("hoverboards", groups=10),
        lambda: labels_for("hoverboards"),
    ],
)
def test_unknown_vertical_names_the_choices(call):
    with pytest.raises(ValueError) as excinfo:
        call()
    message = str(excinfo.value)
    assert "hoverboards" in message
    for choice in (*VERTICALS, *DEMO_TENANTS):
        assert choice in message


def test_more_rows_than_can_be_unique_is_refused():
    with pytest.raises(ValueError, match="uniquely"):
        generate_tickets("zoomride", rows=MAX_ROWS + 1)
    with pytest.raises(ValueError, match="uniquely"):
        generate_pairs("zoomride", groups=MAX_ROWS, per_group=2)


def test_running_out_of_unique_wordings_is_refused(monkeypatch):
    monkeypatch.setattr(demo_data, "_render_ticket", lambda spec, label, rng: f"Help with {label}")
    with pytest.raises(ValueError, match="uniquely"):
        generate_tickets("northbank", rows=20)
    monkeypatch.setattr(demo_data, "_render", lambda template, slots, rng: "same words every time")
    with pytest.raises(ValueError, match="uniquely"):
        generate_pairs("northbank", groups=3)


def test_generation_is_fast():
    started = time.perf_counter()
    for vertical in VERTICALS:
        generate_tickets(vertical, rows=1000, seed=0)
    assert time.perf_counter() - started < 3.0  # ~0.05 s each locally; generous for slow CI


# --- Out-of-scope messages ---


def test_out_of_scope_rows_leave_a_tenants_tickets_as_they_were():
    plain = generate_tickets("zoomride", rows=120, seed=4)
    mixed = generate_tickets("zoomride", rows=120, seed=4, out_of_scope_rows=30)

    assert [row for row in mixed if row["label"] != OUT_OF_SCOPE_LABEL] == plain
    assert sum(row["label"] == OUT_OF_SCOPE_LABEL for row in mixed) == 30
    positions = [i for i, row in enumerate(mixed) if row["label"] == OUT_OF_SCOPE_LABEL]
    assert positions[0] < len(mixed) - 30  # mixed in, not appended
    assert len({fold_text(row["text"]) for row in mixed}) == len(mixed)


@pytest.mark.parametrize("vertical", ["ride-sharing", "apparel-retail", "banking"])
def test_out_of_scope_messages_are_unique_deterministic_and_name_another_world(vertical):
    first = generate_out_of_scope(vertical, rows=150, seed=2)

    assert first == generate_out_of_scope(vertical, rows=150, seed=2)
    assert {row["label"] for row in first} == {OUT_OF_SCOPE_LABEL}
    assert len({fold_text(row["text"]) for row in first}) == 150
    assert all(0 < len(row["text"]) <= 1000 for row in first)


def test_held_out_out_of_scope_messages_are_other_messages_than_the_training_pool():
    training = generate_out_of_scope("banking", rows=300, seed=3)
    held_out = generate_out_of_scope("banking", rows=300, seed=3, held_out=True)

    assert not {fold_text(r["text"]) for r in training} & {fold_text(r["text"]) for r in held_out}
    # Requests only the held-out pool makes (the test set's unseen wordings).
    assert any("translate" in row["text"].lower() for row in held_out)
    assert not any("translate" in row["text"].lower() for row in training)
