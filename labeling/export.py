"""Export a project's gold dataset: CSV, JSON Lines or Parquet, streamed in constant memory.

One row per gold item, in item order. Rows are read from the database `EXPORT_CHUNK_ROWS` at a
time (a server-side cursor on PostgreSQL, chunked `fetchmany` on SQLite); the provenance of each
chunk (the annotations of the current round, the annotators' and reviewers' names) is fetched
with one query per chunk, never one per row. Nothing holds more than one chunk.

Two shapes:
- full: ids, title, text, final labels, split and provenance (how the label was decided, who
  labeled what, who reviewed, whether a model's suggestion was shown, guideline version, times);
- labels only (`labels_only`): `id,title,description,tag`, the shape training scripts expect and
  `labeling.importer` reads back.

Spreadsheet safety (CSV only): a cell that starts with `=`, `+`, `-`, `@`, tab or carriage return
gets a leading `'`, so Excel or LibreOffice show it as text instead of running it as a formula.
The trade-off: such text (a title like "-based methods" or "+1 for this") comes back from a CSV
re-import with the `'` in front. Ordinary text is untouched. JSON Lines and Parquet are never
escaped, so they round-trip every text exactly; prefer them for pipelines.

Exports bigger than `EXPORT_ASYNC_ROWS` run in a Celery job (`labeling.tasks_export`) that writes
the file under `EXPORT_DIR`; the job's state (status, progress, error) is a small JSON file next
to it, `<job id>.json`, since the export has no table of its own.
"""
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from django.db.models import F, Func, TextField

from .models import Annotation, Category, Item, Project

FORMATS = ("csv", "jsonl", "parquet")
SPLITS = ("all", "train", "holdout")
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
LABELS_ONLY_COLUMNS = ("id", "title", "description", "tag")
# The flat CSV shape of a full export; JSON Lines and Parquet carry the same fields, with
# lists where CSV joins with ';' and every annotation's details nested under `annotations`.
FULL_CSV_COLUMNS = (
    "item_id", "id", "title", "text", "labels", "label", "split",
    "source", "decided_by", "decided_at", "guidelines_version",
    "annotators", "annotator_labels", "suggestion_shown", "model_versions",
    "reviewer", "review_decision", "review_note", "reviewed_at", "item_created_at",
)
FORMULA_START = frozenset("=+-@\t\r")


class ExportError(ValueError):
    """The export cannot run as asked; `str()` says what to change."""


@dataclass(frozen=True)
class ExportSpec:
    project: Project
    format: str = "csv"
    split: str = "all"
    labels_only: bool = False

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ExportError(f"Unknown format {self.format!r}; use one of {', '.join(FORMATS)}.")
        if self.split not in SPLITS:
            raise ExportError(f"Unknown split {self.split!r}; use one of {', '.join(SPLITS)}.")
        if self.format == "parquet":
            _require_pyarrow()

    @property
    def multi_label(self) -> bool:
        return self.project.mode == Project.Mode.MULTI

    def filename(self, now: datetime | None = None) -> str:
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
        shape = "-labels" if self.labels_only else ""
        return f"{self.project.slug}-gold-{self.split}{shape}-{stamp}.{self.format}"


def _require_pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ExportError(
            "Parquet export needs pyarrow: `pip install pyarrow` (or export csv / jsonl)."
        ) from None


# --- reading ----------------------------------------------------------------------------------
# A gold item is an item with status "gold" and its GoldLabel (the actions set both together).
# Reading through Item keeps SQLite on the (project, status) index, already in id order: no sort.


def gold_items(project: Project, split: str = "all"):
    items = Item.objects.filter(project=project, status=Item.Status.GOLD, gold__isnull=False)
    if split != "all":
        items = items.filter(split=split)
    return items


def count_gold(project: Project, split: str = "all") -> int:
    """How many rows an export of `split` has (one per gold item)."""
    return gold_items(project, split).count()


_LABELS_FIELDS = ("id", "external_id", "title", "text", "gold__categories")
_FULL_FIELDS = _LABELS_FIELDS + (
    "split", "created_at", "gold__source", "gold__decided_by", "gold__decided_at",
    "gold__guidelines_version", "gold__review__reviewer", "gold__review__decision", "gold__review__note",
    "gold__review__created_at",
)
_ANNOTATION_FIELDS = (
    "item_id", "annotator", "categories", "suggestion_shown", "model_version_id",
    "suggested_category", "duration_ms", "guidelines_version", "created_at",
)
_TIMESTAMPS = frozenset(["created_at", "gold__decided_at", "gold__review__created_at"])


class _IsoText(Func):
    """A timestamp as the database's own ISO 8601 text in UTC, exactly what `isoformat()` of the
    aware datetime gives ("…T04:05:13.943799+00:00", no fraction when it is zero); NULL stays NULL.
    Formatting a million timestamps in Python costs more than the rest of their rows."""

    # SQLite stores Django's UTC text, "YYYY-MM-DD HH:MM:SS[.ffffff]".
    template = "REPLACE(%(expressions)s, ' ', 'T') || '+00:00'"
    output_field = TextField()

    def as_postgresql(self, compiler, connection, **extra):
        template = (
            "TO_CHAR(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
            " || CASE WHEN TO_CHAR(%(expressions)s, 'US') = '000000' THEN ''"
            " ELSE '.' || TO_CHAR(%(expressions)s, 'US') END || '+00:00'"
        )
        return self.as_sql(compiler, connection, template=template, **extra)


def _readable(queryset, fields) -> tuple[list, bool]:
    """`fields` for a raw read, and whether its timestamps still need `_moment` (databases
    other than SQLite and PostgreSQL hand back datetimes)."""
    if connections[queryset.db].vendor not in ("sqlite", "postgresql"):
        return list(fields), True
    return [_IsoText(name) if name in _TIMESTAMPS else name for name in fields], False


def _raw_chunks(queryset, size: int, server_side: bool = True) -> Iterator[list[tuple]]:
    """The queryset's rows as the driver returns them, `size` at a time.

    Like `QuerySet.iterator()` (a server-side cursor on PostgreSQL unless disabled), but without
    Django's per-value converters: parsing every timestamp and JSON list costs more than all the
    rest of an export, and the values are turned straight into text anyway (`_IsoText`, `_Names`).
    """
    connection = connections[queryset.db]
    sql, params = queryset.query.sql_with_params()
    server_side = server_side and not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    with (connection.chunked_cursor() if server_side else connection.cursor()) as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(size):
            yield rows


def _moment(value: datetime | None) -> str | None:
    """A timestamp as ISO 8601 text in UTC."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat()


class _Memo(dict):
    """A dict that computes a missing value once: lookups of repeated values stay at C speed."""

    def __init__(self, make: Callable):
        super().__init__()
        self.make = make

    def __missing__(self, key):
        value = self[key] = self.make(key)
        return value


class _Names:
    """Label and user names: categories once, users once per chunk for the ids it needs."""

    def __init__(self, project: Project):
        self.categories = dict(Category.objects.filter(project=project).values_list("id", "name"))
        self.users: dict = {None: ""}
        # Stored category lists (JSON text as the driver returns it) to names; few distinct exist.
        self.labels = _Memo(self._decode)

    def _decode(self, raw) -> tuple[str, ...]:
        ids = json.loads(raw) if isinstance(raw, str) else raw
        # A label whose category was deleted keeps its id, so the row is still complete.
        return tuple(self.categories.get(c) or str(c) for c in ids)

    def load_users(self, ids) -> None:
        missing = set(ids) - self.users.keys()
        if missing:
            found = dict(get_user_model().objects.filter(pk__in=missing).values_list("pk", "username"))
            self.users.update({pk: found.get(pk, str(pk)) for pk in missing})


def _annotations_by_item(project: Project, chunk_ids: list[int]) -> dict[int, list[tuple]]:
    """The counting annotations of a chunk's items: current round, not rejected, not honeypot checks.

    Chunks are runs of consecutive gold items, so an id range (not a 5,000-value IN list, whose
    parameters alone cost more than the query) finds their annotations on the item index.
    """
    wanted = set(chunk_ids)
    found: dict[int, list[tuple]] = {}
    annotations = Annotation.objects.filter(
        item__project=project, item_id__gte=chunk_ids[0], item_id__lte=chunk_ids[-1],
        round=F("item__round"), rejected=False, is_honeypot=False,
    ).order_by("item_id", "created_at", "id")
    fields, as_datetimes = _readable(annotations, _ANNOTATION_FIELDS)
    for rows in _raw_chunks(annotations.values_list(*fields), 10_000, server_side=False):
        for row in rows:
            if row[0] in wanted:
                if as_datetimes:
                    row = row[:8] + (_moment(row[8]),)
                found.setdefault(row[0], []).append(row)
    return found


# Rows, one tuple per gold item, in these shapes (every value final: names, ISO text times):
#   labels only: (id, title, text, labels)
#   full: (item_id, id, title, text, labels, split, source, decided_by, decided_at,
#          guidelines_version, annotations, suggestion_shown, model_versions, review, item_created_at)
#   annotation: (annotator, labels, suggestion_shown, model_version, suggested_label, duration_ms,
#                guidelines_version, created_at); review: (reviewer, decision, note, created_at) or None


def gold_rows(spec: ExportSpec) -> Iterator[list[tuple]]:
    """The export's rows, one list per chunk of `EXPORT_CHUNK_ROWS`, in item order."""
    size = settings.LABELLOOP["EXPORT_CHUNK_ROWS"]
    names = _Names(spec.project)
    items = gold_items(spec.project, spec.split).order_by("id")
    fields, as_datetimes = _readable(items, _LABELS_FIELDS if spec.labels_only else _FULL_FIELDS)
    for chunk in _raw_chunks(items.values_list(*fields), size):
        if spec.labels_only:
            labels = names.labels
            yield [
                (external_id or str(pk), title, text, labels[raw])
                for pk, external_id, title, text, raw in chunk
            ]
        else:
            yield _full_rows(spec.project, names, chunk, as_datetimes)


def _full_rows(project: Project, names: _Names, chunk, as_datetimes: bool) -> list[tuple]:
    annotations = _annotations_by_item(project, [row[0] for row in chunk])
    names.load_users(
        [row[8] for row in chunk] + [row[11] for row in chunk]  # decided_by, reviewer
        + [a[1] for found in annotations.values() for a in found]
    )
    users, labels, categories = names.users, names.labels, names.categories
    rows = []
    for (pk, external_id, title, text, raw, split, created_at, source, decided_by,
         decided_at, guidelines_version, reviewer, decision, note, reviewed_at) in chunk:
        if as_datetimes:
            created_at, decided_at = _moment(created_at), _moment(decided_at)
            reviewed_at = _moment(reviewed_at)
        found = annotations.get(pk)
        if found:
            done = tuple(
                (users[a[1]], labels[a[2]], bool(a[3]), a[4], categories.get(a[5]) if a[5] else None,
                 a[6], a[7], a[8])
                for a in found
            )
            shown = any(a[2] for a in done)
            versions = tuple(sorted({a[3] for a in done if a[3] is not None}))
        else:
            done, shown, versions = (), False, ()
        rows.append((
            pk, external_id or str(pk), title, text, labels[raw], split, source, users[decided_by],
            decided_at, guidelines_version, done, shown, versions,
            (users[reviewer], decision, note, reviewed_at) if decision else None, created_at,
        ))
    return rows


def records(spec: ExportSpec) -> Iterator[list[dict]]:
    """The rows as dicts (the JSON Lines objects), one list per chunk."""
    to_record = _labels_record if spec.labels_only else _full_record
    for rows in gold_rows(spec):
        yield [to_record(spec, row) for row in rows]


def _labels_record(spec: ExportSpec, row: tuple) -> dict:
    external_id, title, text, labels = row
    tag = list(labels) if spec.multi_label else (labels[0] if labels else "")
    return {"id": external_id, "title": title, "description": text, "tag": tag}


def _full_record(spec: ExportSpec, row: tuple) -> dict:
    (pk, external_id, title, text, labels, split, source, decided_by, decided_at, guidelines_version,
     done, shown, versions, review, created_at) = row
    record = {"item_id": pk, "id": external_id, "title": title, "text": text, "labels": list(labels)}
    if not spec.multi_label:
        record["label"] = labels[0] if labels else ""
    record.update(
        split=split,
        source=source,
        decided_by=decided_by,
        decided_at=decided_at,
        guidelines_version=guidelines_version,
        annotations=[
            dict(zip(_ANNOTATION_KEYS, (a[0], list(a[1]), *a[2:]))) for a in done
        ],
        suggestion_shown=shown,
        model_versions=list(versions),
        review=dict(zip(_REVIEW_KEYS, review)) if review else None,
        item_created_at=created_at,
    )
    return record


_ANNOTATION_KEYS = (
    "annotator", "labels", "suggestion_shown", "model_version", "suggested_label", "duration_ms",
    "guidelines_version", "created_at",
)
_REVIEW_KEYS = ("reviewer", "decision", "note", "created_at")


# --- formatting -------------------------------------------------------------------------------
# CSV and JSON Lines are written as text directly from the row tuples: the csv module and
# json.dumps cost several microseconds a row, which alone would cap an export well under the
# 100,000 rows/s it must reach. The tests hold both to the csv module's and json's reading.


def csv_cell(value: str) -> str:
    """A text value as one CSV cell: neutralised against formulas (a leading `'` when it starts
    with one of FORMULA_START), then quoted only where the format needs it."""
    if value and value[0] in FORMULA_START:
        value = "'" + value
    if '"' in value:
        return '"' + value.replace('"', '""') + '"'
    if "," in value or "\n" in value or "\r" in value:
        return '"' + value + '"'
    return value


class _Cells:
    """Cells that repeat (label lists, user names: few distinct values), formatted once per export."""

    def __init__(self, spec: ExportSpec):
        multi = spec.multi_label

        def first(names):
            return names[0] if names else ""

        def joined(names):
            # An empty set ("none of these") as the JSON list `[]`: an empty cell re-imports as
            # an unlabeled item.
            return ";".join(names) if names or not multi else "[]"

        # `labels` (';'-joined), then `label` in single-label projects; likewise in JSON.
        self.csv_labels = _Memo(
            lambda names: csv_cell(joined(names)) + ("" if multi else "," + csv_cell(first(names)))
        )
        self.json_labels = _Memo(
            lambda names: f'"labels":{_json(list(names))}'
            + ("" if multi else f',"label":{_json(first(names))}')
        )
        self.csv_tag = _Memo(lambda names: csv_cell(joined(names) if multi else first(names)))
        self.json_tag = _Memo(lambda names: _json(list(names) if multi else first(names)))
        self.csv_name = _Memo(csv_cell)
        self.json_name = _Memo(_jstr)
        self.json_list = _Memo(lambda names: _json(list(names)))


_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_jstr = json.encoder.encode_basestring  # the C string encoder json.dumps uses; quotes included



def csv_chunks(spec: ExportSpec) -> Iterator[tuple[str, int]]:
    """The CSV text as (text, rows in it): the header alone first, then one chunk of rows at a time."""
    cells = _Cells(spec)
    if spec.labels_only:
        header, to_line = LABELS_ONLY_COLUMNS, _csv_labels_line
    else:
        header = tuple(c for c in FULL_CSV_COLUMNS if c != "label" or not spec.multi_label)
        to_line = _csv_full_line
    yield ",".join(header) + "\r\n", 0
    for rows in gold_rows(spec):
        yield "".join([to_line(row, cells) for row in rows]), len(rows)


def _csv_labels_line(row: tuple, cells: _Cells) -> str:
    external_id, title, text, labels = row
    return f"{csv_cell(external_id)},{csv_cell(title)},{csv_cell(text)},{cells.csv_tag[labels]}\r\n"


def _csv_full_line(row: tuple, cells: _Cells) -> str:
    (pk, external_id, title, text, labels, split, source, decided_by, decided_at, guidelines_version,
     done, shown, versions, review, created_at) = row
    if done:
        provenance = ",".join((
            csv_cell(";".join(a[0] for a in done)),
            # Aligned with `annotators`; one annotator's several labels (multi-label) joined by '|'.
            csv_cell(";".join("|".join(a[1]) for a in done)),
            "true" if shown else "false",
            ";".join(map(str, versions)),
        ))
    else:
        provenance = ",,false,"
    if review:
        reviewer, decision, note, reviewed_at = review
        decision_cells = f"{cells.csv_name[reviewer]},{decision},{csv_cell(note)},{reviewed_at or ''}"
    else:
        decision_cells = ",,,"
    return (
        f"{pk},{csv_cell(external_id)},{csv_cell(title)},{csv_cell(text)},{cells.csv_labels[labels]},"
        f"{split},{source},{cells.csv_name[decided_by]},{decided_at},{guidelines_version},"
        f"{provenance},{decision_cells},{created_at}\r\n"
    )


def jsonl_chunks(spec: ExportSpec) -> Iterator[tuple[str, int]]:
    """The JSON Lines text as (text, rows in it), one chunk of rows at a time."""
    cells = _Cells(spec)
    to_line = _jsonl_labels_line if spec.labels_only else _jsonl_full_line
    for rows in gold_rows(spec):
        yield "".join([to_line(row, cells) for row in rows]), len(rows)


def _jsonl_labels_line(row: tuple, cells: _Cells) -> str:
    external_id, title, text, labels = row
    return (
        f'{{"id":{_jstr(external_id)},"title":{_jstr(title)},"description":{_jstr(text)},'
        f'"tag":{cells.json_tag[labels]}}}\n'
    )


_NO_PROVENANCE_JSON = '"annotations":[],"suggestion_shown":false,"model_versions":[],"review":null'


def _jsonl_full_line(row: tuple, cells: _Cells) -> str:
    (pk, external_id, title, text, labels, split, source, decided_by, decided_at, guidelines_version,
     done, shown, versions, review, created_at) = row
    if done or review:
        annotations = ",".join([_jsonl_annotation(a, cells) for a in done])
        if review:
            reviewer, decision, note, reviewed_at = review
            review_json = (
                f'{{"reviewer":{cells.json_name[reviewer]},"decision":"{decision}","note":{_jstr(note)},'
                f'"created_at":"{reviewed_at}"}}'
            )
        else:
            review_json = "null"
        provenance = (
            f'"annotations":[{annotations}],"suggestion_shown":{"true" if shown else "false"},'
            f'"model_versions":[{",".join(map(str, versions))}],"review":{review_json}'
        )
    else:
        provenance = _NO_PROVENANCE_JSON
    # decided_at and item_created_at are never empty (NOT NULL columns).
    return (
        f'{{"item_id":{pk},"id":{_jstr(external_id)},"title":{_jstr(title)},"text":{_jstr(text)},'
        f'{cells.json_labels[labels]},"split":"{split}","source":"{source}",'
        f'"decided_by":{cells.json_name[decided_by]},'
        f'"decided_at":"{decided_at}","guidelines_version":{guidelines_version},{provenance},'
        f'"item_created_at":"{created_at}"}}\n'
    )


def _jsonl_annotation(a: tuple, cells: _Cells) -> str:
    annotator, labels, shown, model_version, suggested, duration_ms, guidelines_version, created_at = a
    return (
        f'{{"annotator":{cells.json_name[annotator]},"labels":{cells.json_list[labels]},'
        f'"suggestion_shown":{"true" if shown else "false"},'
        f'"model_version":{"null" if model_version is None else model_version},'
        f'"suggested_label":{"null" if suggested is None else cells.json_name[suggested]},'
        f'"duration_ms":{duration_ms},"guidelines_version":{guidelines_version},"created_at":"{created_at}"}}'
    )


def text_chunks(spec: ExportSpec) -> Iterator[tuple[str, int]]:
    if spec.format == "parquet":
        raise ExportError("Parquet is binary; write it to a file.")
    return csv_chunks(spec) if spec.format == "csv" else jsonl_chunks(spec)


def byte_chunks(spec: ExportSpec) -> Iterator[bytes]:
    """What a streamed download sends: UTF-8 bytes, a chunk of rows at a time."""
    for text, _rows in text_chunks(spec):
        yield text.encode("utf-8")


def _parquet_schema(spec: ExportSpec):
    import pyarrow as pa

    label = pa.list_(pa.string()) if spec.multi_label else pa.string()
    if spec.labels_only:
        text = pa.string()
        return pa.schema([("id", text), ("title", text), ("description", text), ("tag", label)])
    moment = pa.timestamp("us", tz="UTC")
    annotation = pa.struct([
        ("annotator", pa.string()), ("labels", pa.list_(pa.string())), ("suggestion_shown", pa.bool_()),
        ("model_version", pa.int64()), ("suggested_label", pa.string()), ("duration_ms", pa.int64()),
        ("guidelines_version", pa.int64()), ("created_at", moment),
    ])
    review = pa.struct([
        ("reviewer", pa.string()), ("decision", pa.string()), ("note", pa.string()), ("created_at", moment),
    ])
    fields = [
        ("item_id", pa.int64()), ("id", pa.string()), ("title", pa.string()), ("text", pa.string()),
        ("labels", pa.list_(pa.string())), ("split", pa.string()), ("source", pa.string()),
        ("decided_by", pa.string()), ("decided_at", moment), ("guidelines_version", pa.int64()),
        ("annotations", pa.list_(annotation)), ("suggestion_shown", pa.bool_()),
        ("model_versions", pa.list_(pa.int64())), ("review", review), ("item_created_at", moment),
    ]
    if not spec.multi_label:
        fields.insert(5, ("label", pa.string()))
    return pa.schema(fields)


# --- writing ----------------------------------------------------------------------------------

Progress = Callable[[int], None]


def write_export(spec: ExportSpec, out: BinaryIO, progress: Progress | None = None) -> int:
    """Write the export to a binary file; returns the number of rows. `progress(rows)` after each chunk."""
    if spec.format == "parquet":
        return _write_parquet(spec, out, progress)
    written = 0
    for text, rows in text_chunks(spec):
        out.write(text.encode("utf-8"))
        written += rows
        if progress is not None and rows:
            progress(written)
    return written


def _write_parquet(spec: ExportSpec, out: BinaryIO, progress: Progress | None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema(spec)
    rows = 0
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for chunk in records(spec):
            if not spec.labels_only:
                chunk = [_with_datetimes(record) for record in chunk]
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            rows += len(chunk)
            if progress is not None:
                progress(rows)
    return rows


def _with_datetimes(record: dict) -> dict:
    """Parquet stores times as timestamps, not text."""
    when = _datetime
    record["decided_at"] = when(record["decided_at"])
    record["item_created_at"] = when(record["item_created_at"])
    for annotation in record["annotations"]:
        annotation["created_at"] = when(annotation["created_at"])
    if record["review"]:
        record["review"]["created_at"] = when(record["review"]["created_at"])
    return record


def _datetime(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def export_to_path(spec: ExportSpec, path: str | os.PathLike, progress: Progress | None = None) -> int:
    """Write the export to `path` atomically: a failed export leaves no partial file behind."""
    path = Path(path)
    partial = path.with_name(path.name + ".part")
    try:
        with partial.open("wb") as out:
            rows = write_export(spec, out, progress)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return rows


# --- background jobs --------------------------------------------------------------------------
# A job is two files in EXPORT_DIR: `<id>.json` (its state, rewritten atomically as it runs) and,
# once done, `<id>.<format>` (the export). There is no table for it; see the module docstring.

_JOB_ID_CHARS = frozenset("0123456789abcdef")
KEEP_JOBS_SECONDS = 7 * 24 * 3600


def _now_text() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class ExportJob:
    id: str
    project_id: int
    project_slug: str
    format: str
    split: str
    labels_only: bool
    status: str = "queued"  # queued → running → done | failed
    rows: int = 0
    total: int = 0
    error: str = ""
    download_name: str = ""
    created_by: str = ""
    created_at: str = field(default_factory=_now_text)
    finished_at: str = ""

    QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"

    @staticmethod
    def folder() -> Path:
        folder = Path(settings.LABELLOOP["EXPORT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def state_path(self) -> Path:
        return self.folder() / f"{self.id}.json"

    @property
    def data_path(self) -> Path:
        return self.folder() / f"{self.id}.{self.format}"

    @property
    def started(self) -> datetime:
        return datetime.fromisoformat(self.created_at)

    @property
    def finished(self) -> bool:
        return self.status in (self.DONE, self.FAILED)

    @property
    def percent(self) -> int:
        if self.status == self.DONE:
            return 100
        return min(99, int(100 * self.rows / self.total)) if self.total else 0

    def spec(self) -> ExportSpec:
        project = Project.objects.filter(pk=self.project_id).first()
        if project is None:
            raise ExportError("The project of this export no longer exists.")
        return ExportSpec(project, self.format, self.split, self.labels_only)

    def save(self) -> None:
        # Written whole then renamed, so a reader polling the progress never sees half a file.
        partial = self.state_path.with_suffix(".json.part")
        partial.write_text(json.dumps(asdict(self)), encoding="utf-8")
        os.replace(partial, self.state_path)

    @classmethod
    def load(cls, job_id: str) -> "ExportJob | None":
        if len(job_id) != 32 or not set(job_id) <= _JOB_ID_CHARS:
            return None  # never let a URL name a path outside the export folder
        try:
            state = json.loads((cls.folder() / f"{job_id}.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        try:
            return cls(**state)
        except TypeError:  # written by a different version of this code
            return None


def recent_jobs(project: Project, limit: int = 10) -> list[ExportJob]:
    states = sorted(ExportJob.folder().glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    jobs = []
    for path in states:
        job = ExportJob.load(path.stem)
        if job is not None and job.project_id == project.pk:
            jobs.append(job)
            if len(jobs) == limit:
                break
    return jobs


def prune_old_jobs(now: float | None = None) -> int:
    """Delete jobs (state and file) older than KEEP_JOBS_SECONDS: exports are re-made in seconds.
    Only files named like a job's are touched, whatever else shares the folder."""
    cutoff = (now or time.time()) - KEEP_JOBS_SECONDS
    removed = 0
    for path in ExportJob.folder().iterdir():
        job_id = path.name.split(".", 1)[0]
        ours = len(job_id) == 32 and set(job_id) <= _JOB_ID_CHARS
        if ours and path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def create_job(spec: ExportSpec, user=None) -> ExportJob:
    prune_old_jobs()
    job = ExportJob(
        id=uuid.uuid4().hex,
        project_id=spec.project.pk,
        project_slug=spec.project.slug,
        format=spec.format,
        split=spec.split,
        labels_only=spec.labels_only,
        total=count_gold(spec.project, spec.split),
        download_name=spec.filename(),
        created_by=getattr(user, "username", "") or "",
    )
    job.save()
    return job


def run_job(job_id: str) -> ExportJob | None:
    """Run a queued export job (the Celery task calls this). A finished job is left as it is."""
    job = ExportJob.load(job_id)
    if job is None or job.finished:
        return job
    job.status, job.rows, job.error = job.RUNNING, 0, ""
    job.save()
    last_saved = time.monotonic()

    def progress(rows: int) -> None:
        nonlocal last_saved
        job.rows = rows
        if time.monotonic() - last_saved >= 0.5:  # a progress bar needs no more than that
            job.save()
            last_saved = time.monotonic()

    try:
        spec = job.spec()
        job.total = count_gold(spec.project, spec.split)
        job.rows = export_to_path(spec, job.data_path, progress)
    except ExportError as exc:
        job.status, job.error = job.FAILED, str(exc)
    except Exception as exc:
        job.status = job.FAILED
        job.error = (
            f"The export failed ({exc.__class__.__name__}); the worker log has the details. Try again."
        )
        job.finished_at = _now_text()
        job.save()
        raise
    else:
        job.status = job.DONE
    job.finished_at = _now_text()
    job.save()
    return job
