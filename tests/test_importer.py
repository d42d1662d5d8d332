"""The importer: CSV and JSONL in, duplicates skipped, and any bad file rejected whole.

Every rejection test checks two things: the message tells the user what to fix (and where), and
nothing was written. The bad row comes after more than one batch of good rows (IMPORT_BATCH_SIZE
is 2 here), so an importer that wrote batch by batch without one transaction would be caught;
each runs against an empty project and one that already holds items.
"""
import codecs
import io
import json
import threading
import tracemalloc
import zipfile

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from labeling import actions
from labeling.importer import ImportRejected, dedupe_key, import_items
from labeling.models import Category, GoldLabel, ImportJob, Item, Project, content_hash

HEADER = "id,title,description,tag\n"
GOOD_ROWS = "".join(f"g{i},Good item {i},words of good item {i},\n" for i in range(5))
GOOD_LINES = "".join(json.dumps({"id": f"j{i}", "title": f"Good {i}", "text": f"good line {i}"}) + "\n" for i in range(5))


def limits(**overrides):
    return override_settings(LABELLOOP={**settings.LABELLOOP, "IMPORT_BATCH_SIZE": 2, **overrides})


def run(project, data, filename="items.csv", **kwargs):
    if isinstance(data, str):
        data = data.encode()
    return import_items(project, io.BytesIO(data), filename, **kwargs)


@pytest.fixture(params=["empty", "stocked"])
def destination(request, project):
    """The project a bad file goes to, empty or already holding items and a gold label (the two
    take different write paths: an empty one streams batches from a second thread)."""
    if request.param == "stocked":
        run(project, "id,title,description,tag\nold-1,Old one,already here,mlops\nold-2,Old two,also here,\n")
    return project


def counts():
    return Item.objects.count(), GoldLabel.objects.count()


def assert_rejected(project, data, *fragments, filename="items.csv", **settings_overrides):
    before = counts()
    with limits(**settings_overrides), pytest.raises(ImportRejected) as caught:
        run(project, data, filename)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    assert counts() == before, "a rejected file wrote rows"
    return caught.value


def category_ids(project, *names):
    return sorted(Category.objects.get(project=project, name=n).id for n in names)


# --- what imports ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_imports_csv_rows_as_open_items_in_file_order(project):
    with limits():
        result = run(project, HEADER + GOOD_ROWS)
    assert (result.created, result.duplicates, result.gold_labels, result.format) == (5, 0, 0, "csv")
    items = list(Item.objects.order_by("rank"))
    assert [i.external_id for i in items] == [f"g{i}" for i in range(5)]
    assert [i.rank for i in items] == [1, 2, 3, 4, 5]
    first = items[0]
    assert (first.title, first.text, first.status, first.open_slots) == ("Good item 0", "words of good item 0", "open", 1)
    assert first.content_hash == content_hash("Good item 0", "words of good item 0")
    assert first.meta == {} and first.split == "" and first.created_at is not None


@pytest.mark.django_db
def test_it_turns_labels_into_gold_with_import_provenance(project):
    rows = HEADER + "a,Vision,detects cats,computer-vision\nb,Ops,deploys models,MLOps\nc,Plain,no label here,\n"
    result = run(project, rows)
    assert (result.created, result.gold_labels) == (3, 2)
    gold = GoldLabel.objects.get(item__external_id="b")
    assert gold.categories == category_ids(project, "mlops")  # label names match case-insensitively
    assert gold.source == GoldLabel.Source.IMPORT and gold.project == project
    assert gold.guidelines_version == project.guidelines_version
    assert Item.objects.get(external_id="b").status == Item.Status.GOLD
    assert Item.objects.get(external_id="b").open_slots == 0
    assert Item.objects.get(external_id="c").status == Item.Status.OPEN


@pytest.mark.django_db
def test_it_reads_several_labels_as_json_list_or_semicolons_in_a_multi_label_project(project):
    Project.objects.filter(pk=project.pk).update(mode=Project.Mode.MULTI)
    project.refresh_from_db()
    rows = (
        "title,description,labels\n"
        'One,first text,"[""mlops"", ""other""]"\n'
        "Two,second text,computer-vision; natural-language-processing\n"
    )
    assert run(project, rows).gold_labels == 2
    assert GoldLabel.objects.get(item__title="One").categories == category_ids(project, "mlops", "other")
    assert GoldLabel.objects.get(item__title="Two").categories == category_ids(
        project, "computer-vision", "natural-language-processing"
    )


@pytest.mark.django_db
def test_it_imports_jsonl_with_text_or_description_and_label_lists(project):
    lines = [
        {"id": 7, "title": "Seven", "text": "seventh text", "labels": ["mlops"]},
        {"title": "Eight", "description": "eighth text", "label": "other"},
        {"Text": "only a text, no title"},
    ]
    result = run(project, "\n".join(json.dumps(line) for line in lines) + "\n\n", "items.jsonl")
    assert (result.created, result.gold_labels, result.format) == (3, 2, "jsonl")
    assert Item.objects.get(external_id="7").gold.categories == category_ids(project, "mlops")
    assert Item.objects.get(title="Eight").text == "eighth text"
    assert Item.objects.filter(text="only a text, no title").exists()


@pytest.mark.django_db
def test_it_imports_a_file_with_a_utf8_bom(project):
    data = codecs.BOM_UTF8 + "id,title,description\nb1,Café,crème brûlée\n".encode()
    assert run(project, data).created == 1
    item = Item.objects.get()
    assert (item.external_id, item.title) == ("b1", "Café")  # the BOM did not stick to "id"


@pytest.mark.django_db
def test_it_reads_quoted_fields_crlf_semicolons_and_old_mac_line_breaks(project):
    quoted = 'title,description\r\n"Comma, inside","a ""quoted"" word\r\nand a second line"\r\n'
    assert run(project, quoted).created == 1
    assert Item.objects.get(title="Comma, inside").text == 'a "quoted" word\r\nand a second line'
    assert run(project, "title;description\nSemi;colon separated\n").created == 1
    assert run(project, "title\tdescription\nTab\tseparated\n").created == 1
    assert run(project, "title,description\rMac,old line breaks\rMac 2,more\r").created == 2


@pytest.mark.django_db
def test_it_stores_text_with_backslashes_tabs_and_line_breaks_exactly(project):
    # What a COPY or an INSERT could mangle: escapes, COPY's NULL and end-of-data markers, quotes.
    values = [
        ("back\\slash \\N \\t", "a\tb"),
        ("two\nlines", "\\.\nnext"),
        ("crlf\r\nhere", "C:\\path\\to\\file"),
        ("quote ' and \" both", "unicode: é ✓ 漢字 \u2028 sep"),
    ]
    lines = [json.dumps({"id": f"t{i}", "title": title, "text": text}) for i, (title, text) in enumerate(values)]
    assert run(project, "\n".join(lines), "tricky.jsonl").created == 4
    for i, (title, text) in enumerate(values):
        item = Item.objects.get(external_id=f"t{i}")
        assert (item.title, item.text) == (title, text)
        assert item.content_hash == content_hash(title, text)


@pytest.mark.django_db
def test_it_counts_duplicates_inside_one_file_by_id_and_by_normalised_text(project):
    rows = HEADER + (
        "x1,Hello World,Some text,\n"
        "x1,Another title,another text,\n"  # same id
        "x2,  hello   WORLD ,some   TEXT,\n"  # same text once case and spaces are normalised
        "x3,Hello World!,Some text,\n"  # punctuation differs: not a duplicate
    )
    with limits():
        result = run(project, rows)
    assert (result.created, result.duplicates) == (2, 2)
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ["x1", "x3"]


@pytest.mark.django_db
def test_it_skips_everything_when_the_same_file_is_imported_again(project):
    rows = HEADER + GOOD_ROWS + "l1,Labelled,a labelled row,mlops\n"
    with limits():
        first = run(project, rows)
        again = run(project, rows)
        # A new row among known ones (and a known id with new text) after a batch boundary.
        more = run(project, rows + "g1,Changed,text under a known id,\nnew,Brand new,never seen,other\n")
    assert (first.created, first.duplicates, first.gold_labels) == (6, 0, 1)
    assert (again.created, again.duplicates, again.gold_labels) == (0, 6, 0)
    assert (more.created, more.duplicates, more.gold_labels) == (1, 7, 1)
    assert counts() == (7, 2)
    assert Item.objects.order_by("-rank").first().external_id == "new"  # ranks continue after the old ones


@pytest.mark.django_db
def test_it_gives_random_rank_in_a_random_order_project(project):
    Project.objects.filter(pk=project.pk).update(order=Project.Order.RANDOM)
    project.refresh_from_db()
    run(project, HEADER + GOOD_ROWS)
    ranks = list(Item.objects.order_by("id").values_list("rank", flat=True))
    assert len(set(ranks)) == 5 and all(rank > 2**20 for rank in ranks)


@pytest.mark.django_db
def test_it_spans_batches_with_gold_labels_and_duplicates(project):
    rows = HEADER + "".join(
        f"r{i},Title {i % 40},text {i % 40},{'other' if i % 3 == 0 else ''}\n" for i in range(100)
    )
    with limits(IMPORT_BATCH_SIZE=7):
        result = run(project, rows)
    assert (result.created, result.duplicates) == (40, 60)
    assert result.gold_labels == GoldLabel.objects.count() == len([i for i in range(40) if i % 3 == 0])
    assert set(GoldLabel.objects.values_list("item__status", flat=True)) == {"gold"}


def test_the_fast_dedupe_key_matches_the_models_content_hash():
    samples = [
        ("Plain", "text"),
        ("  Leading and trailing  ", "  spaces  "),
        ("Tabs\tand\nnew\r\nlines", "many     spaces"),
        ("UPPER case", "MiXeD"),
        ("Ünïcödé", "ﬁ ligature and full-width ＡＢＣ"),
        ("non\u00a0breaking", "em\u2003space and\u2028line separator"),
        ("", "only text"),
        ("x\x1fy", "unit\x1cseparators\x1d\x1e"),
        ("ascii but \x0b vertical", "form\x0cfeed"),
    ]
    for title, text in samples:
        assert dedupe_key(title, text) == content_hash(title, text), (title, text)


# --- what is rejected, whole --------------------------------------------------------------------


@pytest.mark.django_db
def test_it_rejects_a_header_without_a_text_column(destination):
    error = assert_rejected(destination, "name,body\nA,b\n", "row 1", "missing column 'description' (or 'text')", "'name'")
    assert error.row == 1


@pytest.mark.django_db
def test_it_rejects_a_row_with_empty_text(destination):
    error = assert_rejected(destination, HEADER + GOOD_ROWS + "e1,  ,   ,\n", "row 7", "column 'description'", "empty text")
    assert (error.row, error.column) == (7, "description")


@pytest.mark.django_db
def test_it_rejects_an_unknown_label_and_lists_the_known_ones(destination):
    assert_rejected(
        destination, HEADER + GOOD_ROWS + "u1,Robot,arms,robotics\n",
        "row 7", "column 'tag'", "unknown label 'robotics'", "computer-vision, mlops, natural-language-processing, other",
    )


@pytest.mark.django_db
def test_it_rejects_several_labels_in_a_single_label_project(destination):
    assert_rejected(
        destination, HEADER + GOOD_ROWS + "m1,Both,vision and ops,computer-vision;mlops\n",
        "row 7", "column 'tag'", "2 labels", "single-label",
    )


@pytest.mark.django_db
def test_it_rejects_an_unclosed_quote(destination):
    assert_rejected(destination, HEADER + GOOD_ROWS + 'q1,"Never closed,text,\nq2,more,rows,\n', "row 7", "never closed")


@pytest.mark.django_db
def test_it_rejects_text_after_a_closing_quote(destination):
    assert_rejected(destination, HEADER + GOOD_ROWS + 'q1,"Closed"then more,text,\n', "row 7", "broken CSV", "quot")


@pytest.mark.django_db
def test_it_rejects_latin1_bytes_naming_row_and_column(destination):
    data = (HEADER + GOOD_ROWS).encode() + "l1,Caf\u00e9,cr\u00e8me,\n".encode("latin-1")
    error = assert_rejected(destination, data, "row 7", "column 'title'", "byte 0xe9", "not UTF-8", "save it as UTF-8")
    assert (error.row, error.column) == (7, "title")


@pytest.mark.django_db
@pytest.mark.parametrize("bom", [True, False])
def test_it_rejects_utf16_text(destination, bom):
    data = (HEADER + GOOD_ROWS).encode("utf-16" if bom else "utf-16-le")
    assert_rejected(destination, data, "UTF-16", "UTF-8")


def png_bytes() -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00" + bytes(200)


def zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")
    return out.getvalue()


def pdf_bytes() -> bytes:
    return b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "make, filename, what",
    [(png_bytes, "items.csv", "PNG image"), (zip_bytes, "items.xlsx", "ZIP archive"), (pdf_bytes, "items.csv", "PDF document")],
)
def test_it_rejects_files_that_are_not_csv_or_jsonl(destination, make, filename, what):
    assert_rejected(destination, make(), what, "not a CSV or JSONL file", "CSV (UTF-8)", filename=filename)


@pytest.mark.django_db
def test_it_rejects_a_field_over_the_length_limit(destination):
    assert_rejected(
        destination, HEADER + GOOD_ROWS + "o1,Long," + "x" * 51 + ",\n",
        "row 7", "column 'description'", "51 characters", "the limit is 50",
        IMPORT_MAX_FIELD_CHARS=50,
    )


@pytest.mark.django_db
def test_it_rejects_a_row_with_the_wrong_number_of_fields(destination):
    assert_rejected(
        destination, HEADER + GOOD_ROWS + "w1,Too,many,fields,here\n",
        "row 7", "expected 4 fields", "(id, title, description, tag)", "found 5", "unquoted comma",
    )


@pytest.mark.django_db
def test_it_rejects_an_invalid_json_line(destination):
    lines = GOOD_LINES + '{"title": "e", "text": }\n'
    assert_rejected(destination, lines, "line 6", "not valid JSON", "Expecting value", filename="items.jsonl")


@pytest.mark.django_db
def test_it_rejects_a_json_line_that_is_not_an_object(destination):
    lines = GOOD_LINES + '["c", "d"]\n'
    assert_rejected(destination, lines, "line 6", "must be a JSON object", "not a list", filename="items.jsonl")


@pytest.mark.django_db
def test_it_rejects_a_json_array_file(destination):
    assert_rejected(destination, '[{"title": "a", "text": "b"}]', "JSON array", "JSON Lines", filename="items.json")


@pytest.mark.django_db
def test_it_rejects_a_json_field_of_the_wrong_type(destination):
    lines = GOOD_LINES + '{"title": {"nested": 1}, "text": "d"}\n'
    assert_rejected(destination, lines, "line 6", "field 'title'", "must be a string, not an object", filename="items.jsonl")


@pytest.mark.django_db
@pytest.mark.parametrize("char, name", [("\x00", "a NUL character"), ("\x07", "the control character U+0007")])
def test_it_rejects_nul_and_control_characters(destination, char, name):
    assert_rejected(destination, HEADER + GOOD_ROWS + f"c1,Bell,ring{char}ring,\n", "row 7", "column 'description'", name)


@pytest.mark.django_db
def test_it_rejects_an_escaped_nul_in_jsonl(destination):
    lines = GOOD_LINES + '{"title": "c", "text": "nul \\u0000 here"}\n'
    assert_rejected(destination, lines, "line 6", "field 'text'", "NUL", filename="items.jsonl")


@pytest.mark.django_db
def test_it_rejects_a_file_over_the_size_limit_before_reading_it(destination):
    data = HEADER + GOOD_ROWS * 10
    with limits(IMPORT_MAX_BYTES=100), pytest.raises(ImportRejected) as caught:
        run(destination, data, size=len(data))
    assert f"{len(data):,} bytes; the limit is 100 bytes" in str(caught.value)


@pytest.mark.django_db
def test_it_rejects_a_stream_that_grows_past_the_size_limit(destination):
    # No size given (a pipe): the importer counts what it reads and stops at the limit.
    data = HEADER + "".join(f"s{i},Item {i},text {i},\n" for i in range(20_000))
    assert_rejected(destination, data, "over the limit of 100,000 bytes", "Split it", IMPORT_MAX_BYTES=100_000)


@pytest.mark.django_db
def test_it_stops_at_a_huge_line_without_holding_it(destination):
    stream = io.BytesIO(HEADER.encode() + b"a" * 30_000_000)
    before = counts()
    tracemalloc.start()
    try:
        with pytest.raises(ImportRejected) as caught:
            import_items(destination, stream, "items.csv")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "line 2" in str(caught.value) and "longer than" in str(caught.value)
    assert peak < 10_000_000, f"held {peak:,} bytes"
    assert stream.tell() < 5_000_000  # it stopped reading early
    assert counts() == before


@pytest.mark.django_db
def test_it_stops_early_on_millions_of_empty_rows(destination):
    stream = io.BytesIO((HEADER + GOOD_ROWS).encode() + b",,,\n" * 5_000_000)
    before = counts()
    with pytest.raises(ImportRejected) as caught:
        import_items(destination, stream, "items.csv")
    assert "more than 10,000 empty rows" in str(caught.value)
    assert stream.tell() < 3_000_000
    assert counts() == before


@pytest.mark.django_db
def test_it_stops_at_an_unclosed_quote_without_reading_the_rest(destination):
    stream = io.BytesIO((HEADER + 'q,"open quote,text,\n').encode() + b"more,rows,follow,\n" * 1_000_000)
    before = counts()
    with limits(IMPORT_MAX_FIELD_CHARS=1000), pytest.raises(ImportRejected) as caught:
        import_items(destination, stream, "items.csv")
    assert "row 2" in str(caught.value) and "never closed" in str(caught.value)
    assert stream.tell() < 3_000_000
    assert counts() == before


@pytest.mark.django_db
def test_it_rejects_more_rows_than_the_row_limit(destination):
    data = HEADER + "".join(f"t{i},T{i},x,\n" for i in range(30))
    assert_rejected(destination, data, "row 22", "more than 20 items", "split the file", IMPORT_MAX_ROWS=20)


@pytest.mark.django_db
def test_it_rejects_a_file_with_only_a_header_or_nothing(destination):
    assert_rejected(destination, HEADER + "\n,,,\n", "no items")
    assert_rejected(destination, "", "the file is empty")


@pytest.mark.django_db
def test_a_database_failure_while_storing_leaves_nothing_behind(project, monkeypatch):
    from labeling import importer

    writer_class = type(importer._writer_for(project))
    real_store, stored = writer_class.store, []

    def store_then_fail(self, payload, golds):
        if stored:
            raise RuntimeError("the database went away")
        real_store(self, payload, golds)
        stored.append(payload)

    monkeypatch.setattr(writer_class, "store", store_then_fail)
    with limits(), pytest.raises(RuntimeError, match="went away"):
        run(project, HEADER + GOOD_ROWS + "l1,Labelled,a labelled row,mlops\n")
    assert stored, "the first batch was stored before the failure"
    assert counts() == (0, 0)


@pytest.mark.django_db
def test_an_unexpected_failure_is_recorded_in_the_import_history(project, monkeypatch):
    from labeling import importer

    def fail(self, payload, golds):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(type(importer._writer_for(project)), "store", fail)
    with pytest.raises(RuntimeError):
        importer.import_with_history(project, io.BytesIO((HEADER + GOOD_ROWS).encode()), "items.csv")
    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.FAILED and "nothing was imported" in job.error
    assert job.finished_at is not None and counts() == (0, 0)


def test_the_writer_thread_hands_its_failure_to_the_importing_thread():
    from labeling.importer import _Pipeline

    def store(n):
        if n == 2:
            raise RuntimeError(f"batch {n} failed")

    with pytest.raises(RuntimeError, match="batch 2 failed"):
        with _Pipeline(store) as pipeline:
            pipeline.submit(1)
            pipeline.submit(2)  # the last batch: its failure surfaces when the pipeline closes


def test_the_writer_thread_is_done_before_a_rejected_import_rolls_back():
    from labeling.importer import _Pipeline

    stored, release = [], threading.Event()

    def store(n):
        release.wait(5)
        stored.append(n)

    with pytest.raises(ImportRejected):
        with _Pipeline(store) as pipeline:
            pipeline.submit(1)
            pipeline.submit(2)
            release.set()
            raise ImportRejected("row 9: bad")
    assert not pipeline.thread.is_alive()
    assert stored in ([1], [1, 2])  # a batch is stored whole or not at all; the rest are dropped


# --- the web page and the API --------------------------------------------------------------------


def upload(name, data):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data.encode() if isinstance(data, str) else data)


@pytest.mark.django_db
def test_the_import_page_shows_why_nothing_was_imported(client, destination, member):
    client.force_login(member("admin").user)
    before = counts()
    response = client.post(
        f"/p/{destination.slug}/import/", {"file": upload("bad.csv", HEADER + "u1,Robot,arms,robotics\n")}, follow=True
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert any("Nothing was imported from bad.csv" in m and "row 2" in m and "unknown label 'robotics'" in m for m in shown), shown
    assert counts() == before
    assert ImportJob.objects.get(filename="bad.csv").status == ImportJob.Status.FAILED


@pytest.mark.django_db
def test_the_import_page_reports_what_it_imported(client, project, member):
    client.force_login(member("admin").user)
    response = client.post(f"/p/{project.slug}/import/", {"file": upload("good.csv", HEADER + GOOD_ROWS + GOOD_ROWS)}, follow=True)
    shown = " ".join(str(m) for m in response.context["messages"])
    assert "Imported 5 items from good.csv (5 duplicates skipped, 0 gold labels)" in shown
    assert Item.objects.count() == 5


@pytest.mark.django_db
def test_the_api_answers_400_with_the_reason(client, destination, member):
    client.force_login(member("admin").user)
    before = counts()
    response = client.post(f"/api/projects/{destination.slug}/import/", {"file": upload("bad.csv", HEADER + "e1,,,\n")})
    assert response.status_code == 400
    assert "row 2" in response.json()["detail"] and "empty text" in response.json()["detail"]
    assert counts() == before


@pytest.mark.django_db
def test_the_api_returns_the_counts(client, project, member):
    client.force_login(member("admin").user)
    response = client.post(f"/api/projects/{project.slug}/import/", {"file": upload("items.csv", HEADER + GOOD_ROWS)})
    assert response.status_code == 201
    body = response.json()
    assert (body["created"], body["duplicates"], body["gold_labels"]) == (5, 0, 0)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["annotator", "reviewer"])
def test_only_admins_may_import(client, project, member, role):
    client.force_login(member(role).user)
    assert client.get(f"/p/{project.slug}/import/").status_code == 403
    assert client.post(f"/p/{project.slug}/import/", {"file": upload("a.csv", HEADER + GOOD_ROWS)}).status_code == 403
    assert client.post(f"/api/projects/{project.slug}/import/", {"file": upload("a.csv", HEADER + GOOD_ROWS)}).status_code == 403
    assert Item.objects.count() == 0


@pytest.mark.django_db
def test_outsiders_do_not_learn_the_project_exists(client, project, make_user):
    client.force_login(make_user())
    assert client.get(f"/p/{project.slug}/import/").status_code == 404
    assert client.post(f"/p/{project.slug}/import/", {"file": upload("a.csv", HEADER + GOOD_ROWS)}).status_code == 404
    assert client.post(f"/api/projects/{project.slug}/import/", {"file": upload("a.csv", HEADER + GOOD_ROWS)}).status_code == 404
    assert Item.objects.count() == 0


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_imports_of_one_file_insert_each_row_once():
    project = actions.create_project("Concurrent", "concurrent")
    rows = HEADER + "".join(f"c{i},Item {i},text of item {i},{'mlops' if i % 10 == 0 else ''}\n" for i in range(3000))
    start, results, errors = threading.Barrier(2), [], []

    def one_import():
        try:
            start.wait()
            results.append(run(Project.objects.get(pk=project.pk), rows))
        except Exception as exc:  # noqa: BLE001 — reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=one_import) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted((r.created, r.duplicates, r.gold_labels) for r in results) == [(0, 3000, 0), (3000, 0, 300)]
    assert Item.objects.filter(project=project).count() == 3000
    assert GoldLabel.objects.filter(project=project).count() == 300
