"""Training runs: request, train, evaluate, promote safely, predict in batches.

The steps a Celery task walks through for one ModelVersion:
  snapshot the gold training set → (embeddings) → select and fit by cross-validation → write the
  artifact to a temporary file → evaluate on the frozen gold holdout beside the rules and majority
  baselines → promote in one transaction only if not worse than the active model by more than the
  project's margin → store predictions for every unlabeled item (and the active-learning order)
  → flag suspected label errors.
Any failure marks the run failed with its error, deletes the temporary artifact and leaves the
serving model exactly as it was. Pure ML lives in training.py / evaluation.py; this module is the
ORM side.
"""
import hashlib
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from labeling.models import Category, GoldLabel, Item, Project, Split
from labeling.review import assign_splits

from . import artifacts
from .models import ModelVersion, Rule

log = logging.getLogger(__name__)
RUNNING = [
    ModelVersion.Status.QUEUED,
    ModelVersion.Status.VECTORISING,
    ModelVersion.Status.TRAINING,
    ModelVersion.Status.EVALUATING,
    ModelVersion.Status.PREDICTING,
]


class RunSkipped(Exception):
    """Nothing to do: not enough data, or the same data was already trained on."""


# --- requesting -------------------------------------------------------------------------------


def request_training(project: Project, trigger: str) -> ModelVersion:
    """Create a queued run and enqueue its task after commit; if one is in flight, return it."""
    from .tasks import train_model_version

    in_flight = ModelVersion.objects.filter(project=project, status__in=RUNNING).first()
    if in_flight is not None:
        return in_flight
    try:
        with transaction.atomic():
            number = (ModelVersion.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
            version = ModelVersion.objects.create(project=project, number=number, trigger=trigger)
            transaction.on_commit(lambda: _enqueue(train_model_version, version.pk))
    except IntegrityError:
        # Another request queued a run between our check and our insert: that one is ours too.
        return ModelVersion.objects.get(project=project, status__in=RUNNING)
    return version


def _enqueue(task, *args) -> None:
    """Publish a task; a broker outage is logged, never raised into the web request."""
    try:
        task.delay(*args)
    except Exception:  # kombu raises several unrelated types for a dead broker
        log.exception("Could not queue %s%s; the beat schedule will pick it up again", task.name, args)


def gold_since_last_run(project: Project) -> int:
    last = ModelVersion.objects.filter(project=project).order_by("-created_at").values_list("created_at", flat=True).first()
    gold = GoldLabel.objects.filter(project=project)
    return gold.filter(decided_at__gt=last).count() if last else gold.count()


def retrain_if_due(project: Project) -> ModelVersion | None:
    """After every `retrain_every` new gold labels, queue a run (checked by beat, not per submit)."""
    if project.retrain_every and gold_since_last_run(project) >= project.retrain_every:
        return request_training(project, ModelVersion.Trigger.GOLD_COUNT)
    return None


# --- the run ----------------------------------------------------------------------------------


@dataclass
class TrainingSet:
    train_ids: list[int]
    train_texts: list[str]
    train_labels: list[str]
    holdout_texts: list[str]
    holdout_labels: list[str]
    snapshot_hash: str


def start(version_id: int) -> ModelVersion | None:
    """Take the run for this worker. Returns None if another worker has it or it is finished
    (a duplicated message). A run whose worker died (past the hard time limit) is taken again."""
    stale = timezone.now() - timezone.timedelta(seconds=settings.LABELLOOP["TRAIN_TIME_LIMIT"])
    taken = ModelVersion.objects.filter(pk=version_id).filter(
        Q(status=ModelVersion.Status.QUEUED) | Q(status__in=RUNNING[1:], started_at__lt=stale)
    ).update(status=ModelVersion.Status.VECTORISING, progress=5, started_at=timezone.now(), attempts=F("attempts") + 1)
    return ModelVersion.objects.select_related("project").get(pk=version_id) if taken else None


def step(version: ModelVersion, status: str, progress: int) -> None:
    version.status, version.progress = status, progress
    ModelVersion.objects.filter(pk=version.pk).update(status=status, progress=progress)


def fail(version: ModelVersion, error: str) -> None:
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.FAILED, error=error[:5000], finished_at=timezone.now(), active=False
    )


def finish(version: ModelVersion, **fields) -> None:
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.DONE, progress=100, finished_at=timezone.now(), **fields
    )


def training_set(project: Project) -> TrainingSet:
    assign_splits(project)
    names = dict(Category.objects.filter(project=project).values_list("id", "name"))
    rows = (
        GoldLabel.objects.filter(project=project)
        .exclude(item__split=Split.NONE)
        .order_by("item_id")
        .values_list("item_id", "item__title", "item__text", "item__content_hash", "categories", "item__split")
    )
    digest = hashlib.sha256()
    data = TrainingSet([], [], [], [], [], "")
    for item_id, title, text, content, categories, split in rows.iterator(chunk_size=5000):
        label = names[categories[0]]
        full_text = item_text(title, text)
        if split == Split.TRAIN:
            digest.update(f"{item_id}:{content}:{label}\n".encode())
            data.train_ids.append(item_id)
            data.train_texts.append(full_text)
            data.train_labels.append(label)
        else:
            data.holdout_texts.append(full_text)
            data.holdout_labels.append(label)
    data.snapshot_hash = digest.hexdigest()
    return data


def item_text(title: str, text: str) -> str:
    return f"{title} {text}".strip()


def claim_snapshot(version: ModelVersion, snapshot_hash: str) -> None:
    """Key the run by its training data; the same data trained before means nothing to do."""
    twin = (
        ModelVersion.objects.filter(project_id=version.project_id, snapshot_hash=snapshot_hash)
        .exclude(pk=version.pk)
        .first()
    )
    if twin is not None and twin.status != ModelVersion.Status.FAILED:
        raise RunSkipped(f"Same training data as version {twin.number}; nothing new to learn.")
    if twin is not None:
        # A failed run of the same data gives up its key to this retry.
        ModelVersion.objects.filter(pk=twin.pk).update(snapshot_hash="")
    ModelVersion.objects.filter(pk=version.pk).update(snapshot_hash=snapshot_hash)


def rules_for(project: Project) -> dict[str, list[str]]:
    rules: dict[str, list[str]] = {}
    for category, pattern, is_regex in Rule.objects.filter(project=project).values_list(
        "category__name", "pattern", "is_regex"
    ):
        rules.setdefault(category, []).append(pattern if is_regex else _keyword_pattern(pattern))
    return rules


def _keyword_pattern(keyword: str) -> str:
    import re

    return r"\b" + re.escape(keyword.lower()) + r"\b"


def promote_if_better(version: ModelVersion, temporary_artifact, artifact_sha: str) -> bool:
    """Publish the artifact and flip the active version in one transaction, if it earns it."""
    project = version.project
    with transaction.atomic(durable=True):
        Project.objects.select_for_update().filter(pk=project.pk).first()  # serialise promotions
        active = ModelVersion.objects.filter(project=project, active=True).first()
        version.refresh_from_db(fields=["metrics"])
        if not version.beats(active, project.promotion_margin):
            reason = (
                f"Not promoted: holdout weighted F1 {version.weighted_f1:.3f} is more than "
                f"{project.promotion_margin:.3f} below the active version {active.number} ({active.weighted_f1:.3f})."
            )
            ModelVersion.objects.filter(pk=version.pk).update(promoted=False, promotion_reason=reason)
            artifacts.discard(temporary_artifact)
            return False
        final = artifacts.publish(temporary_artifact, f"{project.slug}-v{version.number}-{artifact_sha[:12]}.joblib")
        if active is not None:
            ModelVersion.objects.filter(pk=active.pk).update(active=False)
        previous = f"version {active.number} ({active.weighted_f1:.3f})" if active else "no active model"
        ModelVersion.objects.filter(pk=version.pk).update(
            active=True, promoted=True, artifact_path=str(final), artifact_sha256=artifact_sha,
            promotion_reason=f"Promoted: holdout weighted F1 {version.weighted_f1:.3f} against {previous}.",
        )
    return True


def timed(timings: dict, name: str):
    """Context manager recording the seconds a step took into `timings[name]`."""

    class _Timer:
        def __enter__(self):
            self.started = time.perf_counter()

        def __exit__(self, *exc):
            timings[name] = round(time.perf_counter() - self.started, 3)

    return _Timer()


def open_item_ids(project: Project):
    """Items still without a gold label: what batch predictions are for."""
    return Item.objects.filter(project=project).exclude(status=Item.Status.GOLD).order_by("id")
