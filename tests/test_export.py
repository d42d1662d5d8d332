"""Gold export: rows, provenance, round-trip through the importer, formula injection, streaming
memory, access, and background jobs."""
import csv
import io
import json
import os
import time
import tracemalloc
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from config.celery import app as celery_app
from labeling import actions, review
from labeling.export import (
    ExportError,
    ExportJob,
    ExportSpec,
    count_gold,
    create_job,
    prune_old_jobs,
    records,
    run_job,
    write_export,
)
from labeling.importer import import_items
from labeling.models import Annotation, GoldLabel, Item, Project
from labeling.tasks_export import run_export_job
from tests import services
from tests.test_celery_worker import queue, worker  # noqa: F401  (fixtures: a real worker on Redis)

# Ordinary text a round trip must keep exactly: commas, quotes, line breaks, non-ASCII, a quote
# inside, a leading apostrophe that is not followed by a formula character.
ORDINARY = [
    ("a-1", "Transformers, explained", 'A "gentle" intro to attention,\nwith code.', "natural-language-processing"),
    ("a-2", "YOLO v8 — détection d'objets", "Real-time object detection; 日本語も。", "computer-vision"),
    ("a-3", "Kubeflow pipelines", "Deploy, monitor and retrain models", "mlops"),
    ("a-4", "'Quoted' title", "Tabs\tinside and a trailing comma,", "other"),
]


def _csv_bytes(rows, header=("id", "title", "description", "tag")) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def _export(project, fmt="csv", split="all", labels_only=False) -> bytes:
    out = io.BytesIO()
    write_export(ExportSpec(project, fmt, split, labels_only), out)
    return out.getvalue()


def _csv_rows(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def _jsonl_rows(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def _gold_set(project) -> set:
    """(id, title, text, label names) of every gold item: what a round trip must preserve."""
    names = dict(project.categories.values_list("id", "name"))
    return {
        (item.external_id or str(item.pk), item.title, item.text,
         tuple(sorted(names[c] for c in item.gold.categories)))
        for item in Item.objects.filter(project=project, status=Item.Status.GOLD).select_related("gold")
    }


def _bulk_gold(project, count, split="train", title=None, start=0):
    """Gold items written straight to the tables (fast enough for 100k rows)."""
    categories = list(project.categories.values_list("id", flat=True))
    items = Item.objects.bulk_create(
        [
            Item(
                project=project, external_id=f"bulk-{n}", title=title(n) if title else f"Item {n}",
                text=f"Some thirty words of text about item {n}, " + "lorem ipsum dolor sit amet " * 5,
                content_hash=f"{n:032x}", rank=n, open_slots=0, status=Item.Status.GOLD, split=split,
            )
            for n in range(start, start + count)
        ],
        batch_size=5000,
    )
    GoldLabel.objects.bulk_create(
        [
            GoldLabel(item=item, project=project, categories=[categories[n % len(categories)]], source="import")
            for n, item in enumerate(items)
        ],
        batch_size=5000,
    )
    return items


# --- rows and counts --------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_exports_one_row_per_gold_item_of_the_split(project):
    _bulk_gold(project, 7, split="train")
    _bulk_gold(project, 3, split="holdout", start=100)
    _bulk_gold(project, 2, split="", start=200)  # gold, not split yet: only in "all"
    import_items(project, io.BytesIO(_csv_bytes([("open-1", "Unlabeled", "no tag", "")])), "open.csv")

    expected = {"all": 12, "train": 7, "holdout": 3}
    for split, count in expected.items():
        assert count_gold(project, split) == count
        for labels_only in (False, True):
            assert len(_csv_rows(_export(project, "csv", split, labels_only))) == count
            assert len(_jsonl_rows(_export(project, "jsonl", split, labels_only))) == count


@pytest.mark.django_db
def test_it_writes_only_the_header_when_there_is_no_gold(project):
    assert _export(project, "csv", labels_only=True) == b"id,title,description,tag\r\n"
    assert _export(project, "jsonl") == b""


@pytest.mark.django_db
def test_it_refuses_an_unknown_format_or_split(project):
    with pytest.raises(ExportError, match="Unknown format 'xml'"):
        ExportSpec(project, "xml")
    with pytest.raises(ExportError, match="Unknown split 'test'"):
        ExportSpec(project, "csv", "test")


@pytest.mark.django_db
def test_it_writes_the_same_rows_in_csv_jsonl_and_records(project, member):
    _gold_via_actions(project, member)
    from_jsonl = _jsonl_rows(_export(project, "jsonl"))
    from_records = [record for chunk in records(ExportSpec(project, "jsonl")) for record in chunk]
    assert from_jsonl == from_records
    from_csv = _csv_rows(_export(project, "csv"))
    assert [row["id"] for row in from_csv] == [record["id"] for record in from_jsonl]
    assert [row["text"] for row in from_csv] == [record["text"] for record in from_jsonl]
    assert [row["labels"] for row in from_csv] == [";".join(record["labels"]) for record in from_jsonl]
    assert [row["decided_at"] for row in from_csv] == [record["decided_at"] for record in from_jsonl]


# --- provenance -------------------------------------------------------------------------------


def _gold_via_actions(project, member):
    """Two annotators (k=2): one item by consensus, one corrected by a reviewer after they disagree,
    one rejected by a reviewer and then labeled again (only the new round counts)."""
    Project.objects.filter(pk=project.pk).update(
        annotations_per_item=2, honeypot_percent=0, review_policy="disagreements"
    )
    project.refresh_from_db()
    import_items(project, io.BytesIO(_csv_bytes([
        ("agree", "Agreed item", "both say mlops", ""),
        ("disagree", "Disputed item", "one says nlp, one says cv", ""),
        ("reject", "Rejected item", "first round thrown away", ""),
    ])), "items.csv")
    ann, bob, rev = member("annotator", "ann"), member("annotator", "bob"), member("reviewer", "rita")
    ann.refresh_from_db(), bob.refresh_from_db()
    ids = {c.name: c.id for c in project.categories.all()}
    item = {i.external_id: i.id for i in Item.objects.filter(project=project)}
    choices = {
        "ann": {"agree": "mlops", "disagree": "natural-language-processing", "reject": "other"},
        "bob": {"agree": "mlops", "disagree": "computer-vision", "reject": "mlops"},
    }
    for membership in (ann, bob):
        for external_id in ("agree", "disagree", "reject"):
            lease = actions.claim_next_item(membership)
            assert lease.item_id == item[external_id]
            shown = membership is ann  # ann saw model 7's suggestion, bob labeled blind
            actions.submit_annotation(
                membership, lease.item_id, [ids[choices[membership.user.username][external_id]]],
                uuid.uuid4().hex, duration_ms=1200, suggestion_shown=shown,
                model_version_id=7 if shown else None, suggested_category_id=ids["mlops"] if shown else None,
            )
    rev.project.refresh_from_db()
    assert review.claim_review(rev, "disagreement").pk == item["disagree"]
    review.decide_review(
        rev, item["disagree"], "correct", "r1", category_ids=[ids["computer-vision"]], note="=cv, not nlp"
    )
    assert review.claim_review(rev, "disagreement").pk == item["reject"]
    review.decide_review(rev, item["reject"], "reject", "r2", note="guideline changed")
    ann.refresh_from_db(), bob.refresh_from_db()
    for membership in (ann, bob):
        lease = actions.claim_next_item(membership)
        assert lease.item_id == item["reject"]
        actions.submit_annotation(membership, lease.item_id, [ids["other"]], uuid.uuid4().hex)
    # A honeypot check on a gold item says nothing about how that item was decided.
    Annotation.objects.create(
        item_id=item["agree"], annotator=member("annotator", "hank").user, project=project,
        categories=[ids["other"]], client_request_id="hp", is_honeypot=True,
    )
    return item


@pytest.mark.django_db
def test_it_records_how_each_label_was_decided(project, member):
    _gold_via_actions(project, member)
    rows = {row["id"]: row for row in _jsonl_rows(_export(project, "jsonl"))}
    assert set(rows) == {"agree", "disagree", "reject"}

    agreed = rows["agree"]
    assert (agreed["label"], agreed["labels"], agreed["source"]) == ("mlops", ["mlops"], "consensus")
    assert agreed["review"] is None
    assert [(a["annotator"], a["labels"]) for a in agreed["annotations"]] == [("ann", ["mlops"]), ("bob", ["mlops"])]
    assert agreed["annotations"][0] | {"created_at": None} == {
        "annotator": "ann", "labels": ["mlops"], "suggestion_shown": True, "model_version": 7,
        "suggested_label": "mlops", "duration_ms": 1200, "guidelines_version": 1, "created_at": None,
    }
    assert agreed["suggestion_shown"] is True and agreed["model_versions"] == [7]

    disputed = rows["disagree"]
    assert (disputed["label"], disputed["source"], disputed["decided_by"]) == ("computer-vision", "review", "rita")
    assert disputed["review"]["reviewer"] == "rita"
    assert disputed["review"]["decision"] == "correct"
    assert disputed["review"]["note"] == "=cv, not nlp"
    assert [a["labels"] for a in disputed["annotations"]] == [["natural-language-processing"], ["computer-vision"]]

    redone = rows["reject"]
    assert redone["source"] == "consensus" and redone["label"] == "other"
    # Only the current round: the rejected first round stays out, as does any honeypot check.
    assert [(a["annotator"], a["labels"]) for a in redone["annotations"]] == [("ann", ["other"]), ("bob", ["other"])]
    assert redone["suggestion_shown"] is False and redone["model_versions"] == []

    by_csv = {row["id"]: row for row in _csv_rows(_export(project, "csv"))}
    assert by_csv["agree"]["annotators"] == "ann;bob"
    assert by_csv["agree"]["annotator_labels"] == "mlops;mlops"
    assert by_csv["agree"]["suggestion_shown"] == "true" and by_csv["agree"]["model_versions"] == "7"
    assert by_csv["disagree"]["reviewer"] == "rita"
    assert by_csv["disagree"]["review_decision"] == "correct"
    assert by_csv["disagree"]["review_note"] == "'=cv, not nlp"  # neutralised in CSV only
    assert by_csv["disagree"]["annotator_labels"] == "natural-language-processing;computer-vision"


@pytest.mark.django_db
def test_it_fetches_provenance_per_chunk_not_per_row(project, member, settings):
    _gold_via_actions(project, member)
    _bulk_gold(project, 40, start=1000)
    settings.LABELLOOP = {**settings.LABELLOOP, "EXPORT_CHUNK_ROWS": 10}
    with CaptureQueriesContext(connection) as few:
        _export(project, "jsonl")
    _bulk_gold(project, 60, start=2000)
    with CaptureQueriesContext(connection) as more:
        rows = _jsonl_rows(_export(project, "jsonl"))
    assert len(rows) == 103
    # 6 more chunks of 10: at most an annotation query and a user query each, never one per row.
    assert len(more) - len(few) <= 2 * 6
    assert len(more) < 40


# --- round trip -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("labels_only", [True, False])
def test_it_round_trips_through_the_importer_into_a_new_project(project, fmt, labels_only):
    no_id = ("", "No id here", "gets the item's own id", "mlops")
    import_items(project, io.BytesIO(_csv_bytes([*ORDINARY, no_id])), "in.csv")
    unlabeled = ("u-1", "Unlabeled", "not gold, not exported", "")
    import_items(project, io.BytesIO(_csv_bytes([unlabeled])), "more.csv")
    before = _gold_set(project)
    assert len(before) == 5

    copy = actions.create_project("Copy", f"copy-{fmt}-{labels_only}")
    result = import_items(copy, io.BytesIO(_export(project, fmt, labels_only=labels_only)), f"gold.{fmt}")

    assert (result.created, result.gold_labels) == (5, 5)
    assert _gold_set(copy) == before


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_it_round_trips_a_multi_label_project(fmt):
    source = actions.create_project("Multi", "multi", mode="multi")
    import_items(source, io.BytesIO(_csv_bytes([
        ("m-1", "Both", "vision and language", "computer-vision;natural-language-processing"),
        ("m-2", "One", "just ops", "mlops"),
    ])), "multi.csv")
    for labels_only in (True, False):
        copy = actions.create_project("Copy", f"copy-{labels_only}", mode="multi")
        import_items(copy, io.BytesIO(_export(source, fmt, labels_only=labels_only)), f"gold.{fmt}")
        assert _gold_set(copy) == _gold_set(source)
    full = _jsonl_rows(_export(source, "jsonl"))
    assert full[0]["labels"] == ["natural-language-processing", "computer-vision"] and "label" not in full[0]
    assert "label" not in _csv_rows(_export(source, "csv"))[0]


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_it_round_trips_none_of_these_as_an_explicit_empty_list(fmt):
    source = actions.create_project("Multi", "none-src", mode="multi", allow_none_of_these=True)
    import_items(source, io.BytesIO(_csv_bytes([
        ("n-1", "Nothing here", "a recipe for bread", "[]"),  # "none of these", the gold answer
        ("n-2", "One", "just ops", "mlops"),
        ("n-3", "Unlabeled", "no answer yet", ""),
    ])), "none.csv")
    assert GoldLabel.objects.get(project=source, item__external_id="n-1").categories == []
    assert Item.objects.get(project=source, external_id="n-3").status == Item.Status.OPEN
    if fmt == "csv":
        assert [row["labels"] for row in _csv_rows(_export(source, "csv"))] == ["[]", "mlops"]
    for labels_only in (True, False):
        copy = actions.create_project("Copy", f"none-copy-{labels_only}", mode="multi", allow_none_of_these=True)
        import_items(copy, io.BytesIO(_export(source, fmt, labels_only=labels_only)), f"gold.{fmt}")
        assert _gold_set(copy) == _gold_set(source) == {
            ("n-1", "Nothing here", "a recipe for bread", ()), ("n-2", "One", "just ops", ("mlops",)),
        }


@pytest.mark.django_db
def test_an_empty_list_is_an_unlabeled_item_where_none_of_these_is_not_an_answer():
    project = actions.create_project("Multi", "no-none", mode="multi")
    jsonl = b'{"id": "e-1", "title": "Empty", "text": "other tools write [] for unlabeled", "labels": []}\n'

    result = import_items(project, io.BytesIO(jsonl), "items.jsonl")

    assert (result.created, result.gold_labels) == (1, 0)
    assert Item.objects.get(project=project, external_id="e-1").status == Item.Status.OPEN


# --- formula injection ------------------------------------------------------------------------

DANGEROUS = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+2", "-2+3", "@SUM(A1:A2)", "\t=1+1", "\r=1+1"]


@pytest.mark.django_db
@pytest.mark.parametrize("value", DANGEROUS)
def test_it_neutralises_cells_a_spreadsheet_would_run(project, value):
    _bulk_gold(project, 1, title=lambda n: value)
    Item.objects.filter(project=project).update(text=value, external_id=value)
    for labels_only in (True, False):
        row = _csv_rows(_export(project, "csv", labels_only=labels_only))[0]
        text_column = "description" if labels_only else "text"
        assert (row["id"], row["title"], row[text_column]) == ("'" + value,) * 3
    # JSON Lines is not for spreadsheets: it keeps the text exactly.
    record = _jsonl_rows(_export(project, "jsonl"))[0]
    assert (record["id"], record["title"], record["text"]) == (value,) * 3


@pytest.mark.django_db
def test_it_neutralises_category_and_user_names_too(member):
    project = actions.create_project("Odd names", "odd", categories=["=cmd", "-negative", "plain"])
    import_items(project, io.BytesIO(_csv_bytes([("x", "Title", "text", "=cmd")])), "odd.csv")
    row = _csv_rows(_export(project, "csv"))[0]
    assert (row["labels"], row["label"]) == ("'=cmd", "'=cmd")
    assert _csv_rows(_export(project, "csv", labels_only=True))[0]["tag"] == "'=cmd"


@pytest.mark.django_db
def test_it_leaves_ordinary_text_alone_but_changes_leading_minus_in_csv(project):
    """The documented trade-off: text that begins with '-' (or '+', '=', '@') comes back from a
    CSV re-import with a leading quote; JSON Lines round-trips it exactly."""
    leading_minus = ("d-1", "-based methods", "a - b, - c", "other")
    import_items(project, io.BytesIO(_csv_bytes([*ORDINARY, leading_minus])), "in.csv")
    rows = {row["id"]: row for row in _csv_rows(_export(project, "csv", labels_only=True))}
    for external_id, title, text, _tag in ORDINARY:
        assert (rows[external_id]["title"], rows[external_id]["description"]) == (title, text)
    assert rows["d-1"]["title"] == "'-based methods"
    assert rows["d-1"]["description"] == "a - b, - c"  # only a leading character counts

    via_csv = actions.create_project("Via CSV", "via-csv")
    import_items(via_csv, io.BytesIO(_export(project, "csv", labels_only=True)), "gold.csv")
    assert Item.objects.get(project=via_csv, external_id="d-1").title == "'-based methods"
    via_jsonl = actions.create_project("Via JSONL", "via-jsonl")
    import_items(via_jsonl, io.BytesIO(_export(project, "jsonl", labels_only=True)), "gold.jsonl")
    assert Item.objects.get(project=via_jsonl, external_id="d-1").title == "-based methods"


# --- streaming, memory ------------------------------------------------------------------------


class _CountingSink:
    """A binary file that keeps nothing: what the export writes is counted and dropped."""

    def __init__(self):
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)


def _peak_memory(spec: ExportSpec) -> tuple[int, int, int]:
    """(rows, bytes written, peak bytes allocated) for an export to a sink that keeps nothing."""
    sink = _CountingSink()
    tracemalloc.start()
    try:
        rows = write_export(spec, sink)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return rows, sink.bytes, peak


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_it_streams_100k_rows_in_bounded_memory(project, fmt, settings):
    settings.LABELLOOP = {**settings.LABELLOOP, "EXPORT_CHUNK_ROWS": 5000}
    _bulk_gold(project, 80_000, split="train")
    _bulk_gold(project, 20_000, split="holdout", start=80_000)

    rows, written, peak = _peak_memory(ExportSpec(project, fmt, "all"))
    small_rows, _small_written, small_peak = _peak_memory(ExportSpec(project, fmt, "holdout"))

    assert (rows, small_rows) == (100_000, 20_000)
    # Holding every row would take more than the ~30 MB of output; a chunk takes a few MB ...
    assert written > 25_000_000
    assert peak < written / 2, f"peak {peak:,} bytes for {written:,} bytes written"
    # ... and five times the rows need no more memory than a fifth of them.
    assert peak < 1.5 * small_peak, f"peak {peak:,} bytes for 100k rows, {small_peak:,} for 20k"


# --- access -----------------------------------------------------------------------------------


def _client_for(client, membership):
    client.force_login(membership.user)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("role, page_status", [("admin", 200), ("reviewer", 403), ("annotator", 403)])
def test_it_lets_only_admins_export(client, project, member, role, page_status):
    _bulk_gold(project, 3)
    client = _client_for(client, member(role))
    assert client.get(reverse("export", args=[project.slug])).status_code == page_status
    response = client.post(reverse("export", args=[project.slug]), {"format": "csv", "split": "all"})
    assert response.status_code == page_status
    api = client.get(reverse("api-export", args=[project.slug]), {"format": "jsonl"})
    assert api.status_code == page_status
    if role == "admin":
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        assert response["Content-Disposition"].startswith('attachment; filename="test-gold-all-')
        assert len(_csv_rows(b"".join(response.streaming_content))) == 3
        assert len(_jsonl_rows(b"".join(api.streaming_content))) == 3


@pytest.mark.django_db
def test_it_hides_the_project_from_outsiders_and_anonymous_users(client, project, member, make_user):
    outsider = member("admin", in_project=actions.create_project("Other", "other"))
    client.force_login(outsider.user)
    assert client.get(reverse("export", args=[project.slug])).status_code == 404
    assert client.post(reverse("export", args=[project.slug]), {"format": "csv", "split": "all"}).status_code == 404
    assert client.get(reverse("api-export", args=[project.slug])).status_code == 404
    client.logout()
    page = client.get(reverse("export", args=[project.slug]))
    assert page.status_code == 302 and page["Location"].startswith(reverse("login"))
    assert client.get(reverse("api-export", args=[project.slug])).status_code in (401, 403)


@pytest.mark.django_db
def test_it_rejects_bad_parameters_with_a_clear_message(client, project, member):
    client = _client_for(client, member("admin"))
    response = client.get(reverse("api-export", args=[project.slug]), {"format": "xml"})
    assert response.status_code == 400 and "format" in response.json()
    page = client.post(reverse("export", args=[project.slug]), {"format": "csv", "split": "test"})
    assert page.status_code == 200 and b"Select a valid choice" in page.content


@pytest.mark.django_db
def test_it_downloads_parquet_with_typed_columns(client, project, member):
    import pyarrow.parquet as pq

    _bulk_gold(project, 4)
    client = _client_for(client, member("admin"))
    response = client.post(reverse("export", args=[project.slug]), {"format": "parquet", "split": "all"})
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(b"".join(response.streaming_content)))
    assert table.num_rows == 4
    assert str(table.schema.field("decided_at").type) == "timestamp[us, tz=UTC]"
    assert table.column("label").to_pylist() == ["natural-language-processing", "computer-vision", "mlops", "other"]


# --- background jobs --------------------------------------------------------------------------


@pytest.fixture
def export_dir(settings, tmp_path):
    settings.LABELLOOP = {**settings.LABELLOOP, "EXPORT_DIR": str(tmp_path / "exports"), "EXPORT_ASYNC_ROWS": 5}
    return tmp_path / "exports"


@pytest.mark.django_db
def test_it_runs_a_big_export_as_a_job_with_progress_and_a_download(client, project, member, export_dir):
    _bulk_gold(project, 12)
    client = _client_for(client, member("admin"))
    response = client.post(reverse("export", args=[project.slug]), {"format": "jsonl", "split": "all"})
    assert response.status_code == 302
    job_id = response["Location"].rstrip("/").split("/")[-1]
    job = ExportJob.load(job_id)
    assert (job.status, job.total, job.rows) == ("queued", 12, 0)

    polled = client.get(response["Location"], headers={"HX-Request": "true"})
    assert b"<progress" in polled.content and b'hx-trigger="every 1s"' in polled.content
    assert b"<html" not in polled.content  # only the progress panel

    run_job(job_id)  # what the worker does with the queued task
    done = client.get(response["Location"], headers={"HX-Request": "true"})
    assert b"hx-trigger" not in done.content  # polling stops
    download_url = reverse("export_job_download", args=[project.slug, job_id])
    assert download_url.encode() in done.content
    download = client.get(download_url)
    assert download.status_code == 200
    assert len(_jsonl_rows(b"".join(download.streaming_content))) == 12
    assert not list(export_dir.glob("*.part"))


@pytest.mark.django_db
def test_it_runs_a_job_through_the_api(client, project, member, export_dir):
    _bulk_gold(project, 8)
    client = _client_for(client, member("admin"))
    too_big = client.get(reverse("api-export", args=[project.slug]), {"format": "csv"})
    assert too_big.status_code == 409 and "/exports/" in too_big.json()["detail"]

    started = client.post(
        reverse("api-export-jobs", args=[project.slug]), {"format": "csv", "labels_only": True},
        content_type="application/json",
    )
    assert started.status_code == 202
    job = started.json()
    assert (job["status"], job["total"], job["download_url"]) == ("queued", 8, None)
    run_job(job["id"])
    status = client.get(reverse("api-export-job", args=[project.slug, job["id"]])).json()
    assert (status["status"], status["rows"], status["percent"]) == ("done", 8, 100)
    download = client.get(status["download_url"])
    assert len(_csv_rows(b"".join(download.streaming_content))) == 8


@pytest.mark.django_db
def test_it_keeps_jobs_to_their_project(client, project, member, export_dir):
    _bulk_gold(project, 2)
    job = create_job(ExportSpec(project, "csv"))
    run_job(job.id)
    other = actions.create_project("Other", "other")
    client = _client_for(client, member("admin", in_project=other))
    assert client.get(reverse("export_job_download", args=["other", job.id])).status_code == 404
    assert client.get(reverse("api-export-job", args=["other", job.id])).status_code == 404
    # A job id is 32 hex digits and nothing else: never a path out of the export folder.
    assert client.get(reverse("export_job", args=["other", ".." + job.id[2:]])).status_code == 404


@pytest.mark.django_db
def test_it_marks_a_failed_job_and_leaves_no_partial_file(project, export_dir):
    _bulk_gold(project, 2)
    job = create_job(ExportSpec(project, "csv"))
    project.delete()
    finished = run_job(job.id)
    assert finished.status == "failed" and "no longer exists" in finished.error
    assert not finished.data_path.exists() and not list(export_dir.glob("*.part"))


@pytest.fixture
def export_worker(request, monkeypatch, export_dir):
    """A real Celery worker (subprocess) that writes exports where this test reads them."""
    monkeypatch.setenv("EXPORT_DIR", str(export_dir))
    return request.getfixturevalue("worker")


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_it_runs_an_export_job_in_a_real_worker(project, export_worker, queue):  # noqa: F811
    _bulk_gold(project, 30)
    job = create_job(ExportSpec(project, "jsonl", labels_only=True))
    with celery_app.connection_for_write(services.REDIS_URL) as broker:
        run_export_job.apply_async((job.id,), queue=queue, connection=broker)
    began = time.monotonic()
    while (state := ExportJob.load(job.id)).status not in ("done", "failed"):
        if export_worker.poll() is not None or time.monotonic() - began > 60:
            pytest.fail(f"the job is still {state.status}:\n{export_worker.log_path.read_text()}")
        time.sleep(0.2)
    assert (state.status, state.rows, state.error) == ("done", 30, "")
    assert len(_jsonl_rows(state.data_path.read_bytes())) == 30


@pytest.mark.django_db
def test_it_prunes_week_old_jobs_and_nothing_else(project, export_dir):
    _bulk_gold(project, 1)
    old, fresh = create_job(ExportSpec(project, "csv")), create_job(ExportSpec(project, "csv"))
    run_job(old.id)
    stranger = export_dir / "notes.txt"
    stranger.write_text("not an export")
    week_ago = time.time() - 8 * 24 * 3600
    for path in (old.state_path, old.data_path, stranger):
        os.utime(path, (week_ago, week_ago))

    assert prune_old_jobs() == 2
    assert ExportJob.load(old.id) is None and not old.data_path.exists()
    assert ExportJob.load(fresh.id) is not None and stranger.exists()


@pytest.mark.django_db
def test_it_writes_times_as_iso_8601_utc_like_isoformat(project):
    from datetime import UTC, datetime, timedelta, timezone

    items = _bulk_gold(project, 2)
    whole_second = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    elsewhere = datetime(2024, 5, 6, 9, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    GoldLabel.objects.filter(item=items[0]).update(decided_at=whole_second)
    GoldLabel.objects.filter(item=items[1]).update(decided_at=elsewhere)
    rows = _jsonl_rows(_export(project, "jsonl"))
    assert [row["decided_at"] for row in rows] == ["2024-05-06T07:08:09+00:00", "2024-05-06T07:08:09.123456+00:00"]
    stored = Item.objects.get(pk=items[0].pk).created_at
    assert rows[0]["item_created_at"] == stored.astimezone(UTC).isoformat()
    assert [row["decided_at"] for row in _csv_rows(_export(project, "csv"))] == [r["decided_at"] for r in rows]
