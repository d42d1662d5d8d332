"""Online inference: the project's active model, loaded once per process and kept by version id.

A promotion makes a new version active; the next request sees the new id, loads that artifact
(after checking its hash, see artifacts.load_verified) and drops the project's older model from
memory. Every request is recorded in PredictLog with its latency and whether it succeeded.
"""
import functools
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from config import metrics

from . import artifacts, multilabel, training
from .models import ModelVersion, PredictLog

_models: dict[int, object] = {}  # version id -> fitted model
_project_of: dict[int, int] = {}  # version id -> project id
_about: dict[int, tuple[int, str]] = {}  # version id -> (number, algorithm): fixed once trained
_lock = threading.Lock()
UNKNOWN = object()  # "the caller did not look the active version up": predict queries it


class NoActiveModel(Exception):
    pass


class ModelUnavailable(Exception):
    """The active version's artifact is missing or fails its hash check."""


@dataclass
class ServedPrediction:
    version_id: int
    version_number: int
    algorithm: str
    probabilities: dict[str, float]  # category name -> probability, every category of the model
    top_category: str
    latency_ms: float
    # Multi-label models only (None otherwise): the predicted set and each category's threshold.
    categories: list[str] | None = None
    thresholds: dict[str, float] | None = None


VERSION_FIELDS = ("id", "number", "project_id", "algorithm", "artifact_path", "artifact_sha256")


def active_version(project_id: int) -> ModelVersion | None:
    return (
        ModelVersion.objects.filter(project_id=project_id, active=True)
        .only(*VERSION_FIELDS)
        .first()
    )


def active_version_id():
    """The active version's id of the outer query's project (OuterRef "project"), as a subquery:
    the predict view reads it with the membership, in one query (the partial unique index on
    active versions makes it an index lookup). Read on every request, so a promotion shows on the
    next one in every process; only the model and its number/algorithm are kept per process."""
    return Subquery(ModelVersion.objects.filter(project_id=OuterRef("project"), active=True).values("pk")[:1])


def model_for(version: ModelVersion):
    """The fitted model of `version`, from this process's cache or loaded (and verified) once."""
    model = _models.get(version.pk)
    if model is not None:
        return model
    with _lock:
        if version.pk not in _models:
            try:
                loaded = artifacts.load_verified(version.artifact_path, version.artifact_sha256)
            except artifacts.ArtifactError as error:
                raise ModelUnavailable(str(error)) from error
            for old, project_id in list(_project_of.items()):
                if project_id == version.project_id:  # one model per project in memory
                    _models.pop(old, None)
                    _project_of.pop(old, None)
                    _about.pop(old, None)
            _about[version.pk] = (version.number, version.algorithm)
            _models[version.pk], _project_of[version.pk] = loaded, version.project_id
        return _models[version.pk]


def _served_model(project, version_id):
    """(version id, number, algorithm, model) for the active `version_id` (UNKNOWN: look it up).

    A warm process answers from memory; a version it has not loaded yet costs one query and the
    artifact load."""
    if version_id is not UNKNOWN and version_id is not None:
        model, about = _models.get(version_id), _about.get(version_id)
        if model is not None and about is not None:
            return version_id, *about, model
        version = ModelVersion.objects.filter(pk=version_id).only(*VERSION_FIELDS).first()
    else:
        version = active_version(project.pk) if version_id is UNKNOWN else None
    if version is None:
        raise NoActiveModel(
            f"Project {project.slug} has no trained model yet: an admin can train one on the model page."
        )
    return version.pk, version.number, version.algorithm, model_for(version)


def forget_all() -> None:
    """Empty this process's cache (tests; a worker picks models up again on the next request)."""
    with _lock:
        _models.clear()
        _project_of.clear()
        _about.clear()


def predict(
    project, title: str, text: str, user=None, endpoint: str = "predict", active_version_id=UNKNOWN
) -> ServedPrediction:
    """Score one text with the project's active model; logs latency and failures.

    `active_version_id`: the project's active version id (None: no active version) when the
    caller read it already (see `active_version_id()`); by default it is queried here."""
    started = time.perf_counter()
    version_id = None
    try:
        version_id, number, algorithm, model = _served_model(project, active_version_id)
        proba = model.predict_proba([training.item_text(title, text)])[0]
    except Exception:
        _log(project, version_id, endpoint, started, ok=False, user=user)
        raise
    probabilities = {name: round(float(p), 4) for name, p in zip(model.classes_, proba, strict=True)}
    latency = _log(project, version_id, endpoint, started, ok=True, user=user)
    served = ServedPrediction(
        version_id=version_id,
        version_number=number,
        algorithm=algorithm,
        probabilities=probabilities,
        top_category=model.classes_[int(proba.argmax())],
        latency_ms=latency,
    )
    if getattr(model, "multilabel", False):  # the set at or above each category's threshold
        served.categories = model.decide(proba[None, :])[0]
        served.thresholds = multilabel.thresholds_by_category(model)
    return served


def _log(project, version_id, endpoint: str, started: float, ok: bool, user=None) -> float:
    latency = round((time.perf_counter() - started) * 1000, 3)
    user_id = user.pk if user is not None and user.is_authenticated else None
    _insert_log_row(project.pk, version_id, endpoint, latency, ok, user_id)
    if ok:
        metrics.predict_observed(latency / 1000, endpoint)
    return latency


def _insert_log_row(project_id, version_id, endpoint: str, latency: float, ok: bool, user_id) -> None:
    """One PredictLog row in one statement, one round trip: no ORM instance, no query to compile.

    Outside a transaction the INSERT commits on its own; on PostgreSQL its RETURNING clause turns
    synchronous_commit off for that implicit transaction (set_config(..., true) lasts until its
    end and the commit comes after RETURNING), so the commit does not wait for the disk, as
    `without_waiting_for_disk` does for a transaction block. Inside a caller's transaction the row
    commits with it, at the caller's durability."""
    own_transaction = connection.vendor == "postgresql" and connection.get_autocommit()
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        execute_prepared(
            cursor,
            "labelloop_predict_log_relaxed" if own_transaction else "labelloop_predict_log",
            _log_insert_sql() + (_WITHOUT_WAITING_FOR_DISK if own_transaction else ""),
            [project_id, version_id, endpoint, latency, ok, created_at, user_id],
        )


@functools.cache
def _log_insert_sql() -> str:
    """Built once per process: a constant string from then on."""
    quote = connection.ops.quote_name
    names = ("project", "model_version", "endpoint", "latency_ms", "ok", "created_at", "user")
    fields = [PredictLog._meta.get_field(name) for name in names]
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    return f"INSERT INTO {quote(PredictLog._meta.db_table)} ({columns}) VALUES ({placeholders})"


_WITHOUT_WAITING_FOR_DISK = " RETURNING set_config('synchronous_commit', 'off', true)"


def execute_prepared(cursor, name: str, sql: str, params) -> None:
    """Run the constant `sql` (with %s placeholders); on PostgreSQL as the prepared statement
    `name` of this connection, prepared on its first use.

    For the predict request's small statements planning costs more than running them (0.3 ms
    against 0.1 ms for the token lookup); a prepared statement is planned once per connection.
    PREPARE is not undone by a rollback and lasts as long as the connection, so which statements
    a connection holds is kept with that connection's own object. SQLite's driver caches
    compiled statements by their text already."""
    if cursor.db.vendor != "postgresql" or not settings.LABELLOOP["PREPARED_STATEMENTS"]:
        cursor.execute(sql, params)
        return
    if name not in _prepared_on(cursor.db):
        pieces = sql.split("%s")
        numbered = pieces[0] + "".join(f"${n}{piece}" for n, piece in enumerate(pieces[1:], start=1))
        cursor.execute(f"PREPARE {name} AS {numbered}")
        _prepared_on(cursor.db).add(name)
    cursor.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(params))})", params)


def _prepared_on(db) -> set[str]:
    """The statements prepared on `db`'s current connection (a reconnection starts empty)."""
    held = getattr(db, "labelloop_prepared", None)
    if held is None or held[0] is not db.connection:
        held = db.labelloop_prepared = (db.connection, set())
    return held[1]


@contextmanager
def without_waiting_for_disk():
    """PostgreSQL: this transaction's commit does not wait for its WAL to reach the disk.

    A monitoring row is worth less than the request's latency, and a commit that waits for its
    flush costs a disk sync per request (milliseconds on a busy disk). A server crash may lose the last
    fraction of a second of log rows; it can never corrupt data or lose other transactions'
    (SET LOCAL ends with this transaction), and a later normal commit flushes it along with its
    own. Must run inside `transaction.atomic()`."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
    yield
