"""Import items from CSV or JSONL: streamed, batched, all or nothing.

The file is read once, row by row, and written in batches inside one transaction; the first bad
row raises `ImportRejected` naming the row and column, and the transaction rolls back, so a
rejected file leaves zero rows behind. Duplicates (same external id, or same normalised
title + text) are skipped and counted, within the file and against what the project already holds.
"""
import codecs
import csv
import io
import json
import random
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from .models import Category, GoldLabel, ImportJob, Item, Project, content_hash

TEXT_COLUMNS = ("description", "text")
LABEL_COLUMNS = ("labels", "label", "tag")
SNIFF_BYTES = 64 * 1024


class ImportRejected(ValueError):
    """The file cannot be imported; nothing was written. `str()` tells the user what to fix."""

    def __init__(self, message: str, row: int | None = None, column: str | None = None):
        self.row, self.column = row, column
        where = []
        if row is not None:
            where.append(f"row {row}")
        if column:
            where.append(f"column '{column}'")
        super().__init__((", ".join(where) + ": " if where else "") + message)


@dataclass
class ImportResult:
    created: int = 0
    duplicates: int = 0
    gold_labels: int = 0
    seconds: float = 0.0
    format: str = ""


@dataclass
class _Row:
    number: int
    external_id: str
    title: str
    text: str
    labels: list[str]
    meta: dict = field(default_factory=dict)


# --- reading ----------------------------------------------------------------------------------


def detect_format(head: bytes, filename: str = "") -> str:
    name = filename.lower()
    if b"\x00" in head:
        raise ImportRejected(
            "this is not a CSV or JSONL file (it contains binary data). Export your data as "
            "UTF-8 CSV with a header row, or as JSON Lines with one object per line."
        )
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    stripped = head.lstrip(codecs.BOM_UTF8).lstrip()
    return "jsonl" if stripped.startswith(b"{") else "csv"


def _text_stream(stream: BinaryIO) -> io.TextIOWrapper:
    # utf-8-sig drops a BOM if there is one; strict errors turn bad bytes into a clear message.
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="strict", newline="")


def _check_length(value: str, row: int, column: str) -> str:
    limit = settings.LABELLOOP["IMPORT_MAX_FIELD_CHARS"]
    if len(value) > limit:
        raise ImportRejected(f"the value has {len(value):,} characters; the limit is {limit:,}.", row, column)
    if "\x00" in value:
        raise ImportRejected("the value contains a NUL character; remove it.", row, column)
    return value


def _split_labels(raw) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, list):
        return [str(x).strip() for x in raw if str(x).strip()]
    raw = str(raw).strip()
    if raw.startswith("["):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError("looks like a JSON list but is not valid JSON") from None
        return _split_labels(parsed)
    return [part.strip() for part in raw.split(";") if part.strip()]


def _row_from_mapping(number: int, record: dict) -> _Row:
    text_column = next((c for c in TEXT_COLUMNS if c in record), None)
    title = _check_length(str(record.get("title") or "").strip(), number, "title")
    text = _check_length(str(record.get(text_column) or "").strip(), number, text_column or "text")
    if not title and not text:
        raise ImportRejected("empty text: both title and description are empty.", number, text_column or "text")
    label_column = next((c for c in LABEL_COLUMNS if c in record and record[c] not in (None, "")), None)
    try:
        labels = _split_labels(record.get(label_column)) if label_column else []
    except ValueError as exc:
        raise ImportRejected(str(exc), number, label_column) from None
    external_id = _check_length(str(record.get("id") or "").strip(), number, "id")
    if len(external_id) > 200:
        raise ImportRejected("ids can be at most 200 characters.", number, "id")
    return _Row(number, external_id, title, text, labels)


def _csv_rows(text: io.TextIOWrapper) -> Iterator[_Row]:
    limit = settings.LABELLOOP["IMPORT_MAX_FIELD_CHARS"]
    # The csv module's own limit guards memory; +1 so our clearer length check sees the overflow.
    csv.field_size_limit(max(csv.field_size_limit(), limit + 1))
    reader = csv.reader(text, strict=True)
    try:
        header = next(reader, None)
    except UnicodeDecodeError as exc:
        raise _encoding_error(exc, 1) from None
    except csv.Error as exc:
        raise ImportRejected(f"the header row is not valid CSV ({exc}).", 1) from None
    if header is None:
        raise ImportRejected("the file is empty; it needs a header row and at least one item.")
    columns = [h.strip().lower() for h in header]
    _check_columns(columns)
    number = 1
    while True:
        number += 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise _encoding_error(exc, number) from None
        except csv.Error as exc:
            raise ImportRejected(
                f"broken CSV ({exc}). Check the quoting: a field with commas, quotes or line "
                "breaks must be wrapped in double quotes, and quotes inside it doubled (\"\").",
                number,
            ) from None
        if not any(v.strip() for v in values):
            continue  # blank line
        if len(values) != len(columns):
            raise ImportRejected(
                f"expected {len(columns)} fields as in the header, found {len(values)}. "
                "Check for an unquoted comma or a missing field.",
                number,
            )
        yield _row_from_mapping(number, dict(zip(columns, values)))


def _check_columns(columns: list[str]) -> None:
    if not any(c in columns for c in TEXT_COLUMNS) and "title" not in columns:
        raise ImportRejected(
            f"missing columns: the header must name 'title' and 'description' (or 'text'); found "
            f"{', '.join(repr(c) for c in columns[:10]) or 'nothing'}.",
            1,
        )
    if not any(c in columns for c in TEXT_COLUMNS):
        raise ImportRejected("missing column 'description' (or 'text') in the header.", 1)
    duplicated = {c for c in columns if c and columns.count(c) > 1}
    if duplicated:
        raise ImportRejected(f"the header names {', '.join(sorted(duplicated))} more than once.", 1)


def _jsonl_rows(text: io.TextIOWrapper) -> Iterator[_Row]:
    number = 0
    while True:
        number += 1
        try:
            line = text.readline()
        except UnicodeDecodeError as exc:
            raise _encoding_error(exc, number) from None
        if not line:
            return
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportRejected(f"not valid JSON ({exc.msg} at character {exc.colno}).", number) from None
        if not isinstance(record, dict):
            raise ImportRejected("each line must be a JSON object like {\"title\": …, \"text\": …}.", number)
        if not any(c in record for c in TEXT_COLUMNS):
            raise ImportRejected("missing field 'text' (or 'description').", number, "text")
        yield _row_from_mapping(number, {str(k).lower(): v for k, v in record.items()})


def _encoding_error(exc: UnicodeDecodeError, row: int) -> ImportRejected:
    return ImportRejected(
        f"the file is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} cannot be decoded). "
        "Save it as UTF-8 (in a spreadsheet: 'CSV UTF-8') and import again.",
        row,
    )


def read_rows(stream: BinaryIO, filename: str = "") -> tuple[str, Iterator[_Row]]:
    head = stream.read(SNIFF_BYTES)
    fmt = detect_format(head, filename)
    stream = io.BufferedReader(_Prepend(head, stream)) if head else stream
    text = _text_stream(stream)
    return fmt, (_jsonl_rows(text) if fmt == "jsonl" else _csv_rows(text))


class _Prepend(io.RawIOBase):
    """A raw stream that yields `head` and then the rest of `rest` (which may not be seekable)."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head, self._rest = memoryview(head), rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# --- writing ----------------------------------------------------------------------------------


class _Batcher:
    """Turns validated rows into Items (and gold labels), skipping duplicates, in batches."""

    def __init__(self, project: Project):
        self.project = project
        self.k = project.annotations_per_item
        self.categories = {c.name.lower(): c.id for c in Category.objects.filter(project=project)}
        self.category_names = sorted(c.name for c in Category.objects.filter(project=project))
        self.seen_hashes: set[str] = set()
        self.seen_ids: set[str] = set()
        self.result = ImportResult()
        self.rank = (Item.objects.filter(project=project).aggregate(m=Max("rank"))["m"] or 0)
        self.pending: list[tuple[Item, list[int]]] = []

    def add(self, row: _Row) -> None:
        label_ids = self._label_ids(row)
        digest = content_hash(row.title, row.text)
        if digest in self.seen_hashes or (row.external_id and row.external_id in self.seen_ids):
            self.result.duplicates += 1
            return
        self.seen_hashes.add(digest)
        if row.external_id:
            self.seen_ids.add(row.external_id)
        item = Item(
            project=self.project,
            external_id=row.external_id,
            title=row.title,
            text=row.text,
            content_hash=digest,
            rank=self._next_rank(),
            open_slots=0 if label_ids else self.k,
            status=Item.Status.GOLD if label_ids else Item.Status.OPEN,
        )
        self.pending.append((item, label_ids))
        if len(self.pending) >= settings.LABELLOOP["IMPORT_BATCH_SIZE"]:
            self.flush()

    def _label_ids(self, row: _Row) -> list[int]:
        if not row.labels:
            return []
        if self.project.mode == Project.Mode.SINGLE and len(row.labels) > 1:
            raise ImportRejected(
                f"{len(row.labels)} labels given but project '{self.project.slug}' is single-label.", row.number, "tag"
            )
        ids = []
        for label in row.labels:
            category_id = self.categories.get(label.lower())
            if category_id is None:
                raise ImportRejected(
                    f"unknown label {label!r}; expected one of: {', '.join(self.category_names)}.", row.number, "tag"
                )
            ids.append(category_id)
        return sorted(set(ids))

    def _next_rank(self) -> int:
        if self.project.order == Project.Order.RANDOM:
            return random.getrandbits(62)
        self.rank += 1
        return self.rank

    def flush(self) -> None:
        if not self.pending:
            return
        fresh = self._drop_known(self.pending)
        self.result.duplicates += len(self.pending) - len(fresh)
        self.pending = []
        Item.objects.bulk_create([item for item, _ in fresh], batch_size=2000)
        golds = [
            GoldLabel(
                item=item,
                project=self.project,
                categories=labels,
                source=GoldLabel.Source.IMPORT,
                guidelines_version=self.project.guidelines_version,
            )
            for item, labels in fresh
            if labels
        ]
        GoldLabel.objects.bulk_create(golds, batch_size=2000)
        self.result.created += len(fresh)
        self.result.gold_labels += len(golds)

    def _drop_known(self, pending):
        """Rows already in the project (an earlier import of the same data) are duplicates too."""
        hashes = [item.content_hash for item, _ in pending]
        ids = [item.external_id for item, _ in pending if item.external_id]
        known_hashes = set(
            Item.objects.filter(project=self.project, content_hash__in=hashes).values_list("content_hash", flat=True)
        )
        known_ids = set(
            Item.objects.filter(project=self.project, external_id__in=ids).values_list("external_id", flat=True)
        ) if ids else set()
        return [
            (item, labels)
            for item, labels in pending
            if item.content_hash not in known_hashes and item.external_id not in known_ids
        ]


def import_items(project: Project, stream: BinaryIO, filename: str = "", size: int | None = None) -> ImportResult:
    """Import every row of `stream` into `project`, or nothing at all."""
    limit = settings.LABELLOOP["IMPORT_MAX_BYTES"]
    if size is not None and size > limit:
        raise ImportRejected(f"the file is {size:,} bytes; the limit is {limit:,}. Split it into smaller files.")
    started = time.perf_counter()
    fmt, rows = read_rows(stream, filename)
    with transaction.atomic(durable=True):
        # One import per project at a time: a second import of the same file waits, then
        # finds every row already present and counts them as duplicates.
        Project.objects.select_for_update().filter(pk=project.pk).first()
        batcher = _Batcher(project)
        any_row = False
        for row in rows:
            any_row = True
            batcher.add(row)
        if not any_row:
            raise ImportRejected("the file has a header but no items.")
        batcher.flush()
    batcher.result.seconds = time.perf_counter() - started
    batcher.result.format = fmt
    return batcher.result


def import_with_history(project: Project, stream: BinaryIO, filename: str, user=None, size=None) -> ImportJob:
    """Run an import and keep a record of it (for the import page), success or failure."""
    job = ImportJob.objects.create(project=project, created_by=user, filename=filename[:255])
    try:
        result = import_items(project, stream, filename, size=size)
    except ImportRejected as exc:
        job.status, job.error = ImportJob.Status.FAILED, str(exc)
    else:
        job.status = ImportJob.Status.DONE
        job.created, job.duplicates, job.gold_labels = result.created, result.duplicates, result.gold_labels
    job.finished_at = timezone.now()
    job.save()
    return job
