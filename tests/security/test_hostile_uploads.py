"""Hostile dataset uploads through the API: each is refused with a 4xx that names the row and
field (or the file), and leaves nothing behind: no Dataset row, no stored file, no event."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from deployments.models import Event
from models_registry import dataset_files as datasets
from models_registry.models import Dataset

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"


def rows_csv(
    rows: list[tuple[str, str]], header: str = "text,label", quoting: int = csv.QUOTE_MINIMAL
) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=quoting)
    writer.writerow(header.split(","))
    writer.writerows(rows)
    return buffer.getvalue().encode()


def balanced(per_label: int = 5) -> list[tuple[str, str]]:
    return [
        (f"{label} ticket {n}", label) for label in ("refund", "late") for n in range(per_label)
    ]


def upload(client, tenant, content: bytes, filename: str = "tickets.csv", **extra):
    file = SimpleUploadedFile(filename, content, content_type="application/octet-stream")
    return client.post(
        f"/api/v1/tenants/{tenant.slug}/datasets/", {"file": file, **extra}, format="multipart"
    )


def stored_files(store) -> list:
    return [p for p in store.rglob("*") if p.is_file()] if store.exists() else []


def assert_refused(response, store, *, status: int = 400, mentions: tuple[str, ...] = ()):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    for text in mentions:
        assert text in error["message"], error["message"]
    assert not Dataset.objects.exists()
    assert not Event.objects.filter(kind="dataset.uploaded").exists()
    assert stored_files(store) == []


@pytest.mark.parametrize(
    ("content", "filename", "mentions"),
    [
        (PNG, "tickets.csv", ("row 3", "NUL")),
        (PNG[:8] + b"text", "photo.png", ("row 1", "UTF-8")),
        (rows_csv(balanced()) + b"bad\x00row,refund\n", "tickets.csv", ("row 12", "NUL")),
        ("text,label\n".encode("utf-16"), "tickets.csv", ("UTF-16",)),
        ("text,label\nhello,refund\n".encode("utf-16-le"), "tickets.csv", ("NUL",)),
        (rows_csv(balanced()) + "caf\u00e9 late,late\n".encode("latin-1"), "t.csv", ("row 12",)),
        (b"", "tickets.csv", ("file", "empty")),
        (b"text,label\n", "tickets.csv", ("no rows",)),
        (b"{}\n", "tickets.jsonl", ("row 1, field text: missing",)),
        (rows_csv(balanced(), header="body,intent"), "tickets.csv", ("missing column",)),
        (rows_csv([("x" * 5000, "refund")] + balanced()), "t.csv", ("row 2, field text",)),
        (rows_csv([("ok", "l" * 500)] + balanced()), "t.csv", ("row 2, field label",)),
        (b"text,label\n" + b"y" * 200_000 + b",refund\n", "t.csv", ("row 2", "malformed")),
        (b"x" * 200_000 + b",label\nhi,refund\n", "t.csv", ("row 1", "malformed")),
        (b'{"text": "a\\u0000b", "label": "refund"}\n', "t.jsonl", ("row 1, field text", "NUL")),
        (b'{"text": "hi", "label": "re\\u0000f"}\n', "t.jsonl", ("row 1, field label", "NUL")),
        (b"[" * 100_000 + b"\n", "t.jsonl", ("row 1", "nested too deeply")),
        (b'{"text": ' + b"9" * 5000 + b', "label": "x"}\n', "t.jsonl", ("row 1", "not valid")),
        (b'{"text": {"a": 1}, "label": "x"}\n', "t.jsonl", ("row 1, field text",)),
    ],
    ids=[
        "png-bytes",
        "png-header-no-nul",
        "nul-in-a-row",
        "utf-16-with-bom",
        "utf-16-without-bom",
        "latin-1",
        "empty",
        "header-only",
        "jsonl-empty-object",
        "wrong-columns",
        "text-too-long",
        "label-too-long",
        "field-over-csv-limit",
        "header-over-csv-limit",
        "jsonl-escaped-nul-text",
        "jsonl-escaped-nul-label",
        "jsonl-nested-brackets",
        "jsonl-5000-digit-number",
        "jsonl-object-as-text",
    ],
)
def test_hostile_files_are_400_naming_where_and_store_nothing(
    tenant_client, tenant, isolated_artifact_store, content, filename, mentions
):
    response = upload(tenant_client, tenant, content, filename)

    assert_refused(response, isolated_artifact_store, mentions=mentions)
    error = response.json()["error"]
    assert error.get("field") == "file" or "file" in error.get("fields", {})


def test_a_file_over_the_size_limit_is_413_before_it_is_read(
    tenant_client, tenant, isolated_artifact_store, monkeypatch
):
    # Larger than Django keeps in memory: the upload is spooled to a temporary file and the
    # size check reads only its length.
    content = b"text,label\n" + b"a,b\n" * (datasets.MAX_FILE_BYTES // 4 + 1)
    read = []
    original = SimpleUploadedFile.read
    monkeypatch.setattr(
        "django.core.files.uploadedfile.TemporaryUploadedFile.read",
        lambda self, *a: read.append(1) or original(self, *a),
    )

    response = upload(tenant_client, tenant, content)

    assert_refused(response, isolated_artifact_store, status=413, mentions=("MB limit",))
    assert response.json()["error"]["field"] == "file"
    assert read == []


def test_too_many_rows_are_refused_naming_the_first_row_over(
    tenant_client, tenant, isolated_artifact_store, monkeypatch
):
    monkeypatch.setattr(datasets, "MAX_ROWS", 20)
    response = upload(tenant_client, tenant, rows_csv(balanced(per_label=15)))

    assert_refused(response, isolated_artifact_store, mentions=("row 22", "more than 20 rows"))


def test_a_file_name_longer_than_a_dataset_name_is_400_not_a_database_error(
    tenant_client, tenant, isolated_artifact_store
):
    response = upload(tenant_client, tenant, rows_csv(balanced()), "t" * 300 + ".csv")

    assert_refused(response, isolated_artifact_store)
    assert "file" in response.json()["error"]["fields"]


def test_a_second_upload_under_a_taken_name_stores_no_file(
    tenant_client, tenant, isolated_artifact_store
):
    first = upload(tenant_client, tenant, rows_csv(balanced()), "tickets.csv")
    assert first.status_code == 201
    files_before = stored_files(isolated_artifact_store)

    second = upload(tenant_client, tenant, rows_csv(balanced(per_label=6)), "tickets.csv")

    assert second.status_code == 409 and second.json()["error"]["field"] == "name"
    assert Dataset.objects.count() == 1
    assert stored_files(isolated_artifact_store) == files_before


FORMULAS = ['=HYPERLINK("http://x")', "+1+1", "-2+3 stars", "@SUM(A1)", "\tTAB", "\rCR"]


def test_formula_like_cells_are_stored_verbatim_and_neutralized_on_export(
    tenant_client, tenant, isolated_artifact_store
):
    rows = [(f"{formula} ticket {n}", "refund") for n, formula in enumerate(FORMULAS)]
    rows += [(f"late ticket {n}", "late") for n in range(6)]
    content = rows_csv(rows, quoting=csv.QUOTE_ALL)  # a bare CR must be quoted in CSV

    response = upload(tenant_client, tenant, content)

    assert response.status_code == 201, response.content
    dataset = Dataset.objects.get()
    # Stored byte for byte: the model trains on what the customer wrote.
    assert stored_files(isolated_artifact_store)[0].read_bytes() == content
    parsed = datasets.parse_dataset(content, format="csv")
    texts = [row["text"] for row in parsed.rows]
    # Leading whitespace (tab, CR) is stripped by parsing, as for every cell.
    assert '=HYPERLINK("http://x") ticket 0' in texts and "@SUM(A1) ticket 3" in texts
    exported = list(csv.reader(io.StringIO(datasets.export_csv(parsed.rows))))
    cells = [cell for row in exported[1:] for cell in row]
    assert not [cell for cell in cells if cell.startswith(datasets.FORMULA_PREFIXES)]
    assert '\'=HYPERLINK("http://x") ticket 0' in cells
    assert dataset.rows == len(rows)


def test_export_neutralizes_every_formula_prefix():
    for prefix in datasets.FORMULA_PREFIXES:
        assert datasets.neutralize_formula(f"{prefix}cmd") == f"'{prefix}cmd"
    assert datasets.neutralize_formula("plain text") == "plain text"


def test_deeply_nested_json_in_a_training_request_is_400(tenant_client, tenant):
    from tests.factories import TenantModelFactory

    TenantModelFactory(tenant=tenant, name="intents")
    body = b'{"dataset": "x", "hyperparameters": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    response = tenant_client.generic(
        "POST",
        f"/api/v1/tenants/{tenant.slug}/models/intents/training-jobs/",
        body,
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "hyperparameters",
    [{"epochs\x00": 1}, {"note": "a\x00b"}, {"a": [[[[[[[[[[1]]]]]]]]]]}],
    ids=["nul-key", "nul-value", "too-deep"],
)
def test_hyperparameters_a_json_column_cannot_hold_are_400_naming_them(
    tenant_client, tenant, hyperparameters
):
    from models_registry.models import TrainingJob
    from tests.factories import DatasetFactory, TenantModelFactory

    TenantModelFactory(tenant=tenant, name="intents")
    DatasetFactory(tenant=tenant, name="tickets.csv")

    response = tenant_client.post(
        f"/api/v1/tenants/{tenant.slug}/models/intents/training-jobs/",
        {"dataset": "tickets.csv", "hyperparameters": hyperparameters},
        format="json",
    )

    assert response.status_code == 400, response.content
    assert "hyperparameters" in response.json()["error"]["fields"]
    assert not TrainingJob.objects.exists()


def test_the_proxy_refuses_nested_brackets_as_a_bad_body():
    from deployments.proxy.app import _split_binary
    from deployments.proxy.core import ProxyError

    with pytest.raises(ProxyError) as caught:
        _split_binary(b"[" * 100_000, None)

    assert caught.value.status == 400
    assert json.dumps(caught.value.field) == '"body"'
