"""Dataset uploads with repeated rows and texts under two labels, through the API: repeats are
dropped and named by row in the dataset's warnings; conflicting labels are refused or kept as the
upload (else the platform's setting) says."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from models_registry import artifacts
from models_registry.dataset_files import fold_text, parse_dataset
from models_registry.demo.tickets import generate_tickets, to_csv
from models_registry.models import Dataset

pytestmark = pytest.mark.django_db

ROWS = 5000


def upload(client, slug: str, rows: list[dict], **fields):
    return client.post(
        f"/api/v1/tenants/{slug}/datasets/",
        {"file": SimpleUploadedFile("intents.csv", to_csv(rows)), **fields},
        format="multipart",
    )


def line_of(rows: list[dict], position: int) -> int:
    """The file line the row at ``position`` (0-based) ends on, the header being line 1 (a
    ticket's text may span lines)."""
    return to_csv(rows[: position + 1]).count(b"\n")


@pytest.fixture(scope="module")
def tickets() -> list[dict]:
    return generate_tickets("zoomride", rows=ROWS, seed=3)


def with_rows_inserted(rows: list[dict], inserts: dict[int, dict]) -> list[dict]:
    """``rows`` with each of ``inserts`` placed so that it lands at its key's position."""
    out = list(rows)
    for position in sorted(inserts):
        out.insert(position, inserts[position])
    return out


def shouted(row: dict, *, label: str | None = None) -> dict:
    """The row's text as another person typed it: other case, extra spaces."""
    return {
        "text": "  " + row["text"].upper().replace(" ", "   ") + " ",
        "label": label or row["label"],
    }


def other_label(tickets: list[dict], row: dict) -> str:
    return next(t["label"] for t in tickets if t["label"] != row["label"])


def test_rows_repeating_another_row_with_its_label_are_dropped_and_named_by_row(
    tenant_client, tenant, tickets
):
    inserts = {
        17: shouted(tickets[3]),
        230: shouted(tickets[100]),
        3100: dict(tickets[2500]),
        ROWS + 3: shouted(tickets[ROWS - 1]),
    }
    rows = with_rows_inserted(tickets, inserts)
    response = upload(tenant_client, tenant.slug, rows)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["rows"] == ROWS and sum(body["labels"].values()) == ROWS
    assert body["train_rows"] + body["validation_rows"] == ROWS
    lines = [line_of(rows, position) for position in sorted(inserts)]
    assert body["warnings"] == [
        "4 rows repeat an earlier row's text with the same label and were dropped: rows "
        f"{lines[0]}, {lines[1]}, {lines[2]} and {lines[3]}."
    ]
    assert not any(
        fold_text(row["text"]) in body["warnings"][0].casefold() for row in inserts.values()
    )
    # What training reads: the stored split, over the stored file, holds each text once.
    dataset = Dataset.objects.get(pk=body["id"])
    parsed = parse_dataset(artifacts.read_bytes(dataset.storage_uri), format="csv")
    trained_on = [parsed.rows[i] for i in dataset.split["train"] + dataset.split["validation"]]
    assert len({fold_text(row["text"]) for row in trained_on}) == len(trained_on) == ROWS
    assert dataset.validation_report["dropped_rows"] == lines
    listed = tenant_client.get(f"/api/v1/tenants/{tenant.slug}/datasets/").json()["results"]
    assert listed[0]["warnings"] == body["warnings"]


def test_a_dataset_without_repeats_has_no_warnings(tenant_client, tenant, tickets):
    response = upload(tenant_client, tenant.slug, tickets[:600])
    assert response.status_code == 201, response.content
    assert response.json()["warnings"] == [] and response.json()["rows"] == 600


def test_a_text_under_two_labels_is_refused_by_default_naming_its_rows(
    tenant_client, tenant, tickets
):
    inserts = {
        40: shouted(tickets[5], label=other_label(tickets, tickets[5])),
        4000: shouted(tickets[900], label=other_label(tickets, tickets[900])),
    }
    rows = with_rows_inserted(tickets, inserts)
    response = upload(tenant_client, tenant.slug, rows)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "file"
    assert "2 texts appear under more than one label" in error["message"]
    assert f"rows {line_of(rows, 5)} and {line_of(rows, 40)}" in error["message"]
    assert f"rows {line_of(rows, 900 + 1)} and {line_of(rows, 4000)}" in error["message"]
    assert "conflicting_labels=keep" in error["message"]
    assert tickets[5]["text"] not in error["message"]
    assert tickets[5]["text"].upper() not in error["message"]
    assert not Dataset.objects.exists()


def test_an_upload_may_keep_texts_under_two_labels_and_is_warned_with_their_rows(
    tenant_client, tenant, tickets
):
    inserts = {40: shouted(tickets[5], label=other_label(tickets, tickets[5]))}
    rows = with_rows_inserted(tickets, inserts)
    response = upload(tenant_client, tenant.slug, rows, conflicting_labels="keep")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["rows"] == ROWS + 1
    assert body["warnings"] == [
        "1 text appears under more than one label: "
        f"rows {line_of(rows, 5)} and {line_of(rows, 40)}; kept as uploaded."
    ]


def test_the_platform_setting_decides_unless_the_upload_says_otherwise(
    tenant_client, tenant, tickets, settings
):
    settings.TENANTML_DATASET_CONFLICTING_LABELS = "keep"
    rows = [*tickets[:300], shouted(tickets[0], label=other_label(tickets, tickets[0]))]
    kept = upload(tenant_client, tenant.slug, rows)
    assert kept.status_code == 201, kept.content
    assert "kept as uploaded" in kept.json()["warnings"][0]

    refused = upload(tenant_client, tenant.slug, rows, name="strict", conflicting_labels="refuse")
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "file"
    assert Dataset.objects.count() == 1


def test_the_refusal_lists_a_capped_number_of_conflicting_texts(tenant_client, tenant, tickets):
    inserts = {
        1000 + 10 * n: shouted(tickets[n], label=other_label(tickets, tickets[n]))
        for n in range(14)
    }
    response = upload(tenant_client, tenant.slug, with_rows_inserted(tickets, inserts))
    message = response.json()["error"]["message"]
    assert response.status_code == 400
    assert "14 texts appear under more than one label" in message
    assert "and 4 more text(s)" in message
    assert message.count(" and ") == 10 + 1


def test_an_unknown_conflicting_labels_choice_is_a_400_naming_it_without_echoing_it(
    tenant_client, tenant, tickets
):
    response = upload(tenant_client, tenant.slug, tickets[:300], conflicting_labels="<merge>")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.get("field") == "conflicting_labels" or "conflicting_labels" in error["fields"]
    assert "<merge>" not in response.content.decode()
    assert not Dataset.objects.exists()
