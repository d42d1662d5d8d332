"""Import items from CSV or JSONL: streamed, batched, all or nothing.

The file is read once, line by line, and written in batches inside one transaction; the first bad
row raises `ImportRejected` naming the row and column, and the transaction rolls back, so a
rejected file leaves zero rows behind. Duplicates (same external id, or same normalised
title + text) are skipped and counted, within the file and against what the project already holds.

Hostile input is bounded: the byte count (IMPORT_MAX_BYTES), the length of a line and of a field
(IMPORT_MAX_FIELD_CHARS), the number of rows (IMPORT_MAX_ROWS) and of empty rows are all capped,
so no file can make the importer hold more than one batch of rows plus the dedupe sets.

Writes skip the ORM's per-object work, which costs more than the database itself at this volume:
PostgreSQL gets one COPY per batch, SQLite multi-row INSERTs, and a second thread stores each
batch while the next is parsed (see "writing" below). Columns the file does not set take the
model's own defaults, read from an unsaved `Item`. The content hash is `models.content_hash`,
computed by a faster path for plain ASCII that gives the same value (`dedupe_key`).
"""
import codecs
import csv
import hashlib
import io
import json
import logging
import queue
import random
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from django.db.models import Max
from django.utils import timezone

from .models import Category, GoldLabel, ImportJob, Item, Project, content_hash
from .tasks import follow_up_import

logger = logging.getLogger(__name__)

TEXT_COLUMNS = ("description", "text")
LABEL_COLUMNS = ("labels", "label", "tag")
SNIFF_BYTES = 64 * 1024
HEADER_MAX_BYTES = 64 * 1024
# A few blank lines are normal; a file of millions of them is a mistake or an attack.
MAX_EMPTY_ROWS = 10_000
EXTERNAL_ID_MAX_CHARS = Item._meta.get_field("external_id").max_length
# Anything below U+0020 but tab and line breaks, DEL, and lone surrogates: those stand for bytes
# that were not UTF-8 (the file is decoded with `surrogateescape`, so the row can be named).
_BAD_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")

# (leading bytes, what the file is): formats people upload by mistake instead of CSV.
_SIGNATURES = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx or OpenDocument file is one)"),
    (b"\xd0\xcf\x11\xe0", "an old Excel .xls (or other Office) file"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (codecs.BOM_UTF32_LE, "a UTF-32 text file"),
    (codecs.BOM_UTF32_BE, "a UTF-32 text file"),
    (codecs.BOM_UTF16_LE, "a UTF-16 text file"),
    (codecs.BOM_UTF16_BE, "a UTF-16 text file"),
]
_SAVE_AS = (
    "Export your data as CSV (UTF-8) with a header row (title, description, optional id and tag), "
    "or as JSON Lines with one object per line."
)


class ImportRejected(ValueError):
    """The file cannot be imported; nothing was written. `str()` tells the user what to fix."""

    def __init__(self, message: str, row: int | None = None, column: str | None = None, unit: str = "row"):
        self.row, self.column = row, column
        where = []
        if row is not None:
            where.append(f"{unit} {row:,}")
        if column:
            where.append(f"{'field' if unit == 'line' else 'column'} '{column}'")
        super().__init__((", ".join(where) + ": " if where else "") + message)


@dataclass
class ImportResult:
    created: int = 0
    duplicates: int = 0
    gold_labels: int = 0
    seconds: float = 0.0
    format: str = ""


def _limit(name: str, default: int) -> int:
    return settings.LABELLOOP.get(name, default)


# --- recognising the file -----------------------------------------------------------------------


def detect_format(head: bytes, filename: str = "") -> str:
    """'csv' or 'jsonl', or `ImportRejected` when the bytes are plainly something else."""
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            if "UTF-16" in what or "UTF-32" in what:
                raise ImportRejected(f"the file is {what}; save it as UTF-8 and import again.")
            raise ImportRejected(f"this is {what}, not a CSV or JSONL file. {_SAVE_AS}")
    # Many NUL bytes: binary, or UTF-16 without a BOM (every other byte of ASCII text is NUL).
    # A stray NUL or two in text is left for the row checks, which name its row and column.
    if head.count(b"\x00") * 8 > len(head):
        raise ImportRejected(
            "the file contains NUL bytes: it is binary, or text saved as UTF-16. " + _SAVE_AS
        )
    name = filename.lower()
    stripped = head.lstrip(codecs.BOM_UTF8).lstrip()
    if name.endswith((".jsonl", ".ndjson", ".json")) or stripped.startswith(b"{"):
        if stripped.startswith(b"["):
            raise ImportRejected(
                "this is a JSON array; the importer reads JSON Lines: one object per line, no "
                "surrounding [ ]. (`jq -c '.[]' file.json > file.jsonl` converts it.)"
            )
        return "jsonl"
    return "csv"


class _Source(io.RawIOBase):
    """The already-sniffed `head`, then the rest of `rest` (which may not be seekable),
    refusing to read past `max_bytes` so a file of unknown size is still bounded."""

    def __init__(self, head: bytes, rest: BinaryIO, max_bytes: int):
        self._head, self._rest = memoryview(head), rest
        self._left = max_bytes - len(head)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        self._left -= len(data)
        if self._left < 0:
            raise _too_large(None)
        buffer[: len(data)] = data
        return len(data)


def _too_large(size: int | None) -> ImportRejected:
    limit = _limit("IMPORT_MAX_BYTES", 512 * 1024 * 1024)
    found = f"is {size:,} bytes; the limit is {limit:,} bytes" if size is not None else f"is over the limit of {limit:,} bytes"
    return ImportRejected(f"the file {found}. Split it into smaller files.")


def _lines(head: bytes, rest: BinaryIO, max_bytes: list[int]) -> Iterator[str]:
    """The file's lines as text, refusing any line longer than `max_bytes[0]` before it is held
    in memory (a file without line breaks would otherwise be read whole). A list, so the CSV
    reader can raise the limit once the header tells how many fields a line holds.

    Lines are split as bytes and decoded one by one: fast, and a byte that is not UTF-8 only
    turns that line's decoding to `surrogateescape`, so the row checks can name its row and column.
    """
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8):]
    stream = io.BufferedReader(_Source(head, rest, _limit("IMPORT_MAX_BYTES", 512 * 1024 * 1024)), 1 << 20)
    if b"\r" in head and b"\n" not in head:
        # Old Mac line breaks (Excel for Mac's "CSV (Macintosh)"): let universal newlines split.
        stream = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline=None)
    readline = stream.readline
    number = 0
    while True:
        limit = max_bytes[0]
        line = readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit:
            raise ImportRejected(
                f"the line is longer than {limit:,} bytes. A field may be over the limit of "
                f"{_limit('IMPORT_MAX_FIELD_CHARS', 100_000):,} characters, or the file has no line "
                "breaks (is it really CSV or JSON Lines?).",
                number,
                unit="line",
            )
        if isinstance(line, bytes):
            try:
                line = line.decode()
            except UnicodeDecodeError:
                line = line.decode("utf-8", "surrogateescape")
        yield line


# --- reading rows -------------------------------------------------------------------------------
# Readers yield plain tuples, cheap to build a million times:
# (row number, external id, title, text, content hash, labels or None, label column).


def _clean(value: str, row: int, column: str, unit: str = "row", max_chars: int | None = None) -> str:
    limit = max_chars or _limit("IMPORT_MAX_FIELD_CHARS", 100_000)
    if len(value) > limit:
        raise ImportRejected(f"the value has {len(value):,} characters; the limit is {limit:,}.", row, column, unit)
    # Plain printable ASCII (most rows) cannot hold a bad character: skip the regex.
    if not (value.isascii() and value.isprintable()):
        bad = _BAD_CHAR.search(value)
        if bad:
            raise _bad_character(bad.group(), bad.start(), row, column, unit)
    return value


def _bad_character(char: str, at: int, row: int, column: str, unit: str) -> ImportRejected:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return ImportRejected(
            f"byte 0x{code - 0xDC00:02x} at character {at + 1} is not UTF-8. The file was probably "
            "saved as Latin-1 or Windows-1252: save it as UTF-8 (in a spreadsheet: 'CSV UTF-8') "
            "and import again.",
            row, column, unit,
        )
    if 0xD800 <= code <= 0xDFFF:
        return ImportRejected(f"invalid character U+{code:04X} at character {at + 1}.", row, column, unit)
    name = "a NUL character" if code == 0 else f"the control character U+{code:04X}"
    return ImportRejected(
        f"the value contains {name} at character {at + 1}; remove it (only tabs and line breaks are allowed).",
        row, column, unit,
    )


def _split_labels(raw) -> list[str] | None:
    """The category names of a label cell or field: a JSON list (an empty one, `[]`, is an
    explicit empty set: see Importer._label_ids), or names separated by ';' (None when there
    are none: an unlabeled item)."""
    if isinstance(raw, list):
        if not all(isinstance(x, str) for x in raw):
            raise ValueError("labels must be category names (strings).")
        return [x.strip() for x in raw if x.strip()]
    if not isinstance(raw, str):
        raise ValueError("labels must be a category name, a list of names, or names separated by ';'.")
    raw = raw.strip()
    if raw.startswith("["):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError("looks like a JSON list but is not valid JSON.") from None
        return _split_labels(parsed)
    return [part.strip() for part in raw.split(";") if part.strip()] or None


def _record(number, external_id, title, text, raw_labels, label_column, text_column, max_chars, unit="row"):
    title, text = title.strip(), text.strip()
    if (
        len(title) <= max_chars and len(text) <= max_chars
        and title.isascii() and text.isascii() and title.isprintable() and text.isprintable()
    ):
        digest = _printable_ascii_key(title, text)
    else:
        _clean(title, number, "title", unit, max_chars)
        _clean(text, number, text_column, unit, max_chars)
        digest = content_hash(title, text)
    if not text and not title:
        raise ImportRejected(
            f"empty text: both title and {text_column} are empty. Fill one in or remove the row.",
            number, text_column, unit,
        )
    if external_id:
        external_id = _clean(external_id.strip(), number, "id", unit, max_chars)
        if len(external_id) > EXTERNAL_ID_MAX_CHARS:
            raise ImportRejected(f"ids can be at most {EXTERNAL_ID_MAX_CHARS} characters.", number, "id", unit)
    labels = None
    if raw_labels or raw_labels == []:  # an empty cell or a null is no label; `[]` is an empty set
        try:
            labels = _split_labels(raw_labels)
        except ValueError as exc:
            raise ImportRejected(str(exc), number, label_column, unit) from None
    return number, external_id, title, text, digest, labels, label_column


def _sniff_delimiter(header_line: str) -> str:
    # Spreadsheets in many locales export ';'-separated "CSV"; TSV uses tabs.
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


class _Pushback:
    """Feeds the csv module one line we already hold, then the rest of the file: only lines
    with quotes go through it (a quoted field may run over several lines)."""

    def __init__(self, lines: Iterator[str]):
        self.lines, self.first = lines, None

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.first is not None:
            line, self.first = self.first, None
            return line
        return next(self.lines)


class _CsvLayout:
    """Where each column is, from the header row."""

    def __init__(self, header: list[str]):
        self.columns = [h.strip().lower() for h in header]
        for name in self.columns:
            _clean(name, 1, "", "row")
        _check_columns(self.columns)
        at = {name: i for i, name in enumerate(self.columns)}
        self.width = len(self.columns)
        self.text_column = next(c for c in TEXT_COLUMNS if c in at)
        self.label_column = next((c for c in LABEL_COLUMNS if c in at), None)
        self.i_text, self.i_title, self.i_id = at[self.text_column], at.get("title"), at.get("id")
        self.i_label = at.get(self.label_column)


def _csv_rows(lines: Iterator[str], max_bytes: list[int]) -> Iterator[tuple]:
    max_field = _limit("IMPORT_MAX_FIELD_CHARS", 100_000)
    first = next(lines, None)
    if first is None or not first.strip():
        raise ImportRejected("the file is empty; it needs a header row and at least one item.")
    delimiter = _sniff_delimiter(first)
    feed = _Pushback(lines)
    reader = csv.reader(feed, delimiter=delimiter, strict=True)
    feed.first = first
    try:
        layout = _CsvLayout(next(reader))
    except csv.Error as exc:
        raise ImportRejected(f"the header row is not valid CSV ({exc}).", 1) from None
    # A line holds at most every field at full length (4 bytes a character), quoted.
    max_bytes[0] = layout.width * (4 * max_field + 3) + 2
    limit_before = csv.field_size_limit(max_field + 1)
    try:
        yield from _csv_records(lines, feed, reader, delimiter, layout)
    finally:
        csv.field_size_limit(limit_before)


def _csv_records(lines, feed, reader, delimiter, layout):
    max_field = _limit("IMPORT_MAX_FIELD_CHARS", 100_000)
    width, i_text, i_title, i_id, i_label = layout.width, layout.i_text, layout.i_title, layout.i_id, layout.i_label
    number, empty = 1, 0
    for line in lines:
        number += 1
        if '"' in line:
            feed.first = line
            try:
                values = next(reader)
            except csv.Error as exc:
                raise _csv_error(exc, number) from None
        else:
            # No quotes: the csv module would split exactly here, several times slower.
            values = line.rstrip("\r\n").split(delimiter)
        if len(values) == width and (values[i_text].strip() or any(v.strip() for v in values)):
            yield _record(
                number,
                values[i_id] if i_id is not None else "",
                values[i_title] if i_title is not None else "",
                values[i_text],
                values[i_label] if i_label is not None else None,
                layout.label_column,
                layout.text_column,
                max_field,
            )
            continue
        if len(values) != width and any(v.strip() for v in values):
            raise ImportRejected(
                f"expected {width} fields as in the header ({', '.join(layout.columns)}), found "
                f"{len(values)}. Check for an unquoted {_delimiter_name(delimiter)} or a missing field.",
                number,
            )
        empty += 1
        if empty > MAX_EMPTY_ROWS:
            raise ImportRejected(f"more than {MAX_EMPTY_ROWS:,} empty rows; remove them.", number)


def _delimiter_name(delimiter: str) -> str:
    return {",": "comma", ";": "semicolon", "\t": "tab"}[delimiter]


def _csv_error(exc: csv.Error, number: int) -> ImportRejected:
    message = str(exc)
    if "field larger than field limit" in message:
        limit = _limit("IMPORT_MAX_FIELD_CHARS", 100_000)
        return ImportRejected(
            f"a field is longer than {limit:,} characters, or a quote opened here is never closed.", number
        )
    if "unexpected end of data" in message:
        return ImportRejected("a quoted field opened in this row is never closed (the file ends inside it).", number)
    return ImportRejected(
        f"broken CSV ({message}). Check the quoting: a field with commas, quotes or line breaks "
        "must be wrapped in double quotes, and quotes inside it doubled (\"\").",
        number,
    )


def _check_columns(columns: list[str]) -> None:
    if not any(c in columns for c in TEXT_COLUMNS):
        found = ", ".join(repr(c) for c in columns[:10]) or "nothing"
        raise ImportRejected(
            f"missing column 'description' (or 'text'): the header must name title and description; found {found}.",
            1,
        )
    duplicated = sorted({c for c in columns if c and columns.count(c) > 1})
    if duplicated:
        raise ImportRejected(f"the header names {', '.join(duplicated)} more than once.", 1)


def _jsonl_rows(lines: Iterator[str], max_bytes: list[int]) -> Iterator[tuple]:
    # A line holds a few fields at full length; JSON escapes (\uXXXX) take up to 6 bytes each.
    max_field = _limit("IMPORT_MAX_FIELD_CHARS", 100_000)
    max_bytes[0] = (len(TEXT_COLUMNS) + 3) * (6 * max_field + 3)
    number, empty = 0, 0
    for line in lines:
        number += 1
        if not line.strip():
            empty += 1
            if empty > MAX_EMPTY_ROWS:
                raise ImportRejected(f"more than {MAX_EMPTY_ROWS:,} empty lines; remove them.", number, unit="line")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            bad = _BAD_CHAR.search(line)
            if bad:
                raise _bad_character(bad.group(), bad.start(), number, "", "line") from None
            raise ImportRejected(f"not valid JSON ({exc.msg} at character {exc.colno}).", number, unit="line") from None
        if not isinstance(record, dict):
            raise ImportRejected(
                f"each line must be a JSON object like {{\"title\": …, \"text\": …}}, not {_json_type(record)}.",
                number, unit="line",
            )
        yield _jsonl_record(number, {str(k).strip().lower(): v for k, v in record.items()}, max_field)


def _jsonl_record(number: int, record: dict, max_chars: int) -> tuple:
    text_column = next((c for c in TEXT_COLUMNS if c in record), None)
    if text_column is None:
        raise ImportRejected("missing field 'text' (or 'description').", number, "text", "line")
    # The first label field with names in it; failing that, one holding an empty list (an empty
    # set, see Importer._label_ids).
    label_column = next((c for c in LABEL_COLUMNS if record.get(c) not in (None, "", [])), None) or next(
        (c for c in LABEL_COLUMNS if record.get(c) == []), None
    )
    return _record(
        number,
        _json_str(record, "id", number),
        _json_str(record, "title", number),
        _json_str(record, text_column, number),
        record[label_column] if label_column else None,
        label_column,
        text_column,
        max_chars,
        "line",
    )


def _json_str(record: dict, key: str, number: int) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ImportRejected(f"must be a string, not {_json_type(value)}.", number, key, "line")


def _json_type(value) -> str:
    kinds = {dict: "an object", list: "a list", bool: "a boolean", str: "a string", type(None): "null"}
    return kinds.get(type(value), "a number")


def read_rows(stream: BinaryIO, filename: str = "") -> tuple[str, Iterator[tuple]]:
    """The file's format and an iterator of validated rows; nothing is read past what is asked."""
    head = stream.read(SNIFF_BYTES)
    fmt = detect_format(head, filename)
    max_bytes = [HEADER_MAX_BYTES]
    lines = _lines(head, stream, max_bytes)
    return fmt, (_jsonl_rows(lines, max_bytes) if fmt == "jsonl" else _csv_rows(lines, max_bytes))


# --- deduplication --------------------------------------------------------------------------


def dedupe_key(title: str, text: str) -> str:
    """`models.content_hash(title, text)`, the same value, faster for plain ASCII (most rows)."""
    title, text = title.strip(), text.strip()
    if title.isascii() and text.isascii() and title.isprintable() and text.isprintable():
        return _printable_ascii_key(title, text)
    return content_hash(title, text)


def _printable_ascii_key(title: str, text: str) -> str:
    # For printable ASCII, stripped: NFKC changes nothing and the only whitespace is the space,
    # so the model's regex collapse of whitespace runs is a split-and-join, needed only for "  ".
    if "  " in title:
        title = " ".join(title.split())
    if "  " in text:
        text = " ".join(text.split())
    return hashlib.blake2b(f"{title}\x1f{text}".lower().encode(), digest_size=16).hexdigest()


# --- writing ------------------------------------------------------------------------------------
# Writes skip the ORM's per-object work, which costs more than the database itself at this volume.
# A writer `prepare`s a batch on the importing thread (consuming the row iterator, so a bad row
# raises there) and `store`s it, with its gold labels, on a second thread while the next batch is
# parsed: the database's time and Python's time overlap instead of adding up. Both threads use
# the one connection, never at the same moment, inside the import's single transaction.

# The Item columns a row sets; every other column takes the model's default.
ROW_FIELDS = ("external_id", "title", "text", "content_hash", "status", "rank", "open_slots")
OPEN, GOLD = Item.Status.OPEN.value, Item.Status.GOLD.value


def _column(model, name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(name).column)


def _defaults(instance: models.Model, skip: tuple[str, ...]) -> list[tuple[models.Field, object]]:
    """(field, value) for each column an unsaved `instance` fills by default; NULLs are left out
    (an omitted column is NULL), so raw inserts need no per-type NULL handling."""
    out = []
    for f in instance._meta.concrete_fields:
        if f.primary_key or f.name in skip:
            continue
        value = getattr(instance, f.attname)
        if value is not None:
            out.append((f, value))
    return out


class _Writer:
    """Any database: `executemany` of one prepared INSERT, on the importing thread.

    Everything a writer needs from Django (SQL text, quoted names, the raw connection) is read in
    `__init__`/`__enter__` on the importing thread: `django.db.connection` is per thread, so the
    second thread would get a different, unconnected one."""

    pipelined = False
    placeholder = "%s"

    def __init__(self, project: Project):
        self.project = project
        self.item_defaults = _defaults(Item(project=project), ROW_FIELDS)
        gold_defaults = _defaults(
            GoldLabel(project=project, categories=[], source=GoldLabel.Source.IMPORT,
                      guidelines_version=project.guidelines_version),
            ("item", "categories"),
        )
        self.item_table = connection.ops.quote_name(Item._meta.db_table)
        self.item_columns = [_column(Item, n) for n in ROW_FIELDS] + [
            connection.ops.quote_name(f.column) for f, _ in self.item_defaults
        ]
        self.item_values = tuple(f.get_db_prep_save(v, connection) for f, v in self.item_defaults)
        self.gold_values = tuple(f.get_db_prep_save(v, connection) for f, v in gold_defaults)
        gold_columns = [_column(GoldLabel, "item"), _column(GoldLabel, "categories")] + [
            connection.ops.quote_name(f.column) for f, _ in gold_defaults
        ]
        self.gold_into = f"INSERT INTO {connection.ops.quote_name(GoldLabel._meta.db_table)} ({', '.join(gold_columns)}) "
        self.item_id, self.item_project, self.item_hash = (_column(Item, n) for n in ("id", "project", "content_hash"))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def prepare(self, rows) -> list[tuple]:
        return [row + self.item_values for row in rows]

    def store(self, payload, golds: list[tuple[str, str]]) -> None:
        """`golds`: (content hash, categories as JSON) of this batch's labelled items."""
        with connection.cursor() as cursor:
            if payload:
                cursor.executemany(self._insert_sql(), payload)
            if golds:
                cursor.executemany(self._gold_sql(), self._gold_params(golds))

    def _insert_sql(self) -> str:
        p = self.placeholder
        return f"INSERT INTO {self.item_table} ({', '.join(self.item_columns)}) VALUES ({', '.join([p] * len(self.item_columns))})"

    def _gold_sql(self) -> str:
        """One gold label, its item found by content hash (ids of rows just inserted are unknown)."""
        p = self.placeholder
        return (
            f"{self.gold_into}SELECT i.{self.item_id}, {p}{f', {p}' * len(self.gold_values)} "
            f"FROM {self.item_table} i WHERE i.{self.item_project} = {p} AND i.{self.item_hash} = {p}"
        )

    def _gold_params(self, golds):
        return [(labels, *self.gold_values, self.project.pk, digest) for digest, labels in golds]


class _SqliteWriter(_Writer):
    """SQLite: many rows per INSERT statement, so each statement runs in C with the GIL released
    (executemany takes the GIL back for every row, which would stall the pipeline), and a larger
    page cache while the import runs."""

    pipelined = True
    placeholder = "?"
    # The unique content-hash index takes random inserts: with SQLite's default 2 MB page cache a
    # large import spends most of its time evicting and re-reading index pages.
    CACHE_KIB = 256 * 1024

    def __enter__(self):
        self.raw = connection.connection
        self.cache_before = self.raw.execute("PRAGMA cache_size").fetchone()[0]
        self.raw.execute(f"PRAGMA cache_size = -{self.CACHE_KIB}")
        # Rows per statement: as many as SQLite's limit on bound values allows, up to 2,000.
        limit = self.raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self.rows_per_statement = max(1, min(2000, limit // len(ROW_FIELDS)))
        # The defaults are SQL literals: only the ROW_FIELDS are bound, so more rows fit.
        self.one_row = f"({', '.join(['?'] * len(ROW_FIELDS))}, {', '.join(_sqlite_literal(v) for v in self.item_values)})"
        self.sql_for = {}
        self.gold_sql = self._gold_sql()
        return self

    def __exit__(self, *exc_info):
        self.raw.execute(f"PRAGMA cache_size = {int(self.cache_before)}")

    def prepare(self, rows) -> list[tuple[str, list]]:
        """(SQL, flat values) per statement."""
        batch, n, statements = list(rows), self.rows_per_statement, []
        for at in range(0, len(batch), n):
            part = batch[at:at + n]
            statements.append((self._sql(len(part)), [value for row in part for value in row]))
        return statements

    def _sql(self, rows: int) -> str:
        if rows not in self.sql_for:
            self.sql_for[rows] = (
                f"INSERT INTO {self.item_table} ({', '.join(self.item_columns)}) VALUES {', '.join([self.one_row] * rows)}"
            )
        return self.sql_for[rows]

    def store(self, payload, golds) -> None:
        for sql, values in payload:
            self.raw.execute(sql, values)
        if golds:
            self.raw.executemany(self.gold_sql, self._gold_params(golds))


def _sqlite_literal(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


class _CopyWriter(_Writer):
    """PostgreSQL (psycopg2): one COPY per batch, several times faster than any INSERT."""

    pipelined = True

    def __enter__(self):
        self.raw = connection.connection
        self.copy_sql = f"COPY {self.item_table} ({', '.join(self.item_columns)}) FROM STDIN"
        self.tail = "".join("\t" + _copy_text(_copy_value(v)) for _, v in self.item_defaults) + "\n"
        # Each label's item looked up on its own by (project, hash), a unique index probe: as a
        # plain join the planner, holding statistics from before the import (the new project
        # has no rows yet), walked all of the project's items for every batch, so a 1M import
        # slowed to ~1,300 items/s. OFFSET 0 keeps the lookup from being flattened into a join.
        self.gold_sql = (
            f"{self.gold_into}SELECT i.{self.item_id}, g.labels::jsonb{', %s' * len(self.gold_values)} "
            f"FROM unnest(%s::text[], %s::text[]) AS g(digest, labels) CROSS JOIN LATERAL ("
            f"SELECT {self.item_id} FROM {self.item_table} "
            f"WHERE {self.item_project} = %s AND {self.item_hash} = g.digest OFFSET 0) i"
        )
        # Foreign keys are checked as each batch is stored (on the second thread), not all at
        # once at commit while nothing else runs. Only this transaction is affected.
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        return self

    def prepare(self, rows) -> str:
        """The batch in COPY's text format."""
        lines, tail = [], self.tail
        for external_id, title, text, digest, status, rank, slots in rows:
            # Printable text without backslashes (nearly every row) needs no escaping.
            if not (title.isprintable() and text.isprintable() and external_id.isprintable()) or (
                "\\" in title or "\\" in text or "\\" in external_id
            ):
                external_id, title, text = _copy_text(external_id), _copy_text(title), _copy_text(text)
            lines.append(f"{external_id}\t{title}\t{text}\t{digest}\t{status}\t{rank}\t{slots}{tail}")
        return "".join(lines)

    def store(self, payload: str, golds) -> None:
        with self.raw.cursor() as cursor:
            if payload:
                cursor.copy_expert(self.copy_sql, io.StringIO(payload), 1 << 20)
            if golds:
                cursor.execute(
                    self.gold_sql, (*self.gold_values, [d for d, _ in golds], [c for _, c in golds], self.project.pk)
                )


def _copy_text(value: str) -> str:
    """A value in COPY's text format: backslash, tab and line breaks escaped."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_value(value) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _writer_for(project: Project) -> _Writer:
    if connection.vendor == "sqlite":
        return _SqliteWriter(project)
    if connection.vendor == "postgresql":
        from django.db.backends.postgresql.psycopg_any import is_psycopg3

        if not is_psycopg3:
            return _CopyWriter(project)
    return _Writer(project)


class _Pipeline:
    """Runs `store` calls one after another on a second thread, at most one batch waiting, so
    memory stays at a few batches. The first failure stops the work and is raised here."""

    def __init__(self, store):
        self.store, self.error, self.aborted = store, None, False
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.thread = threading.Thread(target=self._work, name="import-writer", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def submit(self, *args) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(args, timeout=0.2)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.error is None and not self.aborted:
                try:
                    self.store(*job)
                except BaseException as exc:  # noqa: BLE001 — handed to the importing thread
                    self.error = exc

    def __exit__(self, exc_type, exc, tb):
        # Whatever happens, the second thread is done with the connection before the
        # transaction commits or rolls back.
        self.aborted = exc_type is not None
        self.queue.put(None)
        self.thread.join()
        if exc_type is None and self.error is not None:
            raise self.error


class _Inline:
    """The same interface as `_Pipeline`, storing on the importing thread (it needs the
    connection between batches, to look up what the project already holds)."""

    def __init__(self, store):
        self.submit = store

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None


class _Importer:
    """Turns validated rows into Items (and gold labels), skipping duplicates, one batch at a time."""

    def __init__(self, project: Project, unit: str):
        self.project, self.unit = project, unit
        self.k = project.annotations_per_item
        self.single_label = project.mode == Project.Mode.SINGLE
        self.accepts_empty = project.accepts_empty_label()
        categories = list(Category.objects.filter(project=project))
        self.categories = {c.name.lower(): c.id for c in categories}
        self.category_names = ", ".join(sorted(c.name for c in categories))
        self.random_order = project.order == Project.Order.RANDOM
        existing = Item.objects.filter(project=project).aggregate(rank=Max("rank"), any=Max("id"))
        self.rank = existing["rank"] or 0
        # An empty project needs no database lookups: the in-file sets see every duplicate, and
        # the batch can stream straight into the database as it is parsed.
        self.check_database = existing["any"] is not None
        self.writer = _writer_for(project)
        self.batch_size = _limit("IMPORT_BATCH_SIZE", 5000)
        self.max_rows = _limit("IMPORT_MAX_ROWS", 5_000_000)
        self.seen_hashes: set[str] = set()
        self.seen_ids: set[str] = set()
        self.rows = 0
        self.result = ImportResult()
        self.golds: list[tuple[str, str]] = []
        self.exhausted = False

    def run(self, rows: Iterator[tuple]) -> ImportResult:
        rows = iter(rows)
        # Looking up known rows needs the connection between batches: no second thread then.
        stage = _Pipeline if self.writer.pipelined and not self.check_database else _Inline
        with self.writer, stage(self.writer.store) as pipeline:
            while not self.exhausted:
                batch = self._batch(rows)
                if self.check_database:
                    batch = self._drop_known(list(batch))
                pipeline.submit(self.writer.prepare(batch), self.golds)
                self.result.gold_labels += len(self.golds)
                self.golds = []
        if not self.rows:
            raise ImportRejected("the file has no items (only a header, or nothing but empty rows).")
        return self.result

    def _batch(self, rows: Iterator[tuple]) -> Iterator[tuple]:
        """Up to one batch of new items (Item column values in ROW_FIELDS order). The hot loop:
        run once per row of the file, so it keeps its state in local names."""
        left, k, result, max_rows = self.batch_size, self.k, self.result, self.max_rows
        seen_hashes, seen_ids, golds = self.seen_hashes, self.seen_ids, self.golds
        for number, external_id, title, text, digest, labels, label_column in rows:
            self.rows += 1
            if self.rows > max_rows:
                raise ImportRejected(f"more than {max_rows:,} items; split the file.", number, unit=self.unit)
            label_ids = self._label_ids(labels, number, label_column) if labels is not None else None
            if digest in seen_hashes or (external_id and external_id in seen_ids):
                result.duplicates += 1
                continue
            seen_hashes.add(digest)
            if external_id:
                seen_ids.add(external_id)
            if self.random_order:
                rank = random.getrandbits(62)
            else:
                self.rank += 1
                rank = self.rank
            result.created += 1
            if label_ids:
                golds.append((digest, label_ids))
                yield (external_id, title, text, digest, GOLD, rank, 0)
            else:
                yield (external_id, title, text, digest, OPEN, rank, k)
            left -= 1
            if not left:
                return
        self.exhausted = True

    def _label_ids(self, labels: list[str], number: int, column: str) -> str | None:
        if self.single_label and len(labels) > 1:
            raise ImportRejected(
                f"{len(labels)} labels ({'; '.join(labels)}) but project '{self.project.slug}' is "
                "single-label: give one label per row, or make the project multi-label.",
                number, column, self.unit,
            )
        ids = set()
        for label in labels:
            category_id = self.categories.get(label.lower())
            if category_id is None:
                raise ImportRejected(
                    f"unknown label {label!r}; expected one of: {self.category_names}.", number, column, self.unit
                )
            ids.add(category_id)
        if not ids:
            # An explicit empty list: the "none of these" answer where the project has it (our own
            # exports write it so); elsewhere an unlabeled item, as other tools' empty lists mean.
            return "[]" if self.accepts_empty else None
        return json.dumps(sorted(ids))

    def _drop_known(self, batch: list[tuple]) -> list[tuple]:
        """Rows already in the project (an earlier import of the same data) are duplicates too."""
        items = Item.objects.filter(project=self.project)
        known_hashes = set(items.filter(content_hash__in=[r[3] for r in batch]).values_list("content_hash", flat=True))
        ids = [r[0] for r in batch if r[0]]
        known_ids = set(items.filter(external_id__in=ids).values_list("external_id", flat=True)) if ids else set()
        if not known_hashes and not known_ids:
            return batch
        fresh = [r for r in batch if r[3] not in known_hashes and r[0] not in known_ids]
        self.result.duplicates += len(batch) - len(fresh)
        self.result.created -= len(batch) - len(fresh)
        kept = {r[3] for r in fresh}
        self.golds = [g for g in self.golds if g[0] in kept]
        return fresh


def import_items(project: Project, stream: BinaryIO, filename: str = "", size: int | None = None) -> ImportResult:
    """Import every row of `stream` into `project`, or nothing at all."""
    if size is not None and size > _limit("IMPORT_MAX_BYTES", 512 * 1024 * 1024):
        raise _too_large(size)
    started = time.perf_counter()
    fmt, rows = read_rows(stream, filename)
    with transaction.atomic(durable=True):
        # One import per project at a time: a second import of the same file waits here, then
        # finds every row already present and counts them as duplicates. NO KEY: annotators'
        # inserts that reference the project (foreign keys) are not blocked meanwhile.
        Project.objects.select_for_update(no_key=True).filter(pk=project.pk).first()
        result = _Importer(project, "line" if fmt == "jsonl" else "row").run(rows)
        # What the workers do once the items are committed, in one message: a hung broker holds
        # the import up for one publish's timeout, not one per follow-up.
        follow_up_import.delay_on_commit(
            project.pk, new_items=result.created > 0, new_gold=result.gold_labels > 0
        )
    if result.created >= _limit("IMPORT_ANALYZE_MIN_ROWS", 10_000):
        refresh_planner_statistics()
    result.seconds = time.perf_counter() - started
    result.format = fmt
    return result


def refresh_planner_statistics() -> None:
    """Sample the tables an import writes, so PostgreSQL plans for what they now hold.

    A large import changes the item table's size and shape at once. Autovacuum would analyze it
    within a minute or so, and where it is off (as on the development servers) never: until then
    the planner works from the statistics of the table before the import, or from none. Columns of
    long text are left out: no query filters on them, so their statistics would be wasted work."""
    if connection.vendor != "postgresql":
        return  # SQLite's planner does well here without statistics
    tables = []
    for model in (Item, GoldLabel):
        columns = [
            connection.ops.quote_name(f.column)
            for f in model._meta.concrete_fields
            if not isinstance(f, (models.TextField, models.JSONField))
        ]
        tables.append(f"{connection.ops.quote_name(model._meta.db_table)} ({', '.join(columns)})")
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {', '.join(tables)}")
    except DatabaseError:
        # The items are committed; out-of-date statistics only make some queries slower.
        logger.warning("ANALYZE after the import failed; the planner keeps its old statistics.", exc_info=True)


def import_with_history(project: Project, stream: BinaryIO, filename: str, user=None, size=None) -> ImportJob:
    """Run an import and keep a record of it (for the import page), success or failure."""
    job = ImportJob.objects.create(project=project, created_by=user, filename=filename[:255])
    try:
        result = import_items(project, stream, filename, size=size)
    except ImportRejected as exc:
        job.status, job.error = ImportJob.Status.FAILED, str(exc)
    except Exception:
        # Not the file's fault (the database went away, a bug): the history must not show the
        # import as still running. The transaction rolled back, so nothing was imported.
        job.status, job.error = ImportJob.Status.FAILED, "The import failed unexpectedly; nothing was imported."
        job.finished_at = timezone.now()
        job.save()
        raise
    else:
        job.status = ImportJob.Status.DONE
        job.created, job.duplicates, job.gold_labels = result.created, result.duplicates, result.gold_labels
    job.finished_at = timezone.now()
    job.save()
    return job
